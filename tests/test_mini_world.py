"""The X2I-mini world and its task generators: layout rules, renderers, determinism, valid samples,
held-out pairs, the fine-tuning JSONL and the preset examples."""

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnigen.mini import examples, tasks, world
from omnigen.mini.tasks import FAMILIES, HELDOUT_PAIRS, generate, make_sample
from omnigen.mini.world import Figure, Garment, Pose, Scene, SceneObject, scene_layout_problem

PLACEHOLDER = re.compile(r"<img><\|image_(\d+)\|></img>")
REPO = Path(__file__).resolve().parent.parent


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def scenes_in(picture: dict) -> list[Scene]:
    return [Scene.from_dict(picture["scene"])] if "scene" in picture else []


def pairs_in(sample) -> set:
    pictures = [*sample.spec["inputs"], sample.spec["target"]]
    return {o.pair for picture in pictures for scene in scenes_in(picture) for o in scene.objects}


# ------------------------------------------------------------------------------------------- world


def test_scene_layout_rules():
    large_corner = SceneObject("square", "red", "large", "top left")
    with pytest.raises(ValueError, match="would touch"):
        Scene("white", (large_corner, SceneObject("circle", "blue", "large", "center")))
    with pytest.raises(ValueError, match="same region"):
        Scene("white", (large_corner, SceneObject("circle", "blue", "small", "top left")))
    # The same colour and shape twice is a valid scene ("two red squares"); generators that refer to one
    # object refuse it through scene_layout_problem's default.
    twins = (large_corner, SceneObject("square", "red", "small", "bottom right"))
    assert Scene("white", twins).objects == twins
    assert "same colour and shape" in scene_layout_problem(twins)
    with pytest.raises(ValueError, match="unknown object colour"):
        SceneObject("square", "magenta", "large", "top left")
    with pytest.raises(ValueError, match="multiple of 16"):
        Scene("white", (large_corner,), size=50)
    # A large corner object and a small centre one fit, with an empty pixel between their boxes.
    scene = Scene("white", (large_corner, SceneObject("circle", "blue", "small", "center")))
    masks = world.object_masks(scene)
    assert not (masks[0] & masks[1]).any()


def test_scene_rendering_puts_each_object_in_its_colour_and_region():
    red = SceneObject("circle", "red", "large", "top left", "near")
    green = SceneObject("triangle", "green", "small", "bottom right", "far")
    scene = Scene("light blue", (red, green))
    image = pixels(world.render_scene(scene))
    assert image.shape == (64, 64, 3)
    assert tuple(image[16, 16]) == world.OBJECT_COLORS["red"]
    assert tuple(image[50, 48]) == world.OBJECT_COLORS["green"]
    assert tuple(image[0, 63]) == world.BACKGROUND_COLORS["light blue"]
    depth = pixels(world.render_depth(scene))
    assert depth[16, 16, 0] == 255 and depth[50, 48, 0] == 85 and depth[0, 0, 0] == 0
    edges = pixels(world.render_edges(scene))[:, :, 0]
    assert set(np.unique(edges)) == {0, 255} and edges[16, 16] == 0
    # Fill ratios of the bounding box separate the shapes: circle ~0.79, square 1, triangle ~0.5.
    for shape, ratio in (("circle", 0.79), ("square", 1.0), ("triangle", 0.5)):
        mask = world.shape_mask(shape, (32, 32), 9, 64)
        assert abs(mask.sum() / 19**2 - ratio) < 0.08


def test_depth_follows_the_ground_plane_in_every_family():
    # Depth must be something a picture shows, or depth estimation is guesswork: lower is nearer.
    assert world.REGION_DEPTH == {"top left": "far", "top right": "far", "center": "middle",
                                  "bottom left": "near", "bottom right": "near"}
    seen = set()
    for family in FAMILIES:
        for sample in generate(family, 30, seed=3):
            for picture in [*sample.spec["inputs"], sample.spec["target"]]:
                for scene in scenes_in(picture):
                    for obj in scene.objects:
                        assert obj.depth == world.REGION_DEPTH[obj.region], (family, obj)
                        seen.add(obj.depth)
    assert seen == set(world.DEPTHS)
    scene = Scene("white", (SceneObject("circle", "red", "large", "top left"),
                            SceneObject("square", "blue", "large", "bottom right")))
    depth = pixels(world.render_depth(scene))[:, :, 0]
    assert depth[50, 48] == 255 and depth[16, 16] == 85


