"""One training settings type: `omnigen train --help`, the Train tab's widgets and /train_start's parameters show
the defaults of TrainConfig / LoraSettings; and what an FSDP launch, a resume or a global batch asks for that
cannot work is refused, with what to do, before any step."""

import argparse
import inspect
import json
import re
from dataclasses import MISSING

import gradio as gr
import pytest
import torch

from app import train_api, train_tab
from app.train_settings import PAGE_SETTINGS, SETTINGS, page_defaults, page_values, spec_of
from omnigen.model import OmniGen, OmniGenConfig
from omnigen.training import LoraSettings, TrainConfig, train
from omnigen.training.checkpoints import TRAINER_STATE, check_resumable, run_record
from omnigen.training.cli import add_train_parser, config_from_args
from omnigen.training.config import config_fields, flag_of
from omnigen.training.sharding import FsdpPlan
from omnigen.training.trainer import set_accumulation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def field_default(owner: type, name: str):
    spec = next(s for s in config_fields(owner) if s.name == name)
    return spec.default if spec.default is not MISSING else spec.default_factory()


def help_defaults() -> dict[str, str]:
    """flag -> the default `omnigen train --help` states for it."""
    parser = argparse.ArgumentParser(prog="omnigen")
    add_train_parser(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["train"].format_help()
    flat = re.sub(r"\s+", " ", text)
    found = re.findall(r"(--[a-z-]+) \S+ (?:(?! --[a-z]).)*?\(default: ([^)]+)\)", flat)
    return dict(found)


def test_the_cli_the_train_tab_and_the_api_show_the_same_defaults(tiny_pipe, tmp_path):
    from app.engine import Studio

    studio = Studio(tiny_pipe, tmp_path / "outputs")
    with gr.Blocks() as demo:
        with gr.Tabs():
            train_tab.build_train_tab(studio)
    widgets = {c.elem_id: c.value for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    api = next(fn.fn for fn in demo.fns.values() if fn.api_name == "train_start")
    api_defaults = {name: p.default for name, p in inspect.signature(api).parameters.items() if name != "dataset"}
    stated = help_defaults()
    model_size = studio.defaults().max_input_image_size  # the resolution left to the model: the model's

    assert list(api_defaults) == list(SETTINGS)
    for name, (owner, _, elem_id) in PAGE_SETTINGS.items():
        default = field_default(owner, name)
        page = page_defaults(model_size)[name]
        assert widgets[elem_id] == page == api_defaults[name], name
        if name not in ("resolution", "alpha", "validation_prompts"):  # shown as the page holds them
            assert page == default, name
        flag = flag_of(spec_of(name))
        if spec_of(name).metadata["cli"] and default not in (None, False, [], 0):
            assert stated[flag] == str(default), (flag, stated.get(flag), default)
    assert page_defaults(model_size)["resolution"] == model_size and TrainConfig.resolution is None
    assert (TrainConfig.steps, TrainConfig.learning_rate, TrainConfig.checkpoint_every) == (500, 1e-4, 100)
    assert stated["--steps"] == "500" and stated["--lr"] == "0.0001" and stated["--checkpoint-every"] == "100"


def test_every_flag_comes_from_a_field_and_sets_it(tmp_path):
    parser = argparse.ArgumentParser(prog="omnigen")
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "d.jsonl", "--out", str(tmp_path / "run"), "--steps", "7",
                              "--lr", "0.002", "--gradient-checkpointing", "--global-batch-size", "8",
                              "--rank", "16", "--validation-prompt", "a", "--validation-prompt", "b"])
    config = args.func.__globals__["config_from_args"](args)
    assert (config.steps, config.learning_rate, config.gradient_checkpointing, config.global_batch_size) == (
        7, 0.002, True, 8)
    assert config.lora.rank == 16 and config.validation_prompts == ["a", "b"]
    untouched = {s.name for s in config_fields(TrainConfig)} - {"out_dir", "steps", "learning_rate",
                                                                "gradient_checkpointing", "global_batch_size",
                                                                "validation_prompts"}
    assert all(getattr(config, name) == field_default(TrainConfig, name) for name in untouched)


def test_max_grad_norm_0_switches_clipping_off_and_says_so(tmp_path):
    parser = argparse.ArgumentParser(prog="omnigen")
    add_train_parser(parser.add_subparsers())

    def config_of(*flags: str) -> TrainConfig:
        return config_from_args(parser.parse_args(["train", "--data", "d.jsonl", "--out", str(tmp_path), *flags]))

    off = config_of("--max-grad-norm", "0")
    off.check()
    assert off.max_grad_norm == 0.0 and config_of().max_grad_norm == TrainConfig.max_grad_norm == 1.0
    assert help_defaults()["--max-grad-norm"] == "1.0" and "0: no clipping" in spec_of("max_grad_norm").metadata["help"]
    with pytest.raises(ValueError, match="TrainConfig.max_grad_norm must be at least 0.0, got -1.0"):
        config_of("--max-grad-norm", "-1").check()


