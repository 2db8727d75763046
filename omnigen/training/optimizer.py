"""The optimizer and its learning-rate schedule: AdamW (fused), decay on matrices only, and the warm-up plus
optional cosine of TrainConfig as a multiplier of its learning_rate (the curve itself is `schedule.warmup_cosine`).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig
from .schedule import warmup_cosine


def build_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if not parameters:
        raise ValueError("the model has no trainable parameters; prepare_model must leave some requiring grad")
    decay = [p for p in parameters if p.ndim >= 2]  # norms and biases are not decayed
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every parameter in one pass, on a CPU as on a GPU: for the mini model's 5.1M
    # parameters 16 ms a step against 45 ms for torch's default on a CPU (one core), the same updates to 1e-8.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, fused=fused or None)


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based): linear warm-up over warmup_steps, then 1
    ("constant") or a cosine from 1 down to 0 at config.steps ("cosine")."""
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)  # of the steps after warm-up
    return warmup_cosine(step, config.warmup_steps, progress, hold=1.0 if config.lr_schedule == "constant" else 0.0)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
