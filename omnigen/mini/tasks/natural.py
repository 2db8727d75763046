"""What people type and upload: captions that leave things out, counts, and edits of pictures from outside the
world's grid.

- caption: text-to-image from a caption of any detail. The same scene may be asked for with every size,
  place and the background named, or as "a red circle". What a caption leaves out is drawn by the
  convention (`FILLS`): large, in the middle (several objects: left to right, top row first), orange or a
  circle, on white; or, with fill="random", at random. Places may be partial ("in a corner", "on the left"), words
  vary ("tiny", "big", "on white", "a picture of", capitals, a full stop). The "eval" split holds only captions
  that leave something out; the "heldout" split frames them in phrasings no training caption uses.
- count: "two blue squares", "three circles", "two triangles and a red circle": up to three objects, the same
  colour and shape repeated where the caption says so.
- upload_edit: recolour, remove and background edits of a `Photo` (any canvas size, objects of any size at
  any place, smooth edges, colours near the palette's, mild noise or JPEG); the target is the edited picture
  as the model's 64-pixel output. Its "eval" split holds recolours only.

The convention exists because random filling gives the same words thousands of right pictures, and an
undertrained model draws their average, a plain canvas; one right picture is learnt far faster. The words of a
sample do not depend on the fill (both draw the same random numbers for them), so the evaluation sets and
their judge are the same under either.

Every sample's spec carries `stated`: what the caption or instruction constrains, which the judge checks
and nothing more (a caption that names no place passes wherever its object is).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..world import (
    BACKGROUND_COLORS,
    DEFAULT_SIZE,
    OBJECT_COLORS,
    REGIONS,
    SHAPES,
    Photo,
    PhotoObject,
    Scene,
    SceneObject,
    scene_layout_problem,
)
from .specs import IMG1, SEEN_PAIRS, Sample, TaskWeights, build_sample, pick, random_scene, scene_picture
from .wording import colour_word, region_phrase, with_article

NATURAL_FAMILIES = ("caption", "count", "upload_edit")

# How a target fills in what its words leave out: "convention" (one right picture) or "random".
FILLS = ("convention", "random")
DEFAULT_FILL = "convention"
# The convention, in order of preference: the first choice that fits the words and the scene is taken.
CONVENTION_SIZES = ("large", "small")
CONVENTION_COLORS = ("orange", "purple", "red", "green", "blue", "yellow")
CONVENTION_SHAPES = ("circle", "square", "triangle")
CONVENTION_BACKGROUND = "white"
# Places for objects whose place is unsaid: one alone in the middle, several left to right, top row first.
CONVENTION_PLACES = {1: ("center", "top left", "top right", "bottom left", "bottom right"),
                     2: ("top left", "top right", "bottom left", "bottom right", "center"),
                     3: ("top left", "top right", "bottom left", "bottom right", "center")}
CONVENTION_SENTENCE = ("what you leave out is drawn large, in the middle (several objects left to right), "
                       "orange or a circle, on white")

# ----------------------------------------------------------------------------------------------
# Words

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
# Places a caption may name only in part, and the regions each allows.
PARTIAL_PLACES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "corner": (("in a corner", "in the corner", "in one corner"), ("top left", "top right", "bottom left", "bottom right")),
    "top": (("at the top", "near the top"), ("top left", "top right")),
    "bottom": (("at the bottom", "near the bottom"), ("bottom left", "bottom right")),
    "left": (("on the left", "on the left side"), ("top left", "bottom left")),
    "right": (("on the right", "on the right side"), ("top right", "bottom right")),
}
NUMBER_WORDS = {1: ("one", "a", "1"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "shape": "shapes", "object": "objects"}

# Framings of a caption. The held-out ones never occur in training: the "heldout" split asks with them.
TRAIN_FRAMES = (
    "{}", "{}", "{}", "a picture of {}", "an image of {}", "draw {}", "please draw {}", "generate {}",
    "a drawing of {}", "{} please", "make a picture of {}", "a photo of {}", "render {}", "an illustration of {}",
)
HELDOUT_FRAMES = (
    "show me {}", "can you sketch {}?", "i would like {}", "create {}", "could you depict {}?",
    "give me {}", "i want to see {}", "here is {}",
)


def background_phrase(background: str, rng: random.Random) -> str:
    return rng.choice((f"on a {background} background", f"on {background}", f"with a {background} background",
                       f", {background} background", f"on a plain {background} background"))


def place_phrase(region: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """A phrase for where an object is, exact or partial, and the regions it allows."""
    partial = [name for name, (_, regions) in PARTIAL_PLACES.items() if region in regions]
    if partial and rng.random() < 0.4:
        phrases, regions = PARTIAL_PLACES[rng.choice(partial)]
        return rng.choice(phrases), regions
    return region_phrase(region, rng), (region,)


def dress(text: str, rng: random.Random, frames: Sequence[str] = TRAIN_FRAMES) -> str:
    """A caption in everyday form: a framing, and maybe a capital, a full stop or an exclamation mark."""
    text = rng.choice(frames).format(text).replace(" , ", ", ").replace("  ", " ").strip()
    roll = rng.random()
    if roll < 0.3:
        text = text[0].upper() + text[1:]
    elif roll < 0.35:
        text = text.upper()
    if not text.endswith("?"):
        text += rng.choice(("", "", "", ".", "!"))
    return text


def stated_object(shape=None, color=None, size=None, regions=None) -> dict:
    return {"shape": shape, "color": color, "size": size, "regions": list(regions) if regions else None}


# ----------------------------------------------------------------------------------------------
# caption


def caption_scene(scene: Scene, rng: random.Random, leave_out_something: bool, with_order: bool = False):
    """Words for a scene that may leave out sizes, places, colours, shapes or the background; and what
    they state. With `leave_out_something`, at least one size, place or the background goes unsaid.
    With `with_order`, also the order in which the text names the scene's objects."""
    while True:
        detail = rng.random()  # how much this caption says, from "a circle" to everything
        name_background = rng.random() < 0.3 + 0.5 * detail
        phrases, stated = [], []
        for obj in scene.objects:
            say_size = rng.random() < 0.15 + 0.6 * detail
            say_place = rng.random() < 0.15 + 0.7 * detail
            say_color = rng.random() < 0.92
            say_shape = rng.random() < 0.92 or not say_color
            words = []
            if say_size:
                words.append(rng.choice(SIZE_WORDS[obj.size]))
            if say_color:
                words.append(obj.color)
            words.append(obj.shape if say_shape else rng.choice(("shape", "object")))
            regions = None
            if say_place:
                where, regions = place_phrase(obj.region, rng)
                words.append(where)
            phrases.append(with_article(" ".join(words)))
            stated.append(stated_object(obj.shape if say_shape else None, obj.color if say_color else None,
                                        obj.size if say_size else None, regions))
        complete = name_background and all(s["size"] and s["regions"] == [o.region]
                                           for s, o in zip(stated, scene.objects))
        if not (leave_out_something and complete):
            break
    order = list(range(len(phrases)))
    rng.shuffle(order)
    text = _join([phrases[i] for i in order])
    if name_background:
        text = f"{text} {background_phrase(scene.background, rng)}"
    # `stated` keeps the scene's order (the judge matches in any order; a test can then change one object)
    spec = {"background": scene.background if name_background else None, "objects": stated}
    return (text, spec, order) if with_order else (text, spec)


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_caption(rng: random.Random, split: str, size: int, fill: str = DEFAULT_FILL) -> Sample:
    _check_fill(fill)
    scene = random_scene(rng, size)
    text, stated, order = caption_scene(scene, rng, leave_out_something=split != "train", with_order=True)
    instruction = dress(text, rng, HELDOUT_FRAMES if split == "heldout" else TRAIN_FRAMES)
    if fill == "convention":
        scene = conventional_scene(stated, [order.index(i) for i in range(len(order))], scene)
    return build_sample("caption", "caption", instruction, [], scene_picture(scene), split, stated=stated)


