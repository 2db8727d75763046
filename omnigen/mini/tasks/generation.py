"""The task families that generate or edit a scene or a figure from words and pictures: text_to_image,
edit (recolour, remove, add, move, background), subject (an object placed anew) and tryon.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..world import BACKGROUND_COLORS, FIGURE_BACKGROUNDS, REGIONS, Figure, Scene, SceneObject
from .specs import (
    HELDOUT_PAIRS,
    IMG1,
    IMG2,
    SEEN_PAIRS,
    Sample,
    TaskWeights,
    build_sample,
    figure_picture,
    fits,
    garment_picture,
    has_heldout_pair,
    pick,
    random_garment,
    random_object,
    random_pose,
    random_scene,
    scene_picture,
)
from .wording import REGION_TARGETS, colour_word, object_phrase, objects_phrase, refer, region_phrase, scene_description


def make_text_to_image(rng: random.Random, split: str, size: int) -> Sample:
    if split == "heldout":
        # Exactly one held-out object; the rest are seen pairs.
        while True:
            scene = random_scene(rng, size)
            index = rng.randrange(len(scene.objects))
            old = scene.objects[index]
            color, shape = rng.choice(HELDOUT_PAIRS)
            new = SceneObject(shape, color, old.size, old.region)
            objects = scene.objects[:index] + (new,) + scene.objects[index + 1 :]
            if fits(objects):
                scene = Scene(scene.background, objects, size)
                break
    else:
        scene = random_scene(rng, size)
    instruction = scene_description(scene, rng)
    return build_sample("text_to_image", "text_to_image", instruction, [], scene_picture(scene), split)


def _edit_recolour(scene: Scene, rng: random.Random, pairs) -> tuple[str, Scene, str] | None:
    index = rng.randrange(len(scene.objects))
    obj = scene.objects[index]
    colors = [c for c, s in pairs if s == obj.shape and c != obj.color]
    if not colors:
        return None
    color = rng.choice(colors)
    recoloured = SceneObject(obj.shape, color, obj.size, obj.region)
    objects = scene.objects[:index] + (recoloured,) + scene.objects[index + 1 :]
    if not fits(objects):
        return None
    new_scene = Scene(scene.background, objects, scene.size)
    ref = refer(scene, index, rng)
    colour = colour_word(rng)
    instruction = rng.choice(
        (
            f"{IMG1} make {ref} {color}",
            f"{IMG1} change {ref} to {color}",
            f"change the {colour} of {ref} in {IMG1} to {color}",
            f"{IMG1} turn {ref} {color}",
            f"in {IMG1}, recolour {ref} {color}",
            f"paint {ref} in {IMG1} {color}",
        )
    )
    return "recolour", new_scene, instruction


def _edit_remove(scene: Scene, rng: random.Random, pairs) -> tuple[str, Scene, str] | None:
    index = rng.randrange(len(scene.objects))
    ref = refer(scene, index, rng)
    instruction = rng.choice(
        (f"{IMG1} remove {ref}", f"delete {ref} from {IMG1}", f"{IMG1} erase {ref}", f"take {ref} out of {IMG1}")
    )
    return "remove", scene.replace_object(index, None), instruction


def _edit_add(scene: Scene, rng: random.Random, pairs) -> tuple[str, Scene, str] | None:
    free = [r for r in REGIONS if r not in {o.region for o in scene.objects}]
    if len(scene.objects) >= 3 or not free:
        return None
    new = random_object(rng, pairs, rng.choice(free))
    objects = scene.objects + (new,)
    if not fits(objects):
        return None
    obj, where = object_phrase(new, rng, with_region=False), region_phrase(new.region, rng)
    instruction = rng.choice(
        (
            f"{IMG1} add {obj} {where}",
            f"add {obj} {where} to {IMG1}",
            f"in {IMG1}, put {obj} {where}",
            f"{IMG1} draw {obj} {where} as well",
        )
    )
    return "add", Scene(scene.background, objects, scene.size), instruction


def _edit_move(scene: Scene, rng: random.Random, pairs) -> tuple[str, Scene, str] | None:
    index = rng.randrange(len(scene.objects))
    obj = scene.objects[index]
    free = [r for r in REGIONS if r not in {o.region for o in scene.objects}]
    rng.shuffle(free)
    for region in free:
        moved = SceneObject(obj.shape, obj.color, obj.size, region)
        if fits(scene.objects[:index] + (moved,) + scene.objects[index + 1 :]):
            ref, where = refer(scene, index, rng), rng.choice(REGION_TARGETS[region])
            instruction = rng.choice(
                (
                    f"{IMG1} move {ref} to {where}",
                    f"move {ref} in {IMG1} to {where}",
                    f"in {IMG1}, put {ref} in {where} instead",
                )
            )
            return "move", scene.replace_object(index, moved), instruction
    return None


def _edit_background(scene: Scene, rng: random.Random, pairs) -> tuple[str, Scene, str] | None:
    bg = rng.choice([b for b in BACKGROUND_COLORS if b != scene.background])
    instruction = rng.choice(
        (
            f"{IMG1} change the background to {bg}",
            f"make the background of {IMG1} {bg}",
            f"{IMG1} replace the background with {bg}",
            f"in {IMG1}, paint the background {bg}",
        )
    )
    return "background", Scene(bg, scene.objects, scene.size), instruction


EDIT_OPERATIONS: dict[str, Callable] = {
    "recolour": _edit_recolour,
    "remove": _edit_remove,
    "add": _edit_add,
    "move": _edit_move,
    "background": _edit_background,
}


def make_edit(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    # Held-out edits create a held-out pair from a scene of seen pairs (by recolouring or adding).
    operations = ("recolour", "add") if split == "heldout" else tuple(EDIT_OPERATIONS)
    out_pairs = HELDOUT_PAIRS if split == "heldout" else SEEN_PAIRS
    while True:
        operation = pick(rng, operations, task_weights)
        n_objects = rng.randint(1, 2) if operation == "add" else rng.randint(1, 3)
        scene = random_scene(rng, size, n_objects=n_objects)
        result = EDIT_OPERATIONS[operation](scene, rng, out_pairs)
        if result is None:
            continue
        task, edited, instruction = result
        if has_heldout_pair(edited) == (split == "heldout"):
            return build_sample("edit", task, instruction, [scene_picture(scene)], scene_picture(edited), split)


def make_subject(rng: random.Random, split: str, size: int) -> Sample:
    source = random_scene(rng, size, n_objects=1)
    subject = source.objects[0]
    while True:
        target = random_scene(rng, size, n_objects=rng.randint(1, 3))
        placed = SceneObject(subject.shape, subject.color, subject.size, target.objects[0].region)
        others = tuple(o for o in target.objects[1:] if o.pair != subject.pair)
        if fits((placed, *others)):
            break
    scene = Scene(target.background, (placed, *others), size)
    where, bg = region_phrase(placed.region, rng), scene.background
    thing = rng.choice(("object", "shape"))
    with_others = f", with {objects_phrase(others, rng)}" if others else ""
    instruction = rng.choice(
        (
            f"put the {thing} from {IMG1} {where} of a {bg} background{with_others}",
            f"place the {thing} in {IMG1} {where} on a {bg} background{with_others}",
            f"{IMG1} draw this {thing} again {where} on a {bg} background{with_others}",
            f"the {thing} of {IMG1} {where}{with_others}, on a {bg} background",
        )
    )
    return build_sample("subject", "subject", instruction, [scene_picture(source)], scene_picture(scene), split)


def make_tryon(rng: random.Random, split: str, size: int) -> Sample:
    worn = random_garment(rng) if rng.random() < 0.5 else None
    person = Figure(random_pose(rng), worn, rng.choice(FIGURE_BACKGROUNDS), size)
    garment = random_garment(rng, exclude=worn)
    dressed = Figure(person.pose, garment, person.background, size)
    instruction = rng.choice(
        (
            f"{IMG1} the person wears the shirt from {IMG2}",
            f"dress the person in {IMG1} in the shirt of {IMG2}",
            f"the person in {IMG1} puts on the garment in {IMG2}",
            f"virtual try-on: the person in {IMG1} wearing {IMG2}",
            f"{IMG1} change the shirt to the one in {IMG2}",
        )
    )
    inputs = [figure_picture(person), garment_picture(garment, size)]
    return build_sample("tryon", "tryon", instruction, inputs, figure_picture(dressed), split)
