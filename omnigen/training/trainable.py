"""What a run trains, decided in one place: every weight of the transformer, or with `config.lora` only a new
LoRA adapter on the decoder's linear layers (the base frozen); and how exactly those weights are saved into a
checkpoint and loaded back. The rest of the trainer only sees `trainable_parameters`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..files import atomic_write_text
from ..weights import atomic_save_file, save_transformer
from .config import LoraSettings, TrainConfig
from .seeds import LORA_INIT, derived_seed

MODEL_WEIGHTS = "model.safetensors"


def prepare_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Make `model` ready to train. Full fine-tuning: every parameter learns. A LoRA run attaches a new
    adapter and freezes the base; the rest of the trainer only sees `trainable_parameters`."""
    if config.lora is None:
        model.requires_grad_(True)
    else:
        attach_training_adapter(model, config.lora, config.seed)
    if hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing(config.gradient_checkpointing)
    return model.train()


def attach_training_adapter(model: nn.Module, settings: LoraSettings, seed: int) -> None:
    """A new adapter whose random lora_A comes from the run's seed (not the global RNG): runs repeat exactly."""
    from .. import lora

    with torch.random.fork_rng(devices=[]):  # peft initialises the new layers on the CPU, then moves them
        torch.manual_seed(derived_seed(seed, 0, LORA_INIT))
        lora.add_lora(model, settings.name, rank=settings.rank, alpha=settings.alpha,
                      targets=settings.target_modules(), dropout=settings.dropout)
    for param in trainable_parameters(model):  # on a bf16/fp16 base the adapter learns in fp32 (peft casts back)
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_model_weights(model: nn.Module, folder: Path, config: TrainConfig,
                       gathered: dict[str, torch.Tensor] | None = None) -> None:
    """Full fine-tuning writes the whole transformer (config.json + model.safetensors, official names); a LoRA
    run writes its adapter in peft's layout (the folder loads with `pipe.load_lora`). `gathered`: the weights
    of a sharded model, gathered by `sharding.gather_weights` (by default they are read from the model)."""
    if config.lora is None:
        if gathered is None:
            save_transformer(model, folder)
        else:
            atomic_save_file(gathered, folder / MODEL_WEIGHTS, metadata={"format": "pt"})
            atomic_write_text(folder / "config.json", json.dumps(model.config.to_dict(), indent=2))
        return
    from ..lora import PEFT_PREFIX, lora_layers, save_lora

    tensors = None
    if gathered is not None:  # model names (...qkv_proj.lora_A.<adapter>.weight) -> peft's saved names
        name = config.lora.name
        tensors = {f"{PEFT_PREFIX}{module}.lora_{part}.weight": gathered[f"{module}.lora_{part}.{name}.weight"]
                   for module in lora_layers(model) for part in "AB"}
    save_lora(model, folder, config.lora.name, base_model=config.lora.base_model, tensors=tensors)


def load_model_weights(model: nn.Module, folder: Path, config: TrainConfig) -> None:
    """Restore a checkpoint's weights into the very parameters the optimizer holds."""
    if config.lora is None:
        model.load_state_dict(load_file(str(folder / MODEL_WEIGHTS)), strict=True)
    else:
        from ..lora import load_lora_weights
        load_lora_weights(model, folder, config.lora.name)