def _check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {list(FILLS)}, got {fill!r}")


def conventional_scene(stated: dict, text_position: Sequence[int], fallback: Scene,
                       allow_repeats: bool = False) -> Scene:
    """The one scene the convention draws for these words: every stated attribute as stated, every unstated one
    by preference (CONVENTION_*), objects placed in the order the words name them (`text_position[i]` is
    where object i of `stated` stands in the text). When no conventional scene fits, `fallback` is returned."""
    described = stated["objects"]
    order = sorted(range(len(described)), key=lambda i: text_position[i])
    places = CONVENTION_PLACES[len(described)]
    for sizes in (CONVENTION_SIZES, CONVENTION_SIZES[::-1]):  # every unsaid size large, else every one small
        placed: dict[int, SceneObject] = {}
        for i in order:
            obj = _conventional_object(described[i], sizes[0], places, list(placed.values()), allow_repeats)
            if obj is None:
                break
            placed[i] = obj
        else:
            background = stated["background"] or CONVENTION_BACKGROUND
            return Scene(background, tuple(placed[i] for i in range(len(described))), fallback.size)
    return fallback


def named_sample(prompt: str, pairs: Sequence[tuple[str, str]], size: int = DEFAULT_SIZE) -> Sample:
    """A caption (one object) or count (several) of `prompt`, which names only these (colour, shape) pairs and
    nothing of size, place or background: the judge checks the pairs, and the target is the convention's picture."""
    if len(pairs) not in CONVENTION_PLACES:
        raise ValueError(f"{prompt!r} names {len(pairs)} objects; a scene holds {min(CONVENTION_PLACES)} to "
                         f"{max(CONVENTION_PLACES)}")
    stated = {"background": None, "objects": [stated_object(shape, color) for color, shape in pairs]}
    fallback = Scene(CONVENTION_BACKGROUND, (), size)
    scene = conventional_scene(stated, list(range(len(pairs))), fallback, allow_repeats=True)
    if scene is fallback:
        raise ValueError(f"the convention draws no scene for {prompt!r}")
    family = "caption" if len(pairs) == 1 else "count"
    return build_sample(family, family, prompt, [], scene_picture(scene), "train", stated=stated)


