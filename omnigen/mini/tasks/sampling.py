"""The task families by name and the one way their samples are drawn: `make_sample` (one sample from a
random stream, optionally with weighted sub-tasks, as the training pool draws) and `generate` (a seeded
set, as the evaluation draws), plus the sets built on them: `corpus` and `write_jsonl`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from ...files import atomic_write_text
from ..world import DEFAULT_SIZE
from .fewshot import FEWSHOT_TRANSFORMS, make_fewshot
from .generation import EDIT_OPERATIONS, make_edit, make_subject, make_text_to_image, make_tryon
from .natural import UPLOAD_EDITS, make_caption, make_count, make_upload_edit
from .specs import Sample
from .vision import (
    RESTORE_TASKS,
    make_depth,
    make_depth_extract,
    make_edges,
    make_edges_extract,
    make_pose,
    make_pose_extract,
    make_restore,
    make_segment,
)

FAMILIES: tuple[str, ...] = (
    "text_to_image",
    "edit",
    "subject",
    "tryon",
    "pose",
    "pose_extract",
    "depth",
    "depth_extract",
    "edges",
    "edges_extract",
    "segment",
    "restore",
    "fewshot",
    "caption",
    "count",
    "upload_edit",
)
SPLITS = ("train", "eval", "heldout")
FILLED_FAMILIES = ("caption", "count")  # the families whose words may leave things out (see make_sample's fill)
HELDOUT_FAMILIES = ("text_to_image", "edit", "caption")


def _check_split(family: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if split == "heldout" and family not in HELDOUT_FAMILIES:
        raise ValueError(f"split 'heldout' exists only for {list(HELDOUT_FAMILIES)}, not for {family!r}")


_MAKERS: dict[str, Callable[..., Sample]] = {
    "text_to_image": make_text_to_image,
    "edit": make_edit,
    "subject": make_subject,
    "tryon": make_tryon,
    "pose": make_pose,
    "pose_extract": make_pose_extract,
    "depth": make_depth,
    "depth_extract": make_depth_extract,
    "edges": make_edges,
    "edges_extract": make_edges_extract,
    "segment": make_segment,
    "restore": make_restore,
    "fewshot": make_fewshot,
    "caption": make_caption,
    "count": make_count,
    "upload_edit": make_upload_edit,
}
# The families whose sub-task `make_sample(task_weights=...)` can weight, and their sub-tasks.
SUB_TASKS: dict[str, tuple[str, ...]] = {
    "edit": tuple(EDIT_OPERATIONS),
    "restore": RESTORE_TASKS,
    "fewshot": FEWSHOT_TRANSFORMS,
    "upload_edit": UPLOAD_EDITS,
}


# ----------------------------------------------------------------------------------------------
# Public API


def make_sample(
    family: str,
    rng: random.Random,
    split: str = "train",
    size: int = DEFAULT_SIZE,
    task_weights: Mapping[str, float] | None = None,
    fill: str | None = None,
) -> Sample:
    """One random sample of a task family, drawn from `rng`.

    `fill` ("convention" or "random", for the families in FILLED_FAMILIES) says how a target draws what its
    words leave out; None takes the family's default (natural.DEFAULT_FILL).

    `task_weights` ({sub-task: weight}, for the families in SUB_TASKS) draws the sub-task in those proportions
    (a sub-task left out weighs 1) instead of uniformly. The training pool uses it to show more of what the
    model finds hard; the evaluation sets never pass it, so they do not change with it.
    """
    if family not in _MAKERS:
        raise ValueError(f"unknown task family {family!r}; choose one of {list(FAMILIES)}")
    _check_split(family, split)
    if fill is not None:
        if family not in FILLED_FAMILIES:
            raise ValueError(f"task family {family!r} states everything it draws; fill applies to {list(FILLED_FAMILIES)}")
        return _MAKERS[family](rng, split, size, fill=fill)
    if not task_weights:
        return _MAKERS[family](rng, split, size)
    if family not in SUB_TASKS:
        raise ValueError(f"task family {family!r} has no sub-tasks to weight; only {list(SUB_TASKS)} have")
    unknown = sorted(set(task_weights) - set(SUB_TASKS[family]))
    if unknown:
        raise ValueError(f"unknown {family} sub-task(s) {unknown}; choose among {list(SUB_TASKS[family])}")
    if any(w < 0 for w in task_weights.values()) or not any(task_weights.get(t, 1.0) > 0 for t in SUB_TASKS[family]):
        raise ValueError(f"{family} sub-task weights must be >= 0 with at least one above 0, not {dict(task_weights)}")
    return _MAKERS[family](rng, split, size, task_weights)


def family_rng(family: str, seed: int, split: str) -> random.Random:
    # A string seed is hashed the same way on every run and machine; each (family, split) gets its own stream.
    return random.Random(f"x2i-mini/{family}/{split}/{seed}")


def generate(family: str, n: int, seed: int = 0, split: str = "train", size: int = DEFAULT_SIZE) -> list[Sample]:
    """`n` samples of a family; the same arguments always give the same samples."""
    if family not in _MAKERS:
        raise ValueError(f"unknown task family {family!r}; choose one of {list(FAMILIES)}")
    _check_split(family, split)
    rng = family_rng(family, seed, split)
    return [make_sample(family, rng, split, size) for _ in range(n)]


def corpus(n_per_family: int, seed: int = 0) -> list[str]:
    """Instructions of every family (training split), to train the tokenizer on."""
    return [s.instruction for family in FAMILIES for s in generate(family, n_per_family, seed, "train")]


def write_jsonl(samples: Sequence[Sample], root_dir: str | Path, jsonl_path: str | Path) -> None:
    """Save the pictures as PNG under root_dir and one line per sample in the OmniGen fine-tuning format.

    Each line is {"instruction", "input_images": [paths], "output_image": path}, the paths relative
    to root_dir. The JSONL file is written to a temporary name and renamed, so a crash never leaves a
    half-written file where a good one was.
    """
    root = Path(root_dir)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for number, sample in enumerate(samples):
        stem = f"{number:06d}_{sample.family}"
        input_paths = []
        for k, image in enumerate(sample.input_images, start=1):
            input_paths.append(_save_png(image, image_dir / f"{stem}_in{k}.png", root))
        output_path = _save_png(sample.output_image, image_dir / f"{stem}_out.png", root)
        record = {"instruction": sample.instruction, "input_images": input_paths, "output_image": output_path}
        lines.append(json.dumps(record))
    atomic_write_text(Path(jsonl_path), "".join(line + "\n" for line in lines))


def _save_png(image: Image.Image, path: Path, root: Path) -> str:
    image.save(path, format="PNG")
    return path.relative_to(root).as_posix()
