"""What people type and upload: captions that leave things out, counts, edits of uploaded pictures, and the
judge that checks only what was said."""

import random
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from omnigen.mini import tasks
from omnigen.mini.judge import judge, judge_spec
from omnigen.mini.tasks import FAMILIES, HELDOUT_FRAMES, generate
from omnigen.mini.world import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    REGIONS,
    SHAPES,
    SIZES,
    Photo,
    Scene,
    SceneObject,
    render_picture,
    render_scene,
    scene_layout_problem,
)

RED_CIRCLE = {"background": None, "objects": [{"shape": "circle", "color": "red", "size": None, "regions": None}]}


def spec_for(stated: dict) -> dict:
    return {"family": "caption", "task": "caption", "target": {"kind": "scene", "scene": {}}, "stated": stated}


def satisfies(scene: Scene, stated: dict) -> bool:
    """Whether a scene is what its words state, read from the scene itself (no pixels): the judge's meaning."""
    from itertools import permutations

    if stated["background"] not in (None, scene.background) or len(scene.objects) != len(stated["objects"]):
        return False

    def fits(o, s):
        return (s["shape"] in (None, o.shape) and s["color"] in (None, o.color) and s["size"] in (None, o.size)
                and (not s["regions"] or o.region in s["regions"]))

    return any(all(fits(scene.objects[i], s) for i, s in zip(order, stated["objects"]))
               for order in permutations(range(len(scene.objects))))


# ------------------------------------------------------------------------------------------- the judge


def test_a_caption_that_names_no_place_passes_wherever_its_object_is():
    spec = spec_for(RED_CIRCLE)
    for region in REGIONS:
        for size in SIZES:
            for background in BACKGROUND_COLORS:
                scene = Scene(background, (SceneObject("circle", "red", size, region),))
                assert judge_spec(spec, render_scene(scene)).passed, (region, size, background)
    wrong = {
        "blue circle": (SceneObject("circle", "blue", "large", "center"),),
        "red square": (SceneObject("square", "red", "large", "center"),),
        "two red circles": (SceneObject("circle", "red", "large", "top left"),
                            SceneObject("circle", "red", "small", "bottom right")),
        "a red circle and more": (SceneObject("circle", "red", "large", "top left"),
                                  SceneObject("square", "green", "small", "bottom right")),
        "nothing": (),
    }
    for name, objects in wrong.items():
        verdict = judge_spec(spec, render_scene(Scene("white", objects)))
        assert not verdict.passed and verdict.score < 1, name
    blank_grey = Image.new("RGB", (64, 64), (128, 128, 128))  # no world background at all
    assert not judge_spec(spec, blank_grey).details["checks"]["background"]


def test_a_stated_place_may_be_partial():
    stated = {"background": "white",
              "objects": [{"shape": "square", "color": None, "size": "small", "regions": ["top left", "top right"]}]}
    for region in REGIONS:
        scene = Scene("white", (SceneObject("square", "orange", "small", region),))
        assert judge_spec(spec_for(stated), render_scene(scene)).passed == region.startswith("top"), region
    on_grey = Scene("light grey", (SceneObject("square", "orange", "small", "top left"),))
    assert not judge_spec(spec_for(stated), render_scene(on_grey)).passed


def _changes(scene: Scene, rng: random.Random):
    """Every single change of one object (colour, shape, size, place), one object fewer or more, another background."""
    taken = {o.region for o in scene.objects}
    for index, o in enumerate(scene.objects):
        yield "colour", scene.objects[:index] + (replace(o, color=rng.choice([c for c in OBJECT_COLORS if c != o.color])),) + scene.objects[index + 1:]
        yield "shape", scene.objects[:index] + (replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape])),) + scene.objects[index + 1:]
        yield "size", scene.objects[:index] + (replace(o, size="small" if o.size == "large" else "large"),) + scene.objects[index + 1:]
        for region in REGIONS:
            if region not in taken:
                yield "place", scene.objects[:index] + (SceneObject(o.shape, o.color, o.size, region),) + scene.objects[index + 1:]
        yield "one fewer", scene.objects[:index] + scene.objects[index + 1:]
    for region in REGIONS:
        if region not in taken:
            yield "one more", scene.objects + (SceneObject(rng.choice(SHAPES), rng.choice(list(OBJECT_COLORS)), "small", region),)
    yield "background", None


