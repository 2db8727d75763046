"""The shipped embedded model: its folder is complete and it loads through the ordinary pipeline."""

import json

import numpy as np
import pytest

from omnigen.pipeline import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(),
                                reason="assets/omnigen-mini is not there (run python -m omnigen.mini.recipe)")


@pytest.fixture(scope="module")
def pipe():
    from omnigen import OmniGenPipeline
    pipe = OmniGenPipeline.from_pretrained(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_folder_layout_and_size():
    files = {p.relative_to(DEFAULT_MODEL).as_posix() for p in DEFAULT_MODEL.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vae/config.json"} <= files
    assert sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*") if p.is_file()) < 40 * 2**20
    config = json.loads((DEFAULT_MODEL / "config.json").read_text())
    assert config["native_image_size"] == 64


@pytest.mark.slow
def test_loads_through_the_ordinary_pipeline(pipe):
    assert pipe.native_size == 64 and pipe.model_id.endswith("omnigen-mini")
    image = pipe("a red circle at the center on a white background", num_inference_steps=10, seed=0).images[0]
    assert image.size == (64, 64)


@pytest.mark.slow
def test_a_prompt_outside_its_world_draws_a_guess_and_the_guide_says_what_it_knows(pipe):
    """"a cat" (and words it never read) are no error: the model draws its best guess at its own defaults, and the
    folder's prompt guide, which the studio shows beside the prompt, names the world it knows in both languages."""
    for prompt in ("a cat", "an astronaut riding a horse on the moon, 4k", "一只猫"):
        image = pipe(prompt, seed=0).images[0]
        assert image.size == (64, 64)
    assert "circles, squares and triangles" in pipe.prompt_guide["en"]
    assert "圆形、正方形和三角形" in pipe.prompt_guide["zh-CN"]


# The shipped model on the first SAMPLES of each row of the evaluation set (30 steps, guidance 2.5 / 1.6, as
# in docs/omnigen-mini.md's table), the rows of what people type and upload included. Measured on the shipped
# model (80,925 steps): 58 of 76 passed, 48 of the 60 on the first tasks' rows (the 69,550-step model before the
# captions: 55 of 60, and 50 at 76,900 steps; at 4 per row one sample is 25 points, and the 50-per-row judgement
# in the card holds every target). The floors are the mean judge scores less 0.15 for other CPUs' rounding (one
# sample moving by 0.6 moves a mean by 0.15), capped at 0.85. A model that draws a plain canvas for "a red
# circle" (the 69,550-step one: caption 0.42, count 0.33 here) fails those floors; a broken sampler or a model that
# ignores its input fails many.
SAMPLES = 4
MIN_PASSED = 52
MIN_MEAN_SCORE = {
    'text_to_image': 0.85,
    'edit': 0.85,
    'subject': 0.8,
    'tryon': 0.85,
    'pose': 0.82,
    'pose_extract': 0.85,
    'depth': 0.85,
    'depth_extract': 0.8,
    'edges': 0.85,
    'edges_extract': 0.85,
    'segment': 0.8,
    'restore': 0.8,
    'fewshot': 0.76,
    'caption': 0.76,
    'count': 0.85,
    'upload_edit': 0.58,
    'text_to_image (held-out pairs)': 0.66,
    'edit (into held-out pairs)': 0.65,
    'caption (held-out phrasings)': 0.68,
}


@pytest.mark.slow
@pytest.mark.quality
def test_a_small_eval_sample_passes_the_judge(pipe):
    from omnigen.mini.eval import evaluate, format_table

    from omnigen.mini.tasks import FAMILIES

    rows = evaluate(pipe, FAMILIES, per_family=SAMPLES, steps=30, guidance_scale=2.5, img_guidance_scale=1.6)
    table = format_table(rows) + "\n" + ", ".join(f"{r['task']} {r['mean_score']:.2f}" for r in rows)
    low = [f"{r['task']}: mean score {r['mean_score']:.2f} < {MIN_MEAN_SCORE[r['task']]}" for r in rows
           if r["mean_score"] < MIN_MEAN_SCORE[r["task"]]]
    assert not low, "rows below their floor:\n" + "\n".join(low) + "\n" + table
    assert sum(r["passed"] for r in rows) >= MIN_PASSED, table


# The judge on the VAE's round trip of the first SAMPLES true outputs of each row: measured 1.0 on every row
# (text_to_image was 0.75 on the evaluation set before depth followed the region; 0.95 over 20). The floor is
# one sample in four below that, and text_to_image keeps its lower one. The previous decoder fails
# four rows here: it drew the segmentation marker cyan as blue (segment 0.25), blurred skeleton maps
# (pose_extract 0.0) and garbled colour-shape pairs it had never drawn (held-out rows 0.5).
MIN_VAE_CEILING = {"text_to_image": 0.5}


@pytest.mark.slow
@pytest.mark.quality
def test_its_vae_renders_what_the_judge_checks(pipe):
    from omnigen.mini.eval import vae_ceiling

    ceilings = vae_ceiling(pipe.vae, per_family=SAMPLES)
    low = {task: value for task, value in ceilings.items() if value < MIN_VAE_CEILING.get(task, 0.75)}
    assert not low, f"rows whose true outputs the VAE no longer renders well: {low}"


def readme_python_example() -> str:
    readme = (DEFAULT_MODEL.parents[1] / "README.md").read_text()
    section = readme[readme.index("\n## Python\n"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]


@pytest.mark.slow
@pytest.mark.quality
def test_the_readme_python_example_draws_what_it_says(tmp_path, monkeypatch):
    """The README's first Python block runs as written and its pictures pass the judge: a user who copies it
    sees a red circle from three words, a large red circle at the top left and a small blue square at the bottom
    right, then the circle turned green with the square untouched."""
    from PIL import Image

    from omnigen.mini.judge import judge_scene, judge_stated
    from omnigen.mini.world import Scene, SceneObject

    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md (Python)", "exec"), {})
    # "a red circle": one red circle and nothing else, any size, anywhere, on any of the world's backgrounds
    red_circle = {"background": None, "objects": [{"shape": "circle", "color": "red", "size": None, "regions": None}]}
    verdict = judge_stated(red_circle, np.asarray(Image.open("circle.png").convert("RGB"), np.float32))
    assert verdict.passed, verdict.details
    square = SceneObject("square", "blue", "small", "bottom right")
    for name, circle_colour in (("t2i.png", "red"), ("edit.png", "green")):
        scene = Scene("white", (SceneObject("circle", circle_colour, "large", "top left"), square))
        verdict = judge_scene(scene, np.asarray(Image.open(name).convert("RGB")))
        assert verdict.passed, (name, verdict.details)


@pytest.mark.slow
@pytest.mark.quality
def test_the_studio_examples_in_a_few_words_draw_what_they_say(pipe):
    """The first text-to-image examples a new user meets in the studio ("a red circle", "two blue squares"),
    drawn at the model's own defaults as the studio draws them, pass the judge (which checks only what the words
    say) for seeds 0-3."""
    from omnigen.mini.examples import example_samples
    from omnigen.mini.judge import judge

    short = [sample for _, sample, _ in example_samples()["text_to_image"] if "stated" in sample.spec]
    assert [s.instruction for s in short] == ["a red circle", "two blue squares"]
    failed = [(s.instruction, seed) for s in short for seed in range(4)
              if not judge(s, pipe(s.instruction, seed=seed).images[0]).passed]
    assert not failed, failed
