"""The shipped embedded model: it loads through the ordinary pipeline and its pictures pass the judge."""

import json
from pathlib import Path

import pytest
import torch

from omnigen.pipeline import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(),
                                reason="assets/omnigen-mini is not there (run python -m omnigen.mini.recipe)")

# Measured on the shipped model with these settings (see README, "The embedded model"); the thresholds
# sit well below the measurement so that CI checks the model still works, not the last decimal.
EVAL = dict(per_family=4, seed=0, steps=30, guidance_scale=2.5, img_guidance_scale=1.6)


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


def untrained_copy(pipe):
    """The same pipeline with the transformer re-initialised: what the judge gives to a model that knows nothing."""
    import copy
    clone = copy.copy(pipe)
    clone.transformer = copy.deepcopy(pipe.transformer)
    torch.manual_seed(0)
    with torch.no_grad():
        clone.transformer.reset_parameters()
        for p in clone.transformer.final_layer.parameters():
            p.normal_(0, 0.02)
    return clone


def test_eval_sample_beats_an_untrained_model(pipe):
    from omnigen.mini.eval import evaluate
    from omnigen.mini.tasks import FAMILIES

    trained = {row["task"]: row for row in evaluate(pipe, FAMILIES, **EVAL)}
    untrained = {row["task"]: row for row in evaluate(untrained_copy(pipe), FAMILIES, **EVAL)}
    better = [t for t in trained if trained[t]["mean_score"] > untrained[t]["mean_score"]]
    print({t: (round(trained[t]["mean_score"], 2), round(untrained[t]["mean_score"], 2)) for t in trained})
    assert len(better) >= 0.8 * len(trained), f"only {better} score above an untrained model"