@pytest.mark.parametrize("family", ["caption", "count"])
def test_the_judge_passes_exactly_the_pictures_the_words_allow(family):
    """Each sample's true picture, changed in every single way: the judge passes a change exactly when the
    changed scene still is what the words state (a caption naming no place passes the object moved; one
    naming a colour fails it recoloured). Both verdicts must be met many times."""
    rng = random.Random(family)
    outcomes = {True: 0, False: 0}
    for sample in generate(family, 15, seed=5, split="eval"):
        scene, stated = Scene.from_dict(sample.spec["target"]["scene"]), sample.spec["stated"]
        assert satisfies(scene, stated) and judge(sample, sample.output_image).passed, sample.instruction
        for change, objects in _changes(scene, rng):
            if objects is None:
                changed = Scene(rng.choice([b for b in BACKGROUND_COLORS if b != scene.background]), scene.objects)
            elif scene_layout_problem(objects, allow_repeats=True) is None:
                changed = Scene(scene.background, objects)
            else:
                continue
            expected = satisfies(changed, stated)
            verdict = judge(sample, render_scene(changed))
            assert verdict.passed == expected, (sample.instruction, change, changed, verdict.details)
            outcomes[expected] += 1
    assert outcomes[True] >= 20 and outcomes[False] >= 50, outcomes


def _wrong_photos(sample, rng: random.Random) -> dict[str, Image.Image]:
    target = sample.spec["target"]
    photo = Photo.from_dict(target["photo"])
    index = rng.randrange(len(photo.objects))
    o = photo.objects[index]
    unit = photo.canvas / 64

    def with_object(new):
        objects = photo.objects[:index] + ((new,) if new else ()) + photo.objects[index + 1 :]
        return render_picture({**target, "photo": photo.replace(objects=objects).to_dict()})

    other_colour = rng.choice([c for c in OBJECT_COLORS if c != o.color])
    wrong = {
        "blank": Image.new("RGB", (64, 64), BACKGROUND_COLORS[photo.background]),
        "noise": Image.fromarray(np.random.default_rng(rng.randrange(1000)).integers(0, 256, (64, 64, 3), np.uint8)),
        "wrong colour": with_object(replace(o, color=other_colour, rgb=OBJECT_COLORS[other_colour])),
        "wrong shape": with_object(replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape]))),
        "left out": with_object(None),
        "other background": render_picture({**target, "photo": photo.replace(
            background_rgb=BACKGROUND_COLORS[rng.choice([b for b in BACKGROUND_COLORS if b != photo.background])]
        ).to_dict()}),
    }
    # Moved by a third of the picture, where it stays inside it.
    dx = -22 if o.x / unit > 32 else 22
    wrong["moved"] = with_object(replace(o, x=o.x + dx * unit))
    return wrong


def test_the_judge_fails_wrong_edits_of_uploaded_pictures():
    rng = random.Random(0)
    failed = {}
    for sample in generate("upload_edit", 20, seed=6, split="train"):
        assert judge(sample, sample.output_image).passed
        if not sample.spec["target"]["photo"]["objects"]:
            continue  # the only object removed: a blank picture is right
        for name, image in _wrong_photos(sample, rng).items():
            if name == "other background" and sample.task == "background":
                continue  # the edit's own background may be the one drawn
            verdict = judge(sample, image)
            assert not verdict.passed, (name, sample.instruction, verdict.details)
            failed[name] = failed.get(name, 0) + 1
    assert len(failed) == 7


# ------------------------------------------------------------------------------------------- the data


def _frame_words(frame: str) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", frame.replace("{}", " ")) if w]


