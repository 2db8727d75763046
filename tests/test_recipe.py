"""The embedded model's recipe end to end, at a toy size: every stage runs, the folder it writes loads through the
ordinary pipeline, and a second run resumes each stage instead of starting over."""

import json

import pytest

from omnigen.mini.recipe import FAMILY_WEIGHTS, Recipe, build, generation_config, mixed_precision, pool_path
from omnigen.training import latest_checkpoint


def tiny_recipe(**changes) -> Recipe:
    settings = dict(vae_steps=12, vae_widths=(8, 8, 8, 8), vae_latent_channels=4, vae_batch_size=4,
                    vae_pool_size=16, decoder_steps=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, pool_per_family=2, steps=4, batch_size=4,
                    warmup_steps=1, checkpoint_every=2)
    return Recipe(**{**settings, **changes})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    out, work = root / "model", root / "work"
    build(tiny_recipe(), out, work)
    return out, work


@pytest.mark.slow
def test_writes_a_folder_the_pipeline_loads(built):
    from omnigen import OmniGenPipeline

    out, work = built
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors", "recipe.json"} <= files
    record = json.loads((out / "recipe.json").read_text())
    assert record["trained_steps"] == 4 and not record["stopped_early"]
    assert record["recipe"]["hidden_size"] == 32
    assert record["mixed_precision"] == mixed_precision("auto")
    assert json.loads((work / "vae-training" / "decoder_training.json").read_text())["steps"] == 3
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []  # no scratch left
    # The folder states the sampling it is judged with and the negative prompt its unconditional branch learnt.
    stated = json.loads((out / "generation_config.json").read_text())
    assert stated == generation_config(tiny_recipe()) and stated["negative_prompt"] == Recipe.negative_prompt
    trained = json.loads((work / "transformer" / "train_config.json").read_text())
    assert trained["unconditional_prompt"] == stated["negative_prompt"]

    pipe = OmniGenPipeline.from_pretrained(out, device="cpu")
    assert pipe.native_size == 64
    assert set(pipe.prompt_guide) == {"en", "zh-CN"} and "what you leave out" in pipe.prompt_guide["en"].lower()
    assert pipe.default_settings.max_input_image_size == 64
    image = pipe("a red circle at the center on a white background", num_inference_steps=2, seed=0,
                 progress=False).images[0]
    assert image.size == (64, 64)