def _conventional_object(words: dict, size: str, places: Sequence[str], others: list[SceneObject],
                         allow_repeats: bool) -> SceneObject | None:
    """The first object by preference that matches `words` and fits beside `others` (a place named in part
    allows its regions; an unsaid place any)."""
    # Colour first, then shape: "a shape" is an orange circle, "a red shape" a red circle, "a square" orange.
    pairs = [(c, s) for c in CONVENTION_COLORS for s in CONVENTION_SHAPES if (c, s) in SEEN_PAIRS
             and words["color"] in (None, c) and words["shape"] in (None, s)]
    regions = [r for r in places if words["regions"] is None or r in words["regions"]]
    for color, shape in pairs:
        for region in regions:
            obj = SceneObject(shape, color, words["size"] or size, region)
            if scene_layout_problem(tuple(others) + (obj,), allow_repeats=allow_repeats) is None:
                return obj
    return None


# ----------------------------------------------------------------------------------------------
# count


def make_count(rng: random.Random, split: str, size: int, fill: str = DEFAULT_FILL) -> Sample:
    """One or two groups of objects, at least one counted ("two blue squares and a red circle")."""
    _check_fill(fill)
    while True:
        first = rng.choice((2, 2, 3))
        counts = [first] + ([1] if first == 2 and rng.random() < 0.4 else [])
        groups = []
        for count in counts:
            say_color, say_shape = rng.random() < 0.7, rng.random() < 0.85
            color = rng.choice(list(OBJECT_COLORS)) if say_color else None
            shape = rng.choice(SHAPES) if say_shape else None
            if not say_color and not say_shape:
                shape = rng.choice(SHAPES)
            options = [(c, s) for c, s in SEEN_PAIRS if color in (None, c) and shape in (None, s)]
            if not options:
                break
            size_word = rng.choice(("small", "large")) if rng.random() < 0.2 else None
            groups.append((count, color, shape, size_word, options))
        else:
            scene = _count_scene(rng, size, groups)
            if scene is not None:
                break
    phrases, stated = [], []
    for count, color, shape, size_word, _ in groups:
        noun = shape or rng.choice(("shape", "object"))
        words = [rng.choice(NUMBER_WORDS[count])] if count > 1 else [rng.choice(("a", "one"))]
        if size_word:
            words.append(rng.choice(SIZE_WORDS[size_word]))
        if color:
            words.append(color)
        words.append(PLURAL[noun] if count > 1 else noun)
        phrase = " ".join(words)
        phrases.append(with_article(phrase[2:]) if phrase.startswith("a ") else phrase)
        stated += [stated_object(shape, color, size_word)] * count
    text = _join(phrases)
    name_background = rng.random() < 0.35
    if name_background:
        text = f"{text} {background_phrase(scene.background, rng)}"
    stated_spec = {"background": scene.background if name_background else None, "objects": stated}
    instruction = dress(text, rng)
    if fill == "convention":
        scene = _conventional_count(stated_spec, groups, scene)
    return build_sample("count", "count", instruction, [], scene_picture(scene), split, stated=stated_spec)


