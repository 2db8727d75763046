"""The judge: programmatic checks of a generated image against a sample's spec.

- `verdicts`: `judge` and `judge_spec`, the pass/fail tolerances and one check per kind of target
  (scenes, depth maps, edge maps, skeleton maps, figures, restorations).
- `stated`: `judge_stated` for captions that leave things out and counts (only what is said is checked,
  wherever the objects are) and `judge_photo` for edits of uploaded pictures.
- `tolerances`: the pass/fail tolerances both use and the `Verdict` every check returns.
- `measures`: what those checks measure in the pixels (colour masks, blobs, fitted shape templates,
  edge ridges, limb hues, shirt patterns, sharpness, residual noise).

    from omnigen.mini.judge import judge
    verdict = judge(sample, image)  # Verdict(passed, score, details)
"""

from .measures import (
    MIN_PATTERN_FRACTION,
    OFF_LINE_LIMIT,
    STRIPE_SPREAD_RATIO,
    TEMPLATE_ROUNDING,
    WHITE_LEVEL,
    flat_noise,
    sharpness,
    tolerant_f1,
)
from .stated import judge_photo, judge_stated
from .tolerances import (
    BACKGROUND_LIMIT,
    EDGE_TOLERANCE,
    EXTRA_BLOB_FRACTION,
    LIMB_TOLERANCE,
    MAX_RESIDUAL_NOISE,
    MIN_EDGE_F1,
    MIN_LIMB_COVERAGE,
    MIN_SHAPE_IOU,
    MIN_SHARPNESS_GAIN,
    SHIFT_TOLERANCE,
    Verdict,
)
from .verdicts import (
    SHIRT_COLORS,
    DEPTH_PALETTE,
    SCENE_PALETTE,
    ExpectedObject,
    check_layout,
    expected_objects,
    judge,
    judge_depth,
    judge_edges,
    judge_figure,
    judge_scene,
    judge_skeleton,
    judge_spec,
)
