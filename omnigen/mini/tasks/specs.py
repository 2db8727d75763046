"""What every task family builds its samples from: the held-out colour-shape pairs, the Sample, random
scenes, poses and garments, the picture specs (JSON dicts that `world.render_picture` draws) and
`build_sample`, which renders a sample's pictures from its specs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from PIL import Image

from ..world import (
    ARM_POSES,
    BACKGROUND_COLORS,
    LEANS,
    LEG_POSES,
    OBJECT_COLORS,
    PATTERNS,
    REGIONS,
    SHAPES,
    SIZES,
    Figure,
    Garment,
    Pose,
    Scene,
    SceneObject,
    render_picture,
    scene_layout_problem,
)

# Colour-shape pairs kept out of training: each shape and four different colours.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "square"),
    ("blue", "circle"),
    ("yellow", "triangle"),
)
ALL_PAIRS = tuple((c, s) for c in OBJECT_COLORS for s in SHAPES)
SEEN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)


@dataclass
class Sample:
    """One task instance: an instruction with `<img><|image_k|></img>` placeholders, its pictures, its spec."""

    family: str
    task: str
    instruction: str
    input_images: list[Image.Image]
    output_image: Image.Image
    spec: dict


def placeholder(k: int) -> str:
    return f"<img><|image_{k}|></img>"


IMG1, IMG2 = placeholder(1), placeholder(2)

TaskWeights = Mapping[str, float] | None  # {sub-task: weight}; see make_sample


def pick(rng: random.Random, options: Sequence[str], weights: Mapping[str, float] | None) -> str:
    """A uniform choice, or one in proportion to `weights` (a missing option weighs 1)."""
    if not weights:
        return rng.choice(options)  # the unweighted draw is kept as it was: the seeded eval sets depend on it
    return rng.choices(options, [weights.get(o, 1.0) for o in options])[0]


# ----------------------------------------------------------------------------------------------
# Random specs


def has_heldout_pair(scene: Scene) -> bool:
    return any(o.pair in HELDOUT_PAIRS for o in scene.objects)


def random_object(rng: random.Random, pairs: Sequence[tuple[str, str]], region: str) -> SceneObject:
    color, shape = rng.choice(list(pairs))
    return SceneObject(shape, color, rng.choice(SIZES), region)


SCENE_ATTEMPTS = 10_000  # a possible scene fits within a few dozen draws; this bounds an impossible request


def random_scene(
    rng: random.Random,
    size: int,
    pairs: Sequence[tuple[str, str]] = SEEN_PAIRS,
    n_objects: int | None = None,
    backgrounds: Sequence[str] = tuple(BACKGROUND_COLORS),
    distinct_shapes: bool = False,
) -> Scene:
    """A valid random scene; redraws until the objects fit (distinct regions, pairs, no touching).

    Raises ValueError when no scene can hold `n_objects` objects of these pairs (more objects than distinct
    pairs, shapes or regions), or when no fitting draw comes up in SCENE_ATTEMPTS tries."""
    count = n_objects if n_objects is not None else rng.randint(1, 3)
    distinct = len(set(pairs)) if not distinct_shapes else len({shape for _, shape in pairs})
    if not 1 <= count <= min(3, len(REGIONS)) or count > distinct:
        what = "shapes" if distinct_shapes else "colour-shape pairs"
        raise ValueError(f"a scene of {count} objects cannot be drawn from {distinct} distinct {what} "
                         f"({sorted(set(pairs))}); a scene holds 1 to 3 objects, each a different {what[:-1]}")
    for _ in range(SCENE_ATTEMPTS):
        regions = rng.sample(REGIONS, count)
        objects = tuple(random_object(rng, pairs, region) for region in regions)
        if distinct_shapes and len({o.shape for o in objects}) != len(objects):
            continue
        if scene_layout_problem(objects) is None:
            return Scene(rng.choice(list(backgrounds)), objects, size)
    raise ValueError(f"no scene of {count} objects from {sorted(set(pairs))} fitted in {SCENE_ATTEMPTS} draws")


def random_pose(rng: random.Random) -> Pose:
    return Pose(rng.choice(ARM_POSES), rng.choice(ARM_POSES), rng.choice(LEG_POSES), rng.choice(LEANS))


def random_garment(rng: random.Random, exclude: Garment | None = None) -> Garment:
    while True:
        garment = Garment(rng.choice(list(OBJECT_COLORS)), rng.choice(PATTERNS))
        if garment != exclude:
            return garment


def fits(objects: Sequence[SceneObject]) -> bool:
    return scene_layout_problem(tuple(objects)) is None


# ----------------------------------------------------------------------------------------------
# Pictures


def scene_picture(scene: Scene, kind: str = "scene", **extra) -> dict:
    return {"kind": kind, "scene": scene.to_dict(), **extra}


def figure_picture(figure: Figure) -> dict:
    return {"kind": "figure", "figure": figure.to_dict()}


def skeleton_picture(pose: Pose, size: int) -> dict:
    return {"kind": "skeleton", "pose": asdict(pose), "size": size}


def garment_picture(garment: Garment, size: int) -> dict:
    return {"kind": "garment", "garment": asdict(garment), "size": size}


def build_sample(
    family: str, task: str, instruction: str, inputs: list[dict], target: dict, split: str, **extra
) -> Sample:
    """A sample whose pictures are rendered from `inputs` and `target`; `extra` goes into the spec."""
    spec = {"family": family, "task": task, "split": split, "inputs": inputs, "target": target, **extra}
    return Sample(
        family=family,
        task=task,
        instruction=instruction,
        input_images=[render_picture(p) for p in inputs],
        output_image=render_picture(target),
        spec=spec,
    )
