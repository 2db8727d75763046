"""Train a LoRA adapter on a model folder or on a loaded pipeline.

    from omnigen.training import LoraSettings, TrainConfig, train_lora
    config = TrainConfig(out_dir="adapters/magenta", steps=300, learning_rate=1e-3, lora=LoraSettings(rank=8),
                         validation_prompts=["a magenta circle in the center"], sample_every=100)
    result = train_lora(pipe, "data.jsonl", config, callback=print)   # or a model folder / Hub id
    pipe.load_lora(result.adapter)

The data may be a JSONL file, a folder of images with same-named .txt instructions, or the studio's rows
(instruction, [input images], output image); it is checked before the model is touched, every problem
listed by line, file or row (`DatasetError`).

A loaded pipeline (the studio's) is borrowed for the run: the new adapter is attached to its transformer
and taken off at the end, and what the run changes — trainable flags, train/eval mode, gradient
checkpointing, where the transformer and VAE sit, and the pipeline's own adapters (switched off while the
new one learns, so it learns against the base model) — is put back, so the pipeline generates exactly as
before. Do not generate with the pipeline while it trains.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from ..pipeline import OmniGenPipeline
from .dataset import open_training_data
from .config import LoraSettings, TrainConfig, TrainResult
from .sharding import FsdpPlan
from .trainer import train

PRECISION_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def train_lora(model: OmniGenPipeline | str | os.PathLike | None, data: Any, config: TrainConfig,
               callback: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
               image_root: str | os.PathLike | None = None) -> TrainResult:
    """Train a new LoRA adapter and write it to config.out_dir/adapter (at every checkpoint and at the end).

    `model` is a loaded OmniGenPipeline (left as it was, see the module docstring), a model folder or Hub
    id, or None for the default model. `data` is anything `open_training_data` reads; `image_root` is where
    a JSONL's image paths start. `config.lora` defaults to LoraSettings(); `config.resolution` to the
    model's max_input_image_size, `unconditional_prompt` to the model's negative prompt. Events and stopping work as in `train`; `resume=True` in the config
    continues the run in out_dir at the step it had reached.
    """
    config = replace(config, lora=config.lora or LoraSettings())
    config.check()
    dataset = open_training_data(data, image_root)
    if hasattr(dataset, "validate"):
        dataset.validate()  # before a model is loaded: a bad row costs nothing
    pipe = model if isinstance(model, OmniGenPipeline) else load_pipeline_for_training(model, config)
    if config.lora.base_model is None and pipe.model_id:
        config.lora = replace(config.lora, base_model=pipe.model_id)
    config = with_model_defaults(config, pipe)
    with borrowed(pipe, config.lora.name):
        return train(pipe.transformer, pipe.vae, pipe.processor, dataset, config, callback=callback, stop=stop)


def with_model_defaults(config: TrainConfig, pipe: OmniGenPipeline) -> TrainConfig:
    """The settings left to the model, from the model: its max input image size as the resolution, and its own
    negative prompt as the unconditional branch's prompt (the branch its sampling runs)."""
    defaults = pipe.default_settings
    return replace(config, resolution=config.resolution or defaults.max_input_image_size,
                   unconditional_prompt=(config.unconditional_prompt if config.unconditional_prompt is not None
                                         else defaults.negative_prompt))


def load_pipeline_for_training(model: str | os.PathLike | None, config: TrainConfig) -> OmniGenPipeline:
    """The model on the CPU (accelerate or FSDP moves it). Full fine-tuning loads fp32 master weights; a LoRA run
    loads the base in the precision the run computes in (the frozen base needs no fp32 copy; the adapter learns
    in fp32 whatever the base is). Under FSDP with cpu_ram_efficient_loading only the main process reads the
    weights file; the others build the transformer on the meta device and receive the weights once sharded."""
    dtype = torch.float32 if config.lora is None else PRECISION_DTYPES[config.mixed_precision]
    plan = FsdpPlan.from_env()
    if plan is None or not plan.main_process_loads or int(os.environ.get("RANK", "0")) == 0:
        return OmniGenPipeline.from_pretrained(model, device="cpu", dtype=dtype)
    from .. import vae as vae_io
    from ..model import OmniGen
    from ..pipeline import default_model
    from ..processor import OmniGenProcessor
    from ..settings import model_defaults
    from ..weights import load_config, resolve_model_dir

    model_id = os.fspath(model) if model is not None else default_model()
    model_dir = resolve_model_dir(model_id, weights=False)
    config_of_model = load_config(model_dir)
    with torch.device("meta"):
        transformer = OmniGen.from_config(config_of_model).to(dtype)
    defaults = model_defaults(model_dir, config_of_model.native_image_size)
    return OmniGenPipeline(transformer, vae_io.load_vae(model_dir), OmniGenProcessor.from_pretrained(model_dir),
                           torch.device("cpu"), dtype, model_id=model_id, default_settings=defaults)


@contextmanager
def borrowed(pipe: OmniGenPipeline, adapter_name: str) -> Iterator[None]:
    """Lend the pipeline's transformer and VAE to a training run; afterwards take the run's adapter off and
    put back everything the run changed."""
    from .. import lora

    transformer, vae = pipe.transformer, pipe.vae
    flags = [(p, p.requires_grad) for p in transformer.parameters()]
    vae_flags = [(p, p.requires_grad) for p in vae.parameters()]
    modes = (transformer.training, vae.training, getattr(transformer, "gradient_checkpointing", False))
    devices = (next(transformer.parameters()).device, next(vae.parameters()).device)
    had_own_forward = "forward" in transformer.__dict__
    own = lora.lora_state(transformer)
    scales, merged, enabled = lora.lora_scales(transformer), own is not None and own.merged, own is None or own.enabled
    if scales:  # the new adapter learns against the base: the pipeline's own adapters sit out the run
        lora.unmerge_lora(transformer)
        lora.enable_lora(transformer)
        lora.set_lora_scales(transformer, {name: 0.0 for name in scales})
    try:
        yield
    finally:
        if adapter_name in lora.lora_scales(transformer):
            lora.unload_lora(transformer, adapter_name)
        if not had_own_forward:  # accelerate's mixed-precision wrapper, left behind as an instance attribute
            transformer.__dict__.pop("forward", None)
        if scales:
            lora.set_lora_scales(transformer, scales)
            if not enabled:
                lora.disable_lora(transformer)
            if merged:
                lora.merge_lora(transformer)
        for param, flag in flags + vae_flags:
            param.requires_grad_(flag)
        transformer.train(modes[0])
        vae.train(modes[1])
        if hasattr(transformer, "enable_gradient_checkpointing"):
            transformer.enable_gradient_checkpointing(modes[2])
        transformer.to(devices[0])
        vae.to(devices[1])
        pipe.loras = lora.active_lora_scales(transformer)
