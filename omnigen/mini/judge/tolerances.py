"""The pass/fail tolerances of the judge's checks and the Verdict every check returns.

Both kinds of verdict use them: the checks of grid targets (judge.verdicts) and those of what a caption states
or an uploaded picture's edit (judge.stated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# All tolerances are for a 64x64 image and scale with the size.
SHIFT_TOLERANCE = 3  # pixels an object may sit off its region's centre
MIN_SHAPE_IOU = 0.5  # the best-fitting template of the right shape must overlap this much
BACKGROUND_LIMIT = 50.0  # RGB distance within which a pixel still counts as background
EXTRA_BLOB_FRACTION = 0.35  # an unexpected blob this fraction of a small object's area fails
EDGE_TOLERANCE = 1  # pixels an edge may sit off the true one
MIN_EDGE_F1 = 0.6  # for the whole edge map and for each object's outline
LIMB_TOLERANCE = 2  # pixels a limb may sit off its true segment
MIN_LIMB_COVERAGE = 0.6  # fraction of the points along a limb that must find it
MAX_RESIDUAL_NOISE = 8.0  # RMS (0..255) of what denoising may leave in flat areas
MIN_SHARPNESS_GAIN = 1.4  # deblurring must raise the mean squared gradient this much over the input


@dataclass
class Verdict:
    """Whether every check passed, the fraction that did, and what each check found (plain JSON)."""

    passed: bool
    score: float
    details: dict = field(default_factory=dict)


def summarize(checks: dict[str, bool], details: dict) -> Verdict:
    """The verdict of named checks: passed when all pass, scored by the fraction that do, the details with them."""
    checks = {name: bool(ok) for name, ok in checks.items()}
    details = plain({**details, "checks": checks})
    return Verdict(all(checks.values()), sum(checks.values()) / max(len(checks), 1), details)


def plain(value):
    """The details with numpy scalars made Python ones, so that they are JSON as they stand."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
