"""X2I-mini: procedural samples of every OmniGen task family in the miniature world.

Each family draws a random spec (scenes, figures, an edit, a transformation), words an instruction
from a pool of phrasings, and renders the input and output pictures from the spec. The spec is kept
in the sample (JSON-serialisable) so that the judge can re-render and check a generated image.

Held-out colour-shape pairs (HELDOUT_PAIRS) never appear in any picture of the "train" and "eval"
splits; the "heldout" split of text_to_image and edit makes samples whose output holds one of them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from ..files import atomic_write_text
from .world import (
    ARM_POSES,
    BACKGROUND_COLORS,
    DEFAULT_SIZE,
    FIGURE_BACKGROUNDS,
    LEANS,
    LEG_POSES,
    MARKER_COLOR,
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
    mirror_scene,
    render_picture,
    scene_layout_problem,
    segmentation_target,
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
)
SPLITS = ("train", "eval", "heldout")
HELDOUT_FAMILIES = ("text_to_image", "edit")
# Colour-shape pairs kept out of training: each shape and four different colours.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "square"),
    ("blue", "circle"),
    ("yellow", "triangle"),
)
ALL_PAIRS = tuple((c, s) for c in OBJECT_COLORS for s in SHAPES)
SEEN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HELDOUT_PAIRS)
FEWSHOT_TRANSFORMS = ("recolour", "flip", "background", "edges", "depth", "skeleton")
RESTORE_TASKS = ("denoise", "deblur", "colourise")


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


def _pick(rng: random.Random, options: Sequence[str], weights: Mapping[str, float] | None) -> str:
    """A uniform choice, or one in proportion to `weights` (a missing option weighs 1)."""
    if not weights:
        return rng.choice(options)  # the unweighted draw is kept as it was: the seeded eval sets depend on it
    return rng.choices(options, [weights.get(o, 1.0) for o in options])[0]


# ----------------------------------------------------------------------------------------------
# Random specs


def _check_split(family: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if split == "heldout" and family not in HELDOUT_FAMILIES:
        raise ValueError(f"split 'heldout' exists only for {list(HELDOUT_FAMILIES)}, not for {family!r}")


def _has_heldout(scene: Scene) -> bool:
    return any(o.pair in HELDOUT_PAIRS for o in scene.objects)


def random_object(rng: random.Random, pairs: Sequence[tuple[str, str]], region: str) -> SceneObject:
    color, shape = rng.choice(list(pairs))
    return SceneObject(shape, color, rng.choice(SIZES), region)


def random_scene(
    rng: random.Random,
    size: int,
    pairs: Sequence[tuple[str, str]] = SEEN_PAIRS,
    n_objects: int | None = None,
    backgrounds: Sequence[str] = tuple(BACKGROUND_COLORS),
    distinct_shapes: bool = False,
) -> Scene:
    """A valid random scene; redraws until the objects fit (distinct regions, pairs, no touching)."""
    count = n_objects if n_objects is not None else rng.randint(1, 3)
    while True:
        regions = rng.sample(REGIONS, count)
        objects = tuple(random_object(rng, pairs, region) for region in regions)
        if distinct_shapes and len({o.shape for o in objects}) != len(objects):
            continue
        if scene_layout_problem(objects) is None:
            return Scene(rng.choice(list(backgrounds)), objects, size)


def random_pose(rng: random.Random) -> Pose:
    return Pose(rng.choice(ARM_POSES), rng.choice(ARM_POSES), rng.choice(LEG_POSES), rng.choice(LEANS))


def random_garment(rng: random.Random, exclude: Garment | None = None) -> Garment:
    while True:
        garment = Garment(rng.choice(list(OBJECT_COLORS)), rng.choice(PATTERNS))
        if garment != exclude:
            return garment


def _fits(objects: Sequence[SceneObject]) -> bool:
    return scene_layout_problem(tuple(objects)) is None


# ----------------------------------------------------------------------------------------------
# Wording

_REGION_WORDS = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
    "center": ("in the center", "in the middle", "at the center"),
}
_REGION_TARGETS = {
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


def _colour_word(rng: random.Random) -> str:
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


# ----------------------------------------------------------------------------------------------
# Families


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
            if _fits(objects):
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
    if not _fits(objects):
        return None
    new_scene = Scene(scene.background, objects, scene.size)
    ref = refer(scene, index, rng)
    colour = _colour_word(rng)
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
    if not _fits(objects):
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
        if _fits(scene.objects[:index] + (moved,) + scene.objects[index + 1 :]):
            ref, where = refer(scene, index, rng), rng.choice(_REGION_TARGETS[region])
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
        operation = _pick(rng, operations, task_weights)
        n_objects = rng.randint(1, 2) if operation == "add" else rng.randint(1, 3)
        scene = random_scene(rng, size, n_objects=n_objects)
        result = EDIT_OPERATIONS[operation](scene, rng, out_pairs)
        if result is None:
            continue
        task, edited, instruction = result
        if _has_heldout(edited) == (split == "heldout"):
            return build_sample("edit", task, instruction, [scene_picture(scene)], scene_picture(edited), split)


def make_subject(rng: random.Random, split: str, size: int) -> Sample:
    source = random_scene(rng, size, n_objects=1)
    subject = source.objects[0]
    while True:
        target = random_scene(rng, size, n_objects=rng.randint(1, 3))
        placed = SceneObject(subject.shape, subject.color, subject.size, target.objects[0].region)
        others = tuple(o for o in target.objects[1:] if o.pair != subject.pair)
        if _fits((placed, *others)):
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


def make_pose(rng: random.Random, split: str, size: int) -> Sample:
    garment = random_garment(rng) if rng.random() < 0.8 else None
    figure = Figure(random_pose(rng), garment, rng.choice(FIGURE_BACKGROUNDS), size)
    wearing, bg = garment_phrase(garment, rng), figure.background
    instruction = rng.choice(
        (
            f"{IMG1} a person wearing {wearing} in this pose on a {bg} background",
            f"generate a person in the pose of {IMG1}, wearing {wearing}, {bg} background",
            f"following the skeleton in {IMG1}, draw a person in {wearing} on a {bg} background",
            f"a person with {wearing} standing like the skeleton in {IMG1}, on a {bg} background",
        )
    )
    inputs = [skeleton_picture(figure.pose, size)]
    return build_sample("pose", "pose", instruction, inputs, figure_picture(figure), split)


def make_pose_extract(rng: random.Random, split: str, size: int) -> Sample:
    pose = random_pose(rng)
    garment = random_garment(rng) if rng.random() < 0.7 else None
    figure = Figure(pose, garment, rng.choice(FIGURE_BACKGROUNDS), size)
    instruction = rng.choice(
        (
            f"{IMG1} detect the human pose",
            f"extract the skeleton of the person in {IMG1}",
            f"draw the pose of {IMG1} as a skeleton map",
            f"{IMG1} estimate the pose of the person",
            f"{IMG1} draw the skeleton of this person",
            f"find the joints of the person in {IMG1} and draw the skeleton",
        )
    )
    target = skeleton_picture(figure.pose, size)
    return build_sample("pose_extract", "pose_extract", instruction, [figure_picture(figure)], target, split)


def _conditioned_scene(
    family: str, map_kind: str, map_names: Sequence[str], rng: random.Random, split: str, size: int
) -> Sample:
    # Shapes are distinct so the map tells which named object goes where.
    scene = random_scene(rng, size, distinct_shapes=True)
    objs, bg = objects_phrase(scene.objects, rng, with_size=False, with_region=False), scene.background
    name = rng.choice(map_names)
    instruction = rng.choice(
        (
            f"following the {name} {IMG1}, generate {objs} on a {bg} background",
            f"{IMG1} is {with_article(name)}. draw {objs} on a {bg} background",
            f"generate an image from the {name} in {IMG1}: {objs} on a {bg} background",
            f"{objs} on a {bg} background, following {IMG1}",
        )
    )
    return build_sample(family, family, instruction, [scene_picture(scene, map_kind)], scene_picture(scene), split)


def make_depth(rng: random.Random, split: str, size: int) -> Sample:
    return _conditioned_scene("depth", "depth", ("depth map", "depth image"), rng, split, size)


def make_edges(rng: random.Random, split: str, size: int) -> Sample:
    return _conditioned_scene("edges", "edges", ("edge map", "canny edge map", "line drawing"), rng, split, size)


def make_depth_extract(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    instruction = rng.choice(
        (
            f"{IMG1} estimate the depth map",
            f"generate the depth map of {IMG1}",
            f"predict the depth of {IMG1}",
            f"{IMG1} show how far each object is as a depth map",
            f"{IMG1} depth estimation",
            f"draw a depth map of {IMG1}, near objects bright",
        )
    )
    target = scene_picture(scene, "depth")
    return build_sample("depth_extract", "depth_extract", instruction, [scene_picture(scene)], target, split)


def make_edges_extract(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    instruction = rng.choice(
        (
            f"{IMG1} detect the edges",
            f"extract the canny edge map of {IMG1}",
            f"draw the edges of {IMG1}",
            f"{IMG1} turn this picture into an edge map",
            f"{IMG1} edge detection",
            f"find the outlines in {IMG1} and draw them white on black",
        )
    )
    target = scene_picture(scene, "edges")
    return build_sample("edges_extract", "edges_extract", instruction, [scene_picture(scene)], target, split)


def make_segment(rng: random.Random, split: str, size: int) -> Sample:
    scene = random_scene(rng, size)
    index = rng.randrange(len(scene.objects))
    ref = refer(scene, index, rng)
    instruction = rng.choice(
        (
            f"find {ref} in {IMG1} and mark it in {MARKER_COLOR}",
            f"{IMG1} segment {ref}",
            f"highlight {ref} in {IMG1}",
            f"{IMG1} colour {ref} {MARKER_COLOR} to show where it is",
            f"where is {ref} in {IMG1}? paint it {MARKER_COLOR}",
        )
    )
    target = segmentation_target(scene, index)
    inputs = [scene_picture(scene)]
    return build_sample("segment", "segment", instruction, inputs, scene_picture(target), split, referred=index)


def make_restore(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    task = _pick(rng, RESTORE_TASKS, task_weights)
    if task == "denoise":
        scene = random_scene(rng, size)
        degraded = scene_picture(scene, "noisy", sigma=round(rng.uniform(30.0, 50.0), 1), seed=rng.randrange(2**31))
        wording = (
            f"{IMG1} remove the noise",
            f"denoise {IMG1}",
            f"clean up the noisy picture {IMG1}",
            f"{IMG1} make this noisy image clean",
        )
    elif task == "deblur":
        scene = random_scene(rng, size)
        degraded = scene_picture(scene, "blurred", sigma=round(rng.uniform(2.0, 3.0), 2))
        wording = (
            f"{IMG1} deblur this image",
            f"sharpen the blurry picture {IMG1}",
            f"{IMG1} remove the blur",
            f"make {IMG1} sharp",
        )
    else:
        # White only: the grey levels of the light backgrounds are too close to tell them apart.
        scene = random_scene(rng, size, backgrounds=("white",))
        degraded = scene_picture(scene, "grey")
        wording = (
            f"colourise {IMG1}",
            f"colorize {IMG1}",
            f"{IMG1} add colour to this black and white image",
            f"restore the colours of {IMG1}",
        )
    return build_sample("restore", task, rng.choice(wording), [degraded], scene_picture(scene), split)


# Few-shot: the transformation is shown only by the example pairs, never named.

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
            scene = random_scene(rng, size, pairs=[p for p in SEEN_PAIRS if p[0] == source or rng.random() < 0.5])
            recoloured = tuple(
                SceneObject(o.shape, target, o.size, o.region) if o.color == source else o
                for o in scene.objects
            )
            if any(o.color == source for o in scene.objects) and _fits(recoloured):
                out = Scene(scene.background, recoloured, size)
                if not _has_heldout(out):
                    return scene_picture(scene), scene_picture(out)
        else:
            raise ValueError(f"unknown few-shot transformation {transform!r}; choose one of {list(FEWSHOT_TRANSFORMS)}")


def make_fewshot(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    transform = _pick(rng, FEWSHOT_TRANSFORMS, task_weights)
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
}
# The families whose sub-task `make_sample(task_weights=...)` can weight, and their sub-tasks.
SUB_TASKS: dict[str, tuple[str, ...]] = {
    "edit": tuple(EDIT_OPERATIONS),
    "restore": RESTORE_TASKS,
    "fewshot": FEWSHOT_TRANSFORMS,
}


# ----------------------------------------------------------------------------------------------
# Public API


def make_sample(
    family: str,
    rng: random.Random,
    split: str = "train",
    size: int = DEFAULT_SIZE,
    task_weights: Mapping[str, float] | None = None,
) -> Sample:
    """One random sample of a task family, drawn from `rng`.

    `task_weights` ({sub-task: weight}, for the families in SUB_TASKS) draws the sub-task in those proportions
    (a sub-task left out weighs 1) instead of uniformly. The training pool uses it to show more of what the
    model finds hard; the evaluation sets never pass it, so they do not change with it.
    """
    if family not in _MAKERS:
        raise ValueError(f"unknown task family {family!r}; choose one of {list(FAMILIES)}")
    _check_split(family, split)
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