def test_held_out_phrasings_never_occur_in_training_and_the_heldout_split_uses_them():
    training = [s.instruction.lower() for family in FAMILIES for s in generate(family, 150, seed=0)]
    for frame in HELDOUT_FRAMES:
        lead = " ".join(_frame_words(frame))
        assert not any(re.search(rf"\b{lead}\b", text) for text in training), frame
    for sample in generate("caption", 60, seed=0, split="heldout"):
        text = sample.instruction.lower()
        assert any(text.startswith(" ".join(_frame_words(f.split("{}")[0])) + " ") for f in HELDOUT_FRAMES
                   if f.split("{}")[0]) or any(text.rstrip(".!?").endswith(f.split("{}")[1].strip())
                                               for f in HELDOUT_FRAMES if f.split("{}")[1].strip()), text


def test_captions_range_from_everything_to_a_few_words():
    def unsaid(stated):
        # the background, and each object's size or exact place ("in a corner" names four places)
        return (stated["background"] is None) + sum(o["size"] is None or not o["regions"] or len(o["regions"]) > 1
                                                    for o in stated["objects"])

    train = generate("caption", 300, seed=0)
    assert sum(unsaid(s.spec["stated"]) == 0 for s in train) >= 10  # some say everything (18 of these 300)
    shortest = [s.instruction for s in train if len(s.spec["target"]["scene"]["objects"]) == 1
                and unsaid(s.spec["stated"]) == 2]
    assert len(shortest) >= 10 and min(len(t.split()) for t in shortest) <= 4, shortest[:5]
    assert any(t[0].isupper() for t in shortest) and any(t.endswith(".") for t in (s.instruction for s in train))
    for sample in generate("caption", 100, seed=1, split="eval"):
        assert unsaid(sample.spec["stated"]) >= 1, sample.instruction
        scene = Scene.from_dict(sample.spec["target"]["scene"])
        assert satisfies(scene, sample.spec["stated"])
        for obj, said in zip(scene.objects, sample.spec["stated"]["objects"]):
            for key in ("color", "shape"):  # what is said is in the words
                assert said[key] is None or said[key] in sample.instruction.lower()


def test_counts_name_how_many_and_the_picture_holds_that_many():
    numbers = {"two": 2, "2": 2, "pair": 2, "three": 3, "3": 3}
    for sample in generate("count", 60, seed=2, split="eval"):
        scene = Scene.from_dict(sample.spec["target"]["scene"])
        words = re.findall(r"[a-z0-9]+", sample.instruction.lower())
        assert max(numbers.get(w, 1) for w in words) >= 2, sample.instruction
        assert len(scene.objects) == len(sample.spec["stated"]["objects"]) <= 3
        assert satisfies(scene, sample.spec["stated"]), sample.instruction
    repeated = [s for s in generate("count", 60, seed=2) if
                len({(o["color"], o["shape"]) for o in s.spec["target"]["scene"]["objects"]})
                < len(s.spec["target"]["scene"]["objects"])]
    assert repeated, "some counts repeat one colour and shape (two blue squares)"


def test_uploaded_pictures_come_in_many_sizes_places_and_qualities():
    samples = generate("upload_edit", 80, seed=3)
    sizes = {s.input_images[0].size for s in samples}
    assert len(sizes) >= 6 and all(w == h and 64 <= w <= 320 for w, h in sizes)
    photos = [Photo.from_dict(s.spec["inputs"][0]["photo"]) for s in samples]
    assert any(p.noise for p in photos) and any(p.jpeg for p in photos) and any(not p.noise and not p.jpeg for p in photos)
    halves = [o.half * 64 / p.canvas for p in photos for o in p.objects]
    assert min(halves) < 6 and max(halves) > 12  # smaller and larger than the world's two sizes (5 and 9)
    assert {s.task for s in samples} == set(tasks.UPLOAD_EDITS)
    assert {s.task for s in generate("upload_edit", 30, seed=3, split="eval")} == {"recolour"}
    for sample in samples[:10]:
        clean = Photo.from_dict(sample.spec["target"]["photo"])
        assert clean.noise == 0 and clean.jpeg == 0 and sample.output_image.size == (64, 64)


def test_the_vae_sees_uploaded_pictures_at_the_native_size():
    from omnigen.mini.autoencoder import world_images

    rng = random.Random(0)
    images = world_images(rng, 400)
    assert {image.size for image in images} == {(64, 64)}
