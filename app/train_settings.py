"""The Train tab's settings, made from the training settings type (omnigen.training.TrainConfig and
LoraSettings): which ones the page shows and in what order, each one's widget (kind, default, range and help
from its field), and the page's values as a TrainConfig. The Train tab's widgets and /train_start's parameters
are both built here, so they show the same defaults as `omnigen train --help`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.settings import value_type
from omnigen.training import LoraSettings, TrainConfig
from omnigen.training.config import config_fields

from .i18n import t

# Page setting -> (the settings type that holds it, its label's text key, its element id). The order is the order
# in which handlers receive the widgets' values.
PAGE_SETTINGS: dict[str, tuple[type, str, str]] = {
    "name": (LoraSettings, "train_name", "train-name"),
    "rank": (LoraSettings, "train_rank", "train-rank"),
    "alpha": (LoraSettings, "train_alpha", "train-alpha"),
    "learning_rate": (TrainConfig, "train_lr", "train-lr"),
    "steps": (TrainConfig, "train_steps", "train-steps"),
    "batch_size": (TrainConfig, "train_batch", "train-batch"),
    "resolution": (TrainConfig, "train_resolution", "train-resolution"),
    "targets": (LoraSettings, "train_targets", "train-targets"),
    "gradient_checkpointing": (TrainConfig, "train_checkpointing", "train-checkpointing"),
    "validation_prompts": (TrainConfig, "train_validation_prompts", "train-validation-prompts"),
    "sample_every": (TrainConfig, "train_sample_every", "train-sample-every"),
    "condition_dropout": (TrainConfig, "train_dropout", "train-dropout"),
    "sample_guidance_scale": (TrainConfig, "train_sample_guidance", "train-sample-guidance"),
    "max_grad_norm": (TrainConfig, "train_max_grad_norm", "train-max-grad-norm"),
}
SETTINGS = tuple(PAGE_SETTINGS)
RESOLUTION_SLIDER_MAX = 2048
TARGET_LABELS = {"attention": "train_targets_attention", "attention+mlp": "train_targets_mlp"}


def spec_of(name: str) -> dataclasses.Field:
    owner = PAGE_SETTINGS[name][0]
    return next(spec for spec in config_fields(owner) if spec.name == name)


def page_value(name: str, value: Any) -> Any:
    """A setting's value as its widget holds it: no alpha is 0 (the rank), prompts are lines of text."""
    if name == "alpha":
        return value or 0
    if name == "validation_prompts":
        return "\n".join(value or [])
    return value


def page_defaults(model_resolution: int) -> dict[str, Any]:
    """Every page setting's default, from its field; the resolution left to the model is the model's."""
    values = {}
    for name in SETTINGS:
        spec = spec_of(name)
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        values[name] = page_value(name, default)
    values["resolution"] = values["resolution"] or model_resolution
    return values


def page_values(config: TrainConfig) -> dict[str, Any]:
    """A TrainConfig (e.g. an example's recommended settings) as the page's values."""
    return {name: page_value(name, getattr(config.lora if owner is LoraSettings else config, name))
            for name, (owner, _, _) in PAGE_SETTINGS.items()}


def setting_widget(name: str, value: Any, page: bool = True) -> gr.components.Component:
    """The widget of one page setting: its kind and range from the field, its value given. `page`: the tab's
    own (with its element id), not an API endpoint's hidden input."""
    spec, (_, label_key, elem_id) = spec_of(name), PAGE_SETTINGS[name]
    meta = spec.metadata
    common = dict(label=t(label_key), elem_id=elem_id if page else None)
    if meta["choices"]:
        return gr.Radio([(t(TARGET_LABELS[c]), c) if c in TARGET_LABELS else c for c in meta["choices"]],
                        value=value, **common)
    if spec.type == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.type == "list[str]":
        return gr.Textbox(value, lines=3, **common)
    if meta["ui"] or name == "resolution":
        low, high, step = meta["ui"] or (meta["minimum"], RESOLUTION_SLIDER_MAX, 16)
        return gr.Slider(low, max(high, value), value, step=step, **common)
    kind = value_type(spec)
    if kind is str:
        return gr.Textbox(value, **common)
    return gr.Number(value, precision=0 if kind is int else None, minimum=meta["minimum"], **common)


# ----------------------------------------------------------------------------- the page's values as a TrainConfig


def adapter_name(text: str | None) -> str:
    """A name safe for a folder and for peft (letters, digits, - and _), from what the user typed."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", (text or "").strip()).strip("_-")[:48]
    if not name:
        raise ValueError("Give the adapter a name (letters, digits, - and _), e.g. 'rectangle'.")
    return name


def validation_prompts(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def whole(value: Any, label: str, minimum: int = 1) -> int:
    if value is None or float(value) != int(float(value)) or int(float(value)) < minimum:
        raise ValueError(f"{label} must be a whole number of at least {minimum}, got {value!r}.")
    return int(float(value))


def number(value: Any, label: str) -> float:
    if value is None or value == "":
        raise ValueError(f"{label} needs a number, got none.")
    return float(value)


def page_config(values: dict[str, Any], out_dir: Path, resume: bool, precision: str = "no") -> TrainConfig:
    """The TrainConfig for the page's settings; raises ValueError naming the first setting that cannot work.
    What the page does not show keeps the type's defaults, but for the page's own choices: its rows are few
    (latents encoded once), and one checkpoint is kept."""
    resolution = whole(values["resolution"], "Resolution")
    if resolution < 16 or resolution % 16:
        raise ValueError(f"Resolution must be a multiple of 16 (at least 16), got {resolution}.")
    alpha = float(values["alpha"] or 0)
    config = TrainConfig(
        out_dir=str(out_dir), steps=whole(values["steps"], "Steps"),
        batch_size=whole(values["batch_size"], "Batch size"),
        learning_rate=float(values["learning_rate"] or 0), mixed_precision=precision,
        gradient_checkpointing=bool(values["gradient_checkpointing"]),
        # One page setting for both dropouts: each keeps one guidance branch (text, image) trained.
        condition_dropout=float(values["condition_dropout"]),
        image_condition_dropout=float(values["condition_dropout"]),
        resolution=resolution, encode_latents_once=True, keep_checkpoints=1, resume=resume,
        lora=LoraSettings(rank=whole(values["rank"], "Rank"), alpha=alpha if alpha > 0 else None,
                          targets=values["targets"], name=adapter_name(values["name"])),
        validation_prompts=validation_prompts(values["validation_prompts"]),
        sample_every=whole(values["sample_every"] or 0, "Sample every", minimum=0),
        sample_guidance_scale=float(values["sample_guidance_scale"]),
        max_grad_norm=number(values["max_grad_norm"], "Max gradient norm (0: no clipping)"))
    config.check()
    return config
