"""The learning-rate curve every training loop of the library follows: linear warm-up, a plateau, a cosine fall.

The transformer's trainer (`optimizer.lr_factor`, as a multiplier of TrainConfig.learning_rate) and the mini
world's VAE and decoder stages (`omnigen.mini.vae_training`, as a rate) both read it from `warmup_cosine`.
Plain float arithmetic, no torch: the numbers are the same on every machine.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, progress: float, peak: float = 1.0, hold: float = 0.0,
                  floor: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based).

    Over the first `warmup_steps` steps it climbs linearly to `peak` (step 0 already takes one step's share).
    After that it stays at `peak` until `progress` (0..1, how far along the run is: the caller decides whether
    by steps or by time) passes `hold`, then falls along a half cosine to `floor * peak` at progress 1. With
    `hold=1` it never falls (a constant schedule after warm-up).
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if hold >= 1.0 or progress <= hold:
        return peak
    fallen = min(1.0, (progress - hold) / (1.0 - hold))
    # The operations keep the order of the loops' former formulas, so every rate is equal to the last bit.
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fallen)))