def test_an_example_config_becomes_page_values():
    config = TrainConfig(out_dir="x", steps=150, lora=LoraSettings(rank=16, targets="attention+mlp", name="rect"),
                         validation_prompts=["a", "b"], resolution=64)
    values = page_values(config)
    assert list(values) == list(SETTINGS)
    assert (values["steps"], values["rank"], values["alpha"], values["validation_prompts"], values["name"]) == (
        150, 16, 0, "a\nb", "rect")


# ----------------------------------------------------------------------------- refused before any step


OFFICIAL = {"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP",
            "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "Phi3DecoderLayer",
            "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_USE_ORIG_PARAMS": "true",
            "FSDP_SYNC_MODULE_STATES": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}


def test_the_official_guides_fsdp_options_are_honoured_and_others_refused():
    plan = FsdpPlan.from_env(OFFICIAL)
    assert plan.problems() == [] and not plan.reshard_after_forward and plan.state_dict_type == "FULL_STATE_DICT"
    assert FsdpPlan.from_env({**OFFICIAL, "FSDP_SHARDING_STRATEGY": "1"}).reshard_after_forward  # FULL_SHARD
    assert FsdpPlan.from_env({"ACCELERATE_USE_FSDP": "false"}) is None and FsdpPlan.from_env({}) is None
    assert not FsdpPlan.from_env({**OFFICIAL, "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "false"}
                                 ).reshard_after_forward
    bad = {"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD", "FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP",
           "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_STATE_DICT_TYPE": "LOCAL_STATE_DICT",
           "FSDP_USE_ORIG_PARAMS": "false", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
           "FSDP_SYNC_MODULE_STATES": "false"}
    problems = FsdpPlan.from_env({**OFFICIAL, **bad}).problems()
    assert len(problems) == 6
    for word in ("HYBRID_SHARD", "SIZE_BASED_WRAP", "LlamaDecoderLayer", "LOCAL_STATE_DICT", "use_orig_params",
                 "sync_module_states"):
        assert any(word in p for p in problems), word


def test_an_fsdp_launch_the_trainer_cannot_honour_stops_before_anything_is_written(monkeypatch, tiny_pipe, tmp_path):
    for name, value in {**OFFICIAL, "FSDP_SHARDING_STRATEGY": "NO_SHARD"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="NO_SHARD is not supported.*ddp.yaml"):
        train(tiny_pipe.transformer, tiny_pipe.vae, tiny_pipe.processor, [], TrainConfig(out_dir=str(out)))
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
    with pytest.raises(ValueError, match="fp16 is not supported under FSDP.*use bf16"):
        train(tiny_pipe.transformer, tiny_pipe.vae, tiny_pipe.processor, [],
              TrainConfig(out_dir=str(out), mixed_precision="fp16"))
    assert not out.exists()


def test_a_global_batch_the_processes_cannot_share_is_refused():
    config = TrainConfig(out_dir="x", batch_size=2, global_batch_size=12)
    set_accumulation(config, 3)
    assert config.grad_accumulation == 2
    with pytest.raises(ValueError, match="global_batch_size 12 cannot be shared by 4 process.*multiple of 8"):
        set_accumulation(TrainConfig(out_dir="x", batch_size=2, global_batch_size=12), 4)


def checkpoint_of(tmp_path, model, plan, processes, config):
    folder = tmp_path / "checkpoints" / "step-000002"
    folder.mkdir(parents=True)
    state = {"step": 2, "config": {"lora": None}, **run_record(model, plan, processes)}
    (folder / TRAINER_STATE).write_text(json.dumps(state))
    return folder


def tiny(hidden: int) -> OmniGen:
    with torch.device("meta"):
        return OmniGen.from_config(OmniGenConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                                 num_key_value_heads=4, intermediate_size=2 * hidden,
                                                 vocab_size=320, pad_token_id=3, pos_embed_max_size=8,
                                                 native_image_size=64))


def test_resuming_from_another_model_or_another_sharding_is_refused(tmp_path):
    config = TrainConfig(out_dir=str(tmp_path))
    sharded = FsdpPlan(state_dict_type="SHARDED_STATE_DICT")
    folder = checkpoint_of(tmp_path, tiny(64), sharded, 2, config)
    check_resumable(folder, config, tiny(64), sharded, 2)  # the same run: fine
    with pytest.raises(ValueError, match="another model \\(hidden_size 64 there, 32 here"):
        check_resumable(folder, config, tiny(32), sharded, 2)
    with pytest.raises(ValueError, match="sharded across 2 processes.*resume it with 2 processes, not 4"):
        check_resumable(folder, config, tiny(64), sharded, 4)
    with pytest.raises(ValueError, match="written by a run FSDP FULL_SHARD.*without FSDP"):
        check_resumable(folder, config, tiny(64), None, 2)
    full = checkpoint_of(tmp_path / "full", tiny(64), FsdpPlan(), 2, config)
    check_resumable(full, config, tiny(64), FsdpPlan(strategy="SHARD_GRAD_OP"), 8)  # full states: any count