@pytest.mark.slow
def test_a_rerun_resumes_every_stage(built, monkeypatch):
    out, work = built
    tokenizer = (work / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    vae_state = (work / "vae-training" / "vae_training.json").read_text()
    decoder_record = (work / "vae-training" / "decoder_training.json").read_text()
    pool = pool_path(tiny_recipe(), work).stat().st_mtime_ns
    retrained = []
    monkeypatch.setattr("omnigen.mini.tokenizer.train_tokenizer", lambda *a, **k: retrained.append("tokenizer"))
    monkeypatch.setattr("omnigen.mini.vae_training.train_vae", lambda *a, **k: retrained.append("vae"))

    build(tiny_recipe(steps=6), out, work)  # two more transformer steps, nothing else

    assert retrained == []
    assert (work / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == tokenizer
    assert (work / "vae-training" / "vae_training.json").read_text() == vae_state
    assert (work / "vae-training" / "decoder_training.json").read_text() == decoder_record  # its steps were done
    assert pool_path(tiny_recipe(), work).stat().st_mtime_ns == pool
    assert json.loads((out / "recipe.json").read_text())["trained_steps"] == 6
    assert latest_checkpoint(work / "transformer").name == "step-000006"
    config = json.loads((work / "transformer" / "train_config.json").read_text())
    assert config["steps"] == 6 and config["timestep_location"] == Recipe.timestep_location


@pytest.mark.parametrize("cuda, bf16_gpu, amx, avx512_bf16, expected", [
    (False, False, True, False, "bf16"), (False, False, False, True, "bf16"), (False, False, False, False, "no"),
    (True, True, False, False, "bf16"), (True, False, True, True, "no")])
def test_auto_precision_is_bf16_where_the_hardware_has_it(monkeypatch, cuda, bf16_gpu, amx, avx512_bf16, expected):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_gpu)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert mixed_precision("auto") == expected
    assert mixed_precision("fp32") == "no" and mixed_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        mixed_precision("fp16")


def test_the_pool_is_named_by_what_it_is_drawn_from(tmp_path):
    base = tiny_recipe()
    reweighted = tiny_recipe(family_weights={**FAMILY_WEIGHTS, "text_to_image": 6.0})
    assert pool_path(base, tmp_path) == pool_path(tiny_recipe(), tmp_path)
    assert pool_path(base, tmp_path) != pool_path(reweighted, tmp_path)
    assert pool_path(base, tmp_path) != pool_path(tiny_recipe(task_weights={"edit": {"move": 3.0}}), tmp_path)
    assert pool_path(base, tmp_path) != pool_path(tiny_recipe(seed=1), tmp_path)
    assert pool_path(base, tmp_path) != pool_path(tiny_recipe(pool_per_family=3), tmp_path)
    assert pool_path(base, tmp_path) != pool_path(tiny_recipe(fill="random"), tmp_path)


@pytest.mark.slow
def test_init_from_a_shallower_model_deepens_it(built, tmp_path):
    from omnigen import OmniGenPipeline

    out, _ = built
    deeper = build(tiny_recipe(num_hidden_layers=3, steps=2, decoder_steps=0), tmp_path / "model", tmp_path / "work",
                   init_from=out)
    assert json.loads((deeper / "config.json").read_text())["num_hidden_layers"] == 3
    record = json.loads((deeper / "recipe.json").read_text())
    assert record["recipe"]["num_hidden_layers"] == 3 and record["continued_from"]["recipe"]["num_hidden_layers"] == 2
    pipe = OmniGenPipeline.from_pretrained(deeper, device="cpu")
    assert len(pipe.transformer.llm.layers) == 3
    assert pipe("a red circle at the center on a white background", num_inference_steps=2, seed=0,
                progress=False).images[0].size == (64, 64)
    # A rerun in the same work folder resumes the deepened model's checkpoint.
    build(tiny_recipe(num_hidden_layers=3, steps=3, decoder_steps=0), tmp_path / "model", tmp_path / "work",
          init_from=out)
    assert latest_checkpoint(tmp_path / "work" / "transformer").name == "step-000003"

    with pytest.raises(ValueError, match="has 2 decoder layers"):
        build(tiny_recipe(num_hidden_layers=1, decoder_steps=0), tmp_path / "m1", tmp_path / "w1", init_from=out)


@pytest.mark.slow
def test_a_continuation_probes_each_segment_ships_and_resumes(built, tmp_path, monkeypatch):
    """The loop's plumbing on the toy model: a segment, its probe on every row, the full judgement, the swap with its
    record, and a rerun that resumes. (Whether a probe promises and a candidate beats the shipped model are
    `probe_promising`'s and `ship.decide`'s, tested alone: a toy model beats nothing, so here they are told yes.)"""
    import argparse
    import shutil

    from omnigen.mini import continuation, ship

    out, _ = built
    shipped = tmp_path / "shipped"
    shutil.copytree(out, shipped)
    original = json.loads((shipped / "recipe.json").read_text())
    monkeypatch.setattr(ship, "decide", lambda candidate, before: (True, []))
    monkeypatch.setattr(continuation, "probe_promising", lambda probe, before, slack: True)
    args = argparse.Namespace(work=str(tmp_path / "work"), init_from=str(shipped), out=str(shipped),
                              card=str(tmp_path / "card.md"), segment_minutes=None, probe_per_family=1,
                              probe_slack=1.0, ship_per_family=1)
    assert continuation.run(args, tiny_recipe(steps=4, decoder_steps=0)) == 0
    progress = [json.loads(line) for line in (tmp_path / "work" / "progress.jsonl").read_text().splitlines()]
    assert [p["step"] for p in progress] == [4] and "caption (held-out phrasings)" in progress[0]["rows"]
    record = json.loads((shipped / "recipe.json").read_text())
    assert [s["trained_steps"] for s in record["shipments"]] == [4] and record["evaluation"]["settings"]["per_family"] == 1
    assert record["continued_from"]["recipe"] == original["recipe"]
    assert (shipped / "generation_config.json").is_file()
    # A rerun with a longer schedule resumes the checkpoint; the lineage stays the run's first.
    assert continuation.run(args, tiny_recipe(steps=6, decoder_steps=0)) == 0
    progress = [json.loads(line) for line in (tmp_path / "work" / "progress.jsonl").read_text().splitlines()]
    assert [p["step"] for p in progress] == [4, 6]
    record = json.loads((shipped / "recipe.json").read_text())
    assert [s["trained_steps"] for s in record["shipments"]] == [4, 6]
    assert record["continued_from"]["recipe"] == original["recipe"]


def test_the_continuation_merges_family_and_sub_task_weights_over_the_recipe(monkeypatch, capsys):
    from omnigen.mini import continuation
    from omnigen.mini.recipe import TASK_WEIGHTS

    seen = []
    monkeypatch.setattr(continuation, "run", lambda args, recipe: seen.append(recipe) or 0)
    base = ["--work", "unused", "--init-from", str(continuation_model()), "--steps", "10"]
    assert continuation.main(base + ["--family-weights", '{"edit": 9}',
                                     "--task-weights", '{"edit": {"recolour": 6}, "restore": {"deblur": 2}}']) == 0
    recipe = seen[-1]
    assert recipe.family_weights["edit"] == 9
    assert recipe.task_weights["edit"] == {**TASK_WEIGHTS["edit"], "recolour": 6}
    assert recipe.task_weights["restore"] == {"deblur": 2}
    for bad, says in (('{"edit": {"paint": 2}}', "unknown edit sub-tasks ['paint']"),
                      ('{"caption": {"short": 2}}', "'caption' has no sub-tasks to weight")):
        with pytest.raises(SystemExit):
            continuation.main(base + ["--task-weights", bad])
        assert says in capsys.readouterr().err


def continuation_model():
    from omnigen.pipeline import DEFAULT_MODEL

    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("assets/omnigen-mini is not there")
    return DEFAULT_MODEL