def test_renderers_follow_the_size_parameter():
    scene = Scene("white", (SceneObject("square", "blue", "large", "center"),), size=96)
    for image in (world.render_scene(scene), world.render_depth(scene), world.render_edges(scene)):
        assert image.size == (96, 96)
    figure = Figure(Pose("up", "out", "apart", "left"), Garment("red", "dotted"), "light grey", size=96)
    assert world.render_figure(figure).size == (96, 96)
    assert world.render_skeleton(figure.pose, 96).size == (96, 96)
    assert world.render_garment(figure.garment, 96).size == (96, 96)
    assert make_sample("edit", random.Random(0), size=96).output_image.size == (96, 96)


def test_every_pose_stays_in_the_frame_with_limbs_thick_enough():
    for left in world.ARM_POSES:
        for right in world.ARM_POSES:
            for legs in world.LEG_POSES:
                for lean in world.LEANS:
                    joints = world.figure_joints(Pose(left, right, legs, lean))
                    assert all(2 <= x <= 61 and 2 <= y <= 61 for x, y in joints.values()), (left, right, legs, lean)
    assert world.LIMB_WIDTH >= 3 and world.SKELETON_WIDTH >= 3
    # A vertical forearm is at least 3 pixels wide at 64x64.
    body = world.figure_body_mask(Pose("down", "down", "together", "none"))
    assert body[34].sum() >= 6  # both arms' rows at mid-forearm


def test_skeleton_map_colours_each_limb_in_its_own_hue():
    image = pixels(world.render_skeleton(Pose("out", "up", "apart", "right")))
    colours = {tuple(c) for c in image.reshape(-1, 3)} - {(0, 0, 0)}
    assert colours == set(world.LIMB_COLORS)


def test_try_on_renders_the_garment_on_the_torso():
    pose = Pose()
    bare = pixels(world.render_figure(Figure(pose, None, "light blue")))
    dressed = pixels(world.render_figure(Figure(pose, Garment("orange", "striped"), "light blue")))
    torso = world.torso_mask(pose)
    assert (bare[torso] == world.BODY_RGB).all()
    colours = {tuple(c) for c in dressed[torso]}
    assert colours == {world.OBJECT_COLORS["orange"], world.PATTERN_RGB}
    assert (bare[~torso] == dressed[~torso]).all()
    garment = pixels(world.render_garment(Garment("green", "solid")))
    assert tuple(garment[0, 0]) == (255, 255, 255) and tuple(garment[32, 32]) == world.OBJECT_COLORS["green"]


def test_degradations():
    image = world.render_scene(Scene("white", (SceneObject("circle", "purple", "large", "center"),)))
    assert np.array_equal(pixels(world.add_noise(image, 30, seed=3)), pixels(world.add_noise(image, 30, seed=3)))
    assert not np.array_equal(pixels(world.add_noise(image, 30, seed=3)), pixels(world.add_noise(image, 30, seed=4)))
    blurred = pixels(world.blur(image, 2.0)).astype(int)
    assert np.abs(np.diff(blurred, axis=1)).max() < np.abs(np.diff(pixels(image).astype(int), axis=1)).max()
    grey = pixels(world.to_grayscale(image))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


# ------------------------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_makes_valid_samples(family):
    for sample in generate(family, 12, seed=1):
        assert sample.family == family and sample.spec["family"] == family
        ids = [int(k) for k in PLACEHOLDER.findall(sample.instruction)]
        assert sorted(set(ids)) == list(range(1, len(sample.input_images) + 1)), sample.instruction
        assert ids == sorted(ids), "placeholders appear in order"
        assert sample.instruction.count("<img>") == len(ids) and sample.instruction.count("</img>") == len(ids)
        assert "  " not in sample.instruction and sample.instruction == sample.instruction.strip()
        for image in [*sample.input_images, sample.output_image]:
            assert image.mode == "RGB"
        assert sample.output_image.size == (64, 64)
        # Only uploaded pictures come in other sizes (square canvases of 64 to 320 pixels).
        assert all(i.size == (64, 64) for i in sample.input_images) or family == "upload_edit"
        spec = json.loads(json.dumps(sample.spec))  # JSON-serialisable, and complete: it re-renders every picture
        assert np.array_equal(pixels(world.render_picture(spec["target"])), pixels(sample.output_image))
        for picture, image in zip(spec["inputs"], sample.input_images, strict=True):
            assert np.array_equal(pixels(world.render_picture(picture)), pixels(image))


