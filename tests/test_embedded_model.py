"""The shipped embedded model: its folder is complete and it loads through the ordinary pipeline."""

import json

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


def test_loads_through_the_ordinary_pipeline(pipe):
    assert pipe.native_size == 64 and pipe.model_id.endswith("omnigen-mini")
    image = pipe("a red circle at the center on a white background", num_inference_steps=10, seed=0).images[0]
    assert image.size == (64, 64)


# The shipped model on the first SAMPLES of each row of the evaluation set (30 steps, guidance 2.5 / 1.6, as
# in the README's table). Measured: 9 of 60 passed; the mean judge scores below, each less 0.15 for other CPUs'
# rounding (one sample moving by 0.6 moves a mean by 0.15). The previous, 575-step checkpoint scored 0.15-0.45
# everywhere and passed nothing: it would fail this, as would a broken sampler or a model that ignores its input.
SAMPLES = 4
MIN_PASSED = 5
MIN_MEAN_SCORE = {
    'text_to_image': 0.26,
    'edit': 0.41,
    'subject': 0.21,
    'tryon': 0.77,
    'pose': 0.39,
    'pose_extract': 0.81,
    'depth': 0.33,
    'depth_extract': 0.57,
    'edges': 0.25,
    'edges_extract': 0.62,
    'segment': 0.53,
    'restore': 0.58,
    'fewshot': 0.26,
    'text_to_image (held-out pairs)': 0.32,
    'edit (into held-out pairs)': 0.16,
}


def test_a_small_eval_sample_passes_the_judge(pipe):
    from omnigen.mini.eval import evaluate, format_table

    rows = evaluate(pipe, per_family=SAMPLES, steps=30, guidance_scale=2.5, img_guidance_scale=1.6)
    table = format_table(rows) + "\n" + ", ".join(f"{r['task']} {r['mean_score']:.2f}" for r in rows)
    low = [f"{r['task']}: mean score {r['mean_score']:.2f} < {MIN_MEAN_SCORE[r['task']]}" for r in rows
           if r["mean_score"] < MIN_MEAN_SCORE[r["task"]]]
    assert not low, "rows below their floor:\n" + "\n".join(low) + "\n" + table
    assert sum(r["passed"] for r in rows) >= MIN_PASSED, table
