"""Few-shot, in-context tasks: example pairs of a transformation (recolour, flip, background, edges, depth,
skeleton), then a query; the transformation is shown only by the examples, never named.
"""

from __future__ import annotations

import random

from ..world import BACKGROUND_COLORS, FIGURE_BACKGROUNDS, OBJECT_COLORS, Figure, Scene, SceneObject, mirror_scene
from .specs import (
    SEEN_PAIRS,
    Sample,
    TaskWeights,
    build_sample,
    figure_picture,
    fits,
    has_heldout_pair,
    pick,
    placeholder,
    random_garment,
    random_pose,
    random_scene,
    scene_picture,
    skeleton_picture,
)

FEWSHOT_TRANSFORMS = ("recolour", "flip", "background", "edges", "depth", "skeleton")


FEWSHOT_LEADS = (
    "According to the following examples, generate an output for the input.",
    "Follow the examples and generate the output for the last input.",
    "Learn the transformation from the examples and apply it to the input.",
)


def fewshot_instruction(n_examples: int, lead: str = FEWSHOT_LEADS[0]) -> str:
    """The lead, then "Input: <image> Output: <image>" per example pair, then the query input."""
    parts = [f"Input: {placeholder(2 * i + 1)} Output: {placeholder(2 * i + 2)}" for i in range(n_examples)]
    return " ".join([lead, *parts, f"Input: {placeholder(2 * n_examples + 1)} Output:"])


def _fewshot_pair(transform: str, rng: random.Random, size: int, params: dict) -> tuple[dict, dict]:
    """One (input, output) picture pair for a transformation; params fix its free choices."""
    while True:
        if transform == "skeleton":
            figure = Figure(random_pose(rng), random_garment(rng), rng.choice(FIGURE_BACKGROUNDS), size)
            return figure_picture(figure), skeleton_picture(figure.pose, size)
        if transform in ("edges", "depth"):
            scene = random_scene(rng, size)
            return scene_picture(scene), scene_picture(scene, transform)
        if transform == "flip":
            scene = random_scene(rng, size)
            if scene != mirror_scene(scene):  # a symmetric scene would not show the flip
                return scene_picture(scene), scene_picture(mirror_scene(scene))
        elif transform == "background":
            scene = random_scene(rng, size, backgrounds=[b for b in BACKGROUND_COLORS if b != params["background"]])
            return scene_picture(scene), scene_picture(Scene(params["background"], scene.objects, size))
        elif transform == "recolour":
            source, target = params["from"], params["to"]
            pairs = [p for p in SEEN_PAIRS if p[0] == source or rng.random() < 0.5]
            # The count is drawn as random_scene would draw it, then capped at the pairs there are (each object
            # of a scene is a different pair): an unlucky draw of few pairs would otherwise ask the impossible.
            scene = random_scene(rng, size, pairs=pairs, n_objects=min(rng.randint(1, 3), len(pairs)))
            recoloured = tuple(
                SceneObject(o.shape, target, o.size, o.region) if o.color == source else o
                for o in scene.objects
            )
            if any(o.color == source for o in scene.objects) and fits(recoloured):
                out = Scene(scene.background, recoloured, size)
                if not has_heldout_pair(out):
                    return scene_picture(scene), scene_picture(out)
        else:
            raise ValueError(f"unknown few-shot transformation {transform!r}; choose one of {list(FEWSHOT_TRANSFORMS)}")


def make_fewshot(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    transform = pick(rng, FEWSHOT_TRANSFORMS, task_weights)
    params: dict = {}
    if transform == "background":
        params["background"] = rng.choice(list(BACKGROUND_COLORS))
    elif transform == "recolour":
        params["from"], params["to"] = rng.sample(list(OBJECT_COLORS), 2)
    n_examples = rng.randint(1, 2)
    pairs = [_fewshot_pair(transform, rng, size, params) for _ in range(n_examples + 1)]
    inputs = [picture for pair in pairs[:-1] for picture in pair]
    query, answer = pairs[-1]
    instruction = fewshot_instruction(n_examples, rng.choice(FEWSHOT_LEADS))
    inputs.append(query)
    return build_sample("fewshot", transform, instruction, inputs, answer, split, transform=transform, params=params)