def test_instructions_use_several_phrasings_and_plain_lowercase_text():
    for family in FAMILIES:
        samples = generate(family, 40, seed=2)
        skeletons = {PLACEHOLDER.sub("#", s.instruction).split(" ")[0] for s in samples}
        assert len({s.instruction for s in samples}) >= 5, family
        assert len(skeletons) >= 2, family
        if family not in ("fewshot", *tasks.NATURAL_FAMILIES):  # few-shot keeps the paper's "Input:"/"Output:",
            # and what people type has capitals
            texts = [PLACEHOLDER.sub("", s.instruction) for s in samples]
            assert all(text == text.lower() for text in texts)


def test_fewshot_instructions_never_name_the_transformation():
    words = ("colour", "color", "flip", "mirror", "edge", "depth", "skeleton", "pose", "background", "green", "red")
    for sample in generate("fewshot", 40, seed=3):
        assert sample.instruction.split(" Input:")[0] in tasks.FEWSHOT_LEADS
        assert not any(word in sample.instruction.lower() for word in words), sample.instruction
        assert len(sample.input_images) in (3, 5)


def test_generation_is_deterministic_under_a_seed():
    for family in FAMILIES:
        first, again, other = generate(family, 4, seed=7), generate(family, 4, seed=7), generate(family, 4, seed=8)
        assert [s.instruction for s in first] == [s.instruction for s in again]
        assert [s.spec for s in first] == [s.spec for s in again]
        assert all(np.array_equal(pixels(a.output_image), pixels(b.output_image)) for a, b in zip(first, again))
        assert [s.spec for s in first] != [s.spec for s in other]
    assert [s.spec for s in generate("edit", 4, 7, "eval")] != [s.spec for s in generate("edit", 4, 7, "train")]


def test_sub_task_weights_shift_the_draw_and_reject_what_they_cannot_weight():
    def tasks_drawn(family, weights, n=120):
        rng = random.Random(3)
        return Counter(make_sample(family, rng, task_weights=weights).task for _ in range(n))

    only_flip = {t: 0.0 for t in tasks.FEWSHOT_TRANSFORMS if t != "flip"}
    assert set(tasks_drawn("fewshot", only_flip)) == {"flip"}
    moves = tasks_drawn("edit", {"move": 8.0})  # the other four weigh 1 each: about two thirds are moves
    assert 0.5 < moves["move"] / 120 < 0.85 and len(moves) == 5
    uniform = tasks_drawn("restore", None)
    assert set(uniform) == set(tasks.RESTORE_TASKS) and max(uniform.values()) < 60
    with pytest.raises(ValueError, match="unknown fewshot sub-task"):
        make_sample("fewshot", random.Random(0), task_weights={"rotate": 1.0})
    with pytest.raises(ValueError, match="has no sub-tasks"):
        make_sample("depth", random.Random(0), task_weights={"depth": 1.0})
    with pytest.raises(ValueError, match="at least one above 0"):
        make_sample("restore", random.Random(0), task_weights={t: 0.0 for t in tasks.RESTORE_TASKS})


def test_heldout_pairs_never_appear_in_training_or_eval_samples():
    assert len(HELDOUT_PAIRS) == 4 and {shape for _, shape in HELDOUT_PAIRS} == set(world.SHAPES)
    for sample in generate("text_to_image", 400, seed=0):
        assert not pairs_in(sample) & set(HELDOUT_PAIRS), sample.instruction
    for family in FAMILIES:
        for split in ("train", "eval"):
            for sample in generate(family, 25, seed=4, split=split):
                assert not pairs_in(sample) & set(HELDOUT_PAIRS), (family, sample.instruction)


