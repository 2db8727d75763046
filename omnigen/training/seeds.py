"""Seeds derived from the run's seed: one independent random stream per (micro-batch, purpose).

Every random choice of a run (data order, condition dropout, t and noise, the new LoRA's initial weights)
draws from a generator seeded by `derived_seed(config.seed, micro-batch number, purpose)`, never from the
global RNG, so a resumed run replays exactly what an uninterrupted run would have done, on any number of
processes.
"""

from __future__ import annotations

import numpy as np

# Purposes of the derived seeds: one independent random stream each.
DATA_ORDER, DROPOUT, NOISE, LORA_INIT = 1, 2, 3, 4


def derived_seed(seed: int, *parts: int) -> int:
    """A well-mixed 63-bit seed for one (seed, micro-batch, purpose) combination."""
    state = np.random.SeedSequence([seed % 2**32, seed // 2**32 % 2**32, *parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