def _conventional_count(stated: dict, groups, fallback: Scene) -> Scene:
    """The convention's scene for a count: the groups in the order the words name them, left to right, top row
    first; a group's unsaid colour, shape and size by preference, the same for all its members; no object that
    also fits another group's words (the count stays exact)."""
    scene = conventional_scene(stated, list(range(len(stated["objects"]))), fallback, allow_repeats=True)
    if scene is fallback or not _groups_distinct(list(scene.objects), groups):
        return fallback
    return scene


def _count_scene(rng: random.Random, size: int, groups) -> Scene | None:
    """A scene holding exactly these groups (their unsaid colours, shapes and sizes drawn at random)."""
    for _ in range(50):
        total = sum(g[0] for g in groups)
        regions = rng.sample(REGIONS, total)
        objects, k = [], 0
        for count, _, _, size_word, options in groups:
            for _ in range(count):  # a group naming colour and shape has one option: its pair, repeated
                color, shape = rng.choice(options)
                objects.append(SceneObject(shape, color, size_word or rng.choice(("small", "large")), regions[k]))
                k += 1
        # No object may also fit another group's words: "two squares and a red circle" holds no red square.
        if scene_layout_problem(tuple(objects), allow_repeats=True) is None and _groups_distinct(objects, groups):
            return Scene(rng.choice(list(BACKGROUND_COLORS)), tuple(objects), size)
    return None


def _groups_distinct(objects: list[SceneObject], groups) -> bool:
    """No object of one group also matches another group's description (counts stay exact)."""
    k = 0
    for index, (count, color, shape, size_word, _) in enumerate(groups):
        members = objects[k : k + count]
        for other_index, (_, other_color, other_shape, other_size, _) in enumerate(groups):
            if other_index != index and any(
                other_color in (None, o.color) and other_shape in (None, o.shape) and other_size in (None, o.size)
                for o in members
            ):
                return False
        k += count
    return True


# ----------------------------------------------------------------------------------------------
# upload_edit

UPLOAD_EDITS = ("recolour", "remove", "background")


def random_photo(rng: random.Random, n_objects: int, pairs: Sequence[tuple[str, str]] = SEEN_PAIRS) -> Photo:
    """A picture as a user might upload one: any canvas from 64 to 320 pixels, one to three shapes of any size
    at any place (never touching, each pair once), colours a little off the palette's, maybe noisy or JPEG."""
    canvas = rng.choice((64, 80, 96, 128, 128, 160, 192, 200, 256, 256, 300, 320))
    unit = canvas / 64  # sizes and gaps are chosen on a 64 scale, as the model will see them
    while True:
        objects = []
        for _ in range(n_objects):
            color, shape = rng.choice(list(pairs))
            half = rng.uniform(5.0, 20.0 if n_objects == 1 else 13.0)
            x, y = rng.uniform(half + 2, 61 - half), rng.uniform(half + 2, 61 - half)
            objects.append(PhotoObject(shape, color, x * unit, y * unit, half * unit, _jitter(OBJECT_COLORS[color], rng, 14)))
        if len({o.pair for o in objects}) == len(objects) and _apart(objects, 3 * unit):
            break
    background = rng.choice(list(BACKGROUND_COLORS))
    degradation = rng.random()
    noise = rng.uniform(2.0, 8.0) if degradation < 0.3 else 0.0
    jpeg = rng.randint(35, 85) if 0.3 <= degradation < 0.55 else 0
    return Photo(background, _jitter(BACKGROUND_COLORS[background], rng, 8), canvas, tuple(objects), noise, jpeg,
                 rng.randrange(2**31))


