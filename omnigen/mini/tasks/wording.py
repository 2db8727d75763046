"""The wording of instructions: every family phrases its objects, regions, scenes and garments through
these, each drawing one of several phrasings from the sample's random stream.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..world import Garment, Scene, SceneObject


_REGION_WORDS = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
    "center": ("in the center", "in the middle", "at the center"),
}
REGION_TARGETS = {
    "top left": ("the top left", "the top left corner"),
    "top right": ("the top right", "the top right corner"),
    "bottom left": ("the bottom left", "the bottom left corner"),
    "bottom right": ("the bottom right", "the bottom right corner"),
    "center": ("the center", "the middle"),
}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


def region_phrase(region: str, rng: random.Random) -> str:
    return rng.choice(_REGION_WORDS[region])


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: SceneObject, rng: random.Random, with_size: bool = True, with_region: bool = True) -> str:
    words = []
    if with_size:
        words.append(rng.choice(_SIZE_WORDS[obj.size]))
    words += [obj.color, obj.shape]
    if with_region:
        words.append(region_phrase(obj.region, rng))
    return with_article(" ".join(words))


def join_phrases(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def objects_phrase(objects: Sequence[SceneObject], rng: random.Random, **kwargs) -> str:
    ordered = list(objects)
    rng.shuffle(ordered)
    return join_phrases([object_phrase(o, rng, **kwargs) for o in ordered])


def refer(scene: Scene, index: int, rng: random.Random) -> str:
    """A phrase that picks out object `index` of the scene unambiguously."""
    obj = scene.objects[index]
    # Colour and shape twice: the commonest way to name an object.
    by_name = f"the {obj.color} {obj.shape}"
    options = [by_name, by_name, f"the {obj.shape} {region_phrase(obj.region, rng)}"]
    if sum(o.color == obj.color for o in scene.objects) == 1:
        options.append(f"the {obj.color} object")
    if sum(o.shape == obj.shape for o in scene.objects) == 1:
        options.append(f"the {obj.shape}")
    return rng.choice(options)


def colour_word(rng: random.Random) -> str:
    return rng.choice(("colour", "color"))


def scene_description(scene: Scene, rng: random.Random) -> str:
    """Text that fully determines a scene (objects with size and region, and the background)."""
    bg = scene.background
    if not scene.objects:
        return rng.choice((f"an empty {bg} background", f"a plain {bg} background"))
    objs = objects_phrase(scene.objects, rng)
    return rng.choice(
        (
            f"{objs} on a {bg} background",
            f"draw {objs} on a {bg} background",
            f"an image of {objs} on a {bg} background",
            f"a {bg} background with {objs}",
            f"generate a picture of {objs}. the background is {bg}",
            f"{objs}, {bg} background",
        )
    )


def garment_phrase(garment: Garment | None, rng: random.Random) -> str:
    if garment is None:
        return "no shirt"
    c = garment.color
    if garment.pattern == "solid":
        return with_article(rng.choice((f"{c} shirt", f"plain {c} shirt")))
    if garment.pattern == "striped":
        return with_article(rng.choice((f"{c} striped shirt", f"{c} shirt with white stripes")))
    return with_article(rng.choice((f"{c} dotted shirt", f"{c} shirt with white dots")))