def test_heldout_split_makes_samples_with_heldout_pairs():
    for sample in generate("text_to_image", 30, seed=0, split="heldout"):
        target = Scene.from_dict(sample.spec["target"]["scene"])
        assert sum(o.pair in HELDOUT_PAIRS for o in target.objects) == 1
        assert any(f"{c} {s}" in sample.instruction for c, s in HELDOUT_PAIRS)
    for sample in generate("edit", 30, seed=0, split="heldout"):
        before = Scene.from_dict(sample.spec["inputs"][0]["scene"])
        after = Scene.from_dict(sample.spec["target"]["scene"])
        assert not any(o.pair in HELDOUT_PAIRS for o in before.objects)
        assert any(o.pair in HELDOUT_PAIRS for o in after.objects)
        assert sample.task in ("recolour", "add")
    with pytest.raises(ValueError, match="heldout"):
        generate("tryon", 1, split="heldout")
    with pytest.raises(ValueError, match="unknown split"):
        generate("edit", 1, split="test")
    with pytest.raises(ValueError, match="unknown task family"):
        generate("inpaint", 1)


def test_conditioned_scenes_have_distinct_shapes_so_the_map_says_which_is_which():
    for family in ("depth", "edges"):
        for sample in generate(family, 30, seed=5):
            scene = Scene.from_dict(sample.spec["target"]["scene"])
            assert len({o.shape for o in scene.objects}) == len(scene.objects)
            assert all(o.color in sample.instruction and o.shape in sample.instruction for o in scene.objects)


def test_corpus_is_deterministic_and_covers_every_family():
    texts = tasks.corpus(3, seed=0)
    assert texts == tasks.corpus(3, seed=0)
    assert len(texts) == 3 * len(FAMILIES) and all(isinstance(t, str) and t for t in texts)


def test_write_jsonl_round_trip(tmp_path):
    samples = [s for family in ("text_to_image", "tryon", "fewshot") for s in generate(family, 2, seed=0)]
    jsonl = tmp_path / "data" / "train.jsonl"
    tasks.write_jsonl(samples, tmp_path / "data", jsonl)
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(samples)
    for line, sample in zip(lines, samples):
        record = json.loads(line)
        assert set(record) == {"instruction", "input_images", "output_image"}
        assert record["instruction"] == sample.instruction
        assert len(record["input_images"]) == len(sample.input_images)
        paths = [*record["input_images"], record["output_image"]]
        for path, image in zip(paths, [*sample.input_images, sample.output_image]):
            assert not Path(path).is_absolute()
            assert np.array_equal(pixels(Image.open(tmp_path / "data" / path)), pixels(image))
    assert not list(jsonl.parent.glob(".x2i-mini-*")), "no temporary file is left behind"


# ---------------------------------------------------------------------------------------- examples


def test_examples_cover_every_preset_and_are_deterministic(tmp_path):
    content = examples.write_examples(tmp_path / "a")
    examples.write_examples(tmp_path / "b")
    assert list(content) == list(examples.PRESET_NAMES)
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for preset, entries in content.items():
        assert 1 <= len(entries) <= 4  # the studio shows four examples a page
        for entry in entries:
            ids = sorted({int(k) for k in PLACEHOLDER.findall(entry["prompt"])})
            assert ids == list(range(1, len(entry["images"]) + 1)), entry["prompt"]
            for name in [*entry["images"], entry["expected"]]:
                assert Image.open(tmp_path / "a" / name).size == (64, 64)
            pictures = [*entry["spec"]["inputs"], entry["spec"]["target"]]
            spec_pairs = {o.pair for picture in pictures for scene in scenes_in(picture) for o in scene.objects}
            assert not spec_pairs & set(HELDOUT_PAIRS), entry["prompt"]


def test_committed_examples_match_the_generator(tmp_path):
    committed = REPO / "assets" / "examples"
    if not (committed / "examples.json").is_file():
        pytest.skip("assets/examples has not been generated yet: python -m omnigen.mini.examples --out assets/examples")
    content = examples.write_examples(tmp_path)
    assert json.loads((committed / "examples.json").read_text()) == content
    for entries in content.values():
        for entry in entries:
            for name in [*entry["images"], entry["expected"]]:
                assert np.array_equal(pixels(Image.open(committed / name)), pixels(Image.open(tmp_path / name))), name