def _jitter(rgb, rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(max(c + rng.randint(-amount, amount), 0), 255) for c in rgb)


def _apart(objects: Sequence[PhotoObject], gap: float) -> bool:
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            if abs(a.x - b.x) < a.half + b.half + gap and abs(a.y - b.y) < a.half + b.half + gap:
                return False
    return True


def refer_photo(photo: Photo, index: int, rng: random.Random) -> str:
    """A phrase that picks out object `index` by colour and shape, or by either where it alone has it."""
    obj = photo.objects[index]
    options = [f"the {obj.color} {obj.shape}"] * 2
    if sum(o.color == obj.color for o in photo.objects) == 1:
        options.append(f"the {obj.color} object")
    if sum(o.shape == obj.shape for o in photo.objects) == 1:
        options += [f"the {obj.shape}"] * 2
    return rng.choice(options)


def make_upload_edit(rng: random.Random, split: str, size: int, task_weights: TaskWeights = None) -> Sample:
    operations = ("recolour",) if split != "train" else UPLOAD_EDITS
    while True:
        operation = pick(rng, operations, task_weights)
        photo = random_photo(rng, rng.choice((1, 1, 2, 3)) if operation != "remove" else rng.choice((1, 2, 2, 3)))
        index = rng.randrange(len(photo.objects))
        obj, ref = photo.objects[index], refer_photo(photo, index, rng)
        if operation == "recolour":
            colors = [c for c, s in SEEN_PAIRS if s == obj.shape and c != obj.color
                      and (c, s) not in {o.pair for o in photo.objects}]
            if not colors:
                continue
            color = rng.choice(colors)
            new = PhotoObject(obj.shape, color, obj.x, obj.y, obj.half, OBJECT_COLORS[color])
            edited = photo.replace(objects=photo.objects[:index] + (new,) + photo.objects[index + 1 :])
            instruction = rng.choice((
                f"{IMG1} make {ref} {color}", f"{IMG1} change {ref} to {color}",
                f"change the {colour_word(rng)} of {ref} in {IMG1} to {color}", f"{IMG1} turn {ref} {color}",
                f"in {IMG1}, recolour {ref} {color}", f"paint {ref} in {IMG1} {color}",
                f"{IMG1} make {ref} {color} please", f"{IMG1} {ref} should be {color}",
            ))
        elif operation == "remove":
            edited = photo.replace(objects=photo.objects[:index] + photo.objects[index + 1 :])
            instruction = rng.choice((f"{IMG1} remove {ref}", f"delete {ref} from {IMG1}", f"{IMG1} erase {ref}",
                                      f"take {ref} out of {IMG1}"))
        else:
            background = rng.choice([b for b in BACKGROUND_COLORS if b != photo.background])
            edited = photo.replace(background=background, background_rgb=BACKGROUND_COLORS[background])
            instruction = rng.choice((f"{IMG1} change the background to {background}",
                                      f"make the background of {IMG1} {background}",
                                      f"{IMG1} replace the background with {background}"))
        # The target is clean: what the model gives back is the edited picture, not its noise.
        target = {"kind": "photo", "photo": edited.replace(noise=0.0, jpeg=0).to_dict(), "size": size}
        return build_sample("upload_edit", operation, dress_edit(instruction, rng),
                            [{"kind": "photo", "photo": photo.to_dict()}], target, split)


def dress_edit(instruction: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:
        instruction = instruction[0].upper() + instruction[1:] if not instruction.startswith("<") else instruction
    return instruction + rng.choice(("", "", ".", "!"))
