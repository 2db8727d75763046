"""The pipeline on a tiny random model folder: cache and guidance modes agree, seeds, cancel, errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnigen.sampler import GenerationCancelled, get_schedule


def picture(w, h, colour):
    return Image.new("RGB", (w, h), colour)


PROMPTS = {
    0: ("a red circle at the top left", None),
    1: ("<img><|image_1|></img> make the red circle green", [picture(64, 48, "red")]),
    3: ("<img><|image_1|></img> and <img><|image_2|></img> then <img><|image_3|></img>",
        [picture(32, 32, "red"), picture(48, 32, "blue"), picture(16, 64, "white")]),
}


def run(pipe, n_images, **kw):
    prompt, images = PROMPTS[n_images]
    args = dict(height=32, width=48, num_inference_steps=3, seed=7, output_type="latent")
    args.update(kw)
    return torch.stack(pipe(prompt, images, **args).images)


@pytest.mark.parametrize("n_images", [0, 1, 3])
@pytest.mark.parametrize("cfg_mode", ["batched", "separate"])
def test_kv_cache_on_and_off_agree(tiny_pipe, n_images, cfg_mode):
    cached = run(tiny_pipe, n_images, cfg_mode=cfg_mode, use_kv_cache=True)
    full = run(tiny_pipe, n_images, cfg_mode=cfg_mode, use_kv_cache=False)
    assert (cached - full).abs().max() < 1e-4


@pytest.mark.parametrize("n_images", [0, 1, 3])
def test_batched_and_separate_guidance_agree(tiny_pipe, n_images):
    batched = run(tiny_pipe, n_images, cfg_mode="batched")
    separate = run(tiny_pipe, n_images, cfg_mode="separate")
    assert (batched - separate).abs().max() < 1e-4


def test_guidance_changes_the_result(tiny_pipe):
    """Guards the tests above: guidance, images and steps all have an effect on this random model."""
    assert (run(tiny_pipe, 1) - run(tiny_pipe, 1, guidance_scale=1.0, img_guidance_scale=1.0)).abs().max() > 1e-3
    assert (run(tiny_pipe, 1) - run(tiny_pipe, 1, img_guidance_scale=3.0)).abs().max() > 1e-3


@pytest.mark.slow
def test_batch_of_prompts_equals_prompts_alone(tiny_pipe):
    """Left padding and per-row rotary embeddings: a prompt's image does not depend on its neighbours."""
    prompts = [PROMPTS[1][0], PROMPTS[3][0]]
    images = [PROMPTS[1][1], PROMPTS[3][1]]
    together = tiny_pipe(prompts, images, height=32, width=48, num_inference_steps=3, seed=7, output_type="latent")
    first = run(tiny_pipe, 1, seed=7)
    second = run(tiny_pipe, 3, seed=8)
    assert (together.images[0] - first[0]).abs().max() < 1e-4
    assert (together.images[1] - second[0]).abs().max() < 1e-4


def test_same_seed_same_image_different_seed_different_image(tiny_pipe):
    a = tiny_pipe("a red circle", height=32, width=32, num_inference_steps=2, seed=3).images[0]
    b = tiny_pipe("a red circle", height=32, width=32, num_inference_steps=2, seed=3).images[0]
    c = tiny_pipe("a red circle", height=32, width=32, num_inference_steps=2, seed=4).images[0]
    assert isinstance(a, Image.Image) and a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_settings_reproduce_the_image(tiny_pipe):
    out = tiny_pipe("a blue square", height=32, width=48, num_inference_steps=2, num_images_per_prompt=2, seed=11)
    assert [s["seed"] for s in out.settings] == [11, 12]
    s = out.settings[1]
    again = tiny_pipe(s["prompt"], height=s["height"], width=s["width"], num_inference_steps=s["num_inference_steps"],
                      guidance_scale=s["guidance_scale"], seed=s["seed"]).images[0]
    # Alone rather than in a batch of two: BLAS may round a last bit differently, never more.
    diff = np.abs(np.asarray(again, dtype=int) - np.asarray(out.images[1], dtype=int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_random_seed_is_recorded(tiny_pipe):
    out = tiny_pipe("a blue square", height=32, width=32, num_inference_steps=1)
    assert isinstance(out.settings[0]["seed"], int)


def test_output_size_from_input_image(tiny_pipe):
    images = [picture(64, 48, "red"), picture(32, 16, "blue")]
    prompt = "<img><|image_1|></img> <img><|image_2|></img>"
    first = tiny_pipe(prompt, images, num_inference_steps=1, seed=0, use_input_image_size_as_output=True)
    second = tiny_pipe(prompt, images, num_inference_steps=1, seed=0, use_input_image_size_as_output=2)
    assert first.images[0].size == (64, 48) and second.images[0].size == (32, 16)


def test_callback_cancels_within_one_step(tiny_pipe):
    seen = []

    def stop_after_two(step, total, latents, estimate):
        seen.append(step)
        return step < 2

    with pytest.raises(GenerationCancelled):
        tiny_pipe("a red circle", height=32, width=32, num_inference_steps=10, seed=0, callback=stop_after_two)
    assert seen == [1, 2]


def test_output_types(tiny_pipe):
    for kind, check in [("np", lambda x: x.shape == (32, 32, 3)), ("pt", lambda x: x.shape == (3, 32, 32)),
                        ("latent", lambda x: x.shape == (4, 4, 4))]:
        image = tiny_pipe("a red circle", height=32, width=32, num_inference_steps=1, seed=0, output_type=kind).images[0]
        assert check(image), kind


@pytest.mark.parametrize("prompt,images,kw,message", [
    ("<img><|image_2|></img> edit", [picture(32, 32, "red")], {}, "image"),
    ("no tag here", [picture(32, 32, "red")], {}, "image"),
    ("<img><|image_1|></img> <img><|image_3|></img>", [picture(32, 32, "red")] * 2, {}, "image"),
    ("a circle", None, {"height": 30}, "16"),
    ("a circle", None, {"num_inference_steps": -1}, "num_inference_steps"),
    ("<img><|image_1|></img>", [Image.new("RGB", (0, 0))], {}, "size|empty|zero"),
    ("<img><|image_1|></img>", ["/no/such/picture.png"], {}, "not|read|found"),
])
def test_bad_input_is_refused_before_any_model_work(tiny_pipe, prompt, images, kw, message, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("the model ran on bad input")
    monkeypatch.setattr(tiny_pipe.transformer, "forward", must_not_run)
    with pytest.raises(ValueError, match=message):
        tiny_pipe(prompt, images, **{"num_inference_steps": 2, "height": 32, "width": 32, **kw})


def test_schedule():
    assert get_schedule(4) == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    shifted = get_schedule(4, shift=3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and shifted[1] < 0.25
