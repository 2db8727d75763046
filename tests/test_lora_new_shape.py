"""The LoRA acceptance test: on the embedded model, on the CPU, an adapter trained in about two minutes on
16 pictures teaches a shape the mini world never had (a rectangle), and the adapted model draws it for
prompts in colours and places those pictures never showed it; the base model never draws one."""

import time
from pathlib import Path

import pytest

from omnigen import OmniGenPipeline
from omnigen.mini.lora_example import (EXAMPLE_GUIDANCE, draws_rectangle, example_train_config, heldout_prompts,
                                       looks_like_rectangle, make_new_shape_dataset)
from omnigen.training import train_lora

MODEL = Path(__file__).resolve().parent.parent / "assets" / "omnigen-mini"
SEEDS_PER_PROMPT = 2  # 5 held-out prompts x 2 seeds = 10 images per model

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(),
                                 reason=f"the embedded model is missing ({MODEL}); build it with "
                                        "`python -m omnigen.mini.recipe --out assets/omnigen-mini`")]
pytestmark += [pytest.mark.slow, pytest.mark.quality]


def count_rectangles(pipe, cases) -> tuple[int, int]:
    """(images whose main object is a wide filled box, images with it in the right colour and place)."""
    out = pipe([prompt for prompt, _ in cases], num_inference_steps=30, guidance_scale=EXAMPLE_GUIDANCE, seed=0,
               num_images_per_prompt=SEEDS_PER_PROMPT, progress=False)
    specs = [spec for _, spec in cases for _ in range(SEEDS_PER_PROMPT)]
    return (sum(looks_like_rectangle(image, spec) for image, spec in zip(out.images, specs)),
            sum(draws_rectangle(image, spec) for image, spec in zip(out.images, specs)))


def test_a_lora_teaches_the_embedded_model_a_new_shape(tmp_path):
    data = make_new_shape_dataset(tmp_path / "rectangles", n=16)
    pipe = OmniGenPipeline.from_pretrained(MODEL, device="cpu")
    cases = heldout_prompts()
    base_shape, base_strict = count_rectangles(pipe, cases)

    started = time.monotonic()
    result = train_lora(pipe, data, example_train_config(tmp_path / "run"))
    training_s = time.monotonic() - started
    pipe.load_lora(result.adapter)
    adapted_shape, adapted_strict = count_rectangles(pipe, cases)

    total = len(cases) * SEEDS_PER_PROMPT
    report = (f"held-out prompts drawn as a rectangle: base {base_shape}/{total}, adapted {adapted_shape}/{total} "
              f"(in the right colour and place: base {base_strict}/{total}, adapted {adapted_strict}/{total}); "
              f"{result.step} steps in {training_s:.0f} s")
    print(report)
    assert base_shape <= 1 and base_strict == 0, report  # the base model does not draw rectangles
    assert adapted_shape >= 5, report
    # Measured on the shipped base: 10/10 as a rectangle, 10/10 also in the asked colour and place (8/10 on the
    # 25,675-step base, 5/10 on the one that ignored "top"/"bottom"); the floor is half of 8/10.
    assert adapted_strict >= 4, report
    assert len(result.samples) == len(cases), report  # its time is reported, not asserted: the machine is shared
