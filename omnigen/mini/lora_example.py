"""The studio's one-click LoRA example: teach the embedded model a shape its world never had.

The mini world draws circles, squares and triangles (world.SHAPES); a rectangle — as wide as a square
of its size and half as tall — is none of them, and the tokenizer has never seen the word (it reads
"rectangle" in pieces). So the base model cannot draw "a red rectangle"; a LoRA trained on 16 pictures of
rectangles can (tests/test_lora_new_shape.py measures it).

    jsonl = make_new_shape_dataset("data/rectangles", n=16)  # data/rectangles/data.jsonl + images/
    result = train_lora(pipe, jsonl, example_train_config("adapters/rectangles"))
    python -m omnigen.mini.lora_example   # writes the studio's copy: assets/examples/lora-rectangle/

Why a shape and not a colour: the mini VAE was trained on the world's pictures only and turns any colour
outside its palette into one of its own (a flat magenta comes back grey), so no transformer adapter could
paint one; a new outline in known colours it reproduces faithfully.

Training pictures never show a rectangle in one of HELDOUT_PLACES (colour, region); `heldout_prompts`
asks for exactly those, so a model that draws them has learned the shape, not the pictures. Two checks:
`looks_like_rectangle` (the main object is a wide filled box, wherever and in whatever colour) and the
stricter `draws_rectangle` (the right colour at the right place fits the rectangle's template best).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from PIL import Image

from .tasks import SEEN_PAIRS, scene_description
from .world import (BACKGROUND_COLORS, DEFAULT_SIZE, OBJECT_COLORS, REGIONS, SHAPES, SIZES, color_rgb, half_extent,
                    region_center, scene_layout_problem, shape_mask)

NEW_SHAPE = "rectangle"
# One held-out (colour, region) per region, five different colours: never a rectangle in training.
HELDOUT_PLACES = (("red", "top left"), ("blue", "top right"), ("yellow", "bottom left"), ("green", "bottom right"),
                  ("purple", "center"))
TRAIN_PLACES = tuple((c, r) for c in OBJECT_COLORS for r in REGIONS if (c, r) not in HELDOUT_PLACES)
SHIFT = 2  # pixels a generated object may sit off its place when fitted
MIN_FIT = 0.55  # IoU with the rectangle template that counts as drawing one (a square scores ~0.45)
BACKGROUND_DISTANCE = 60.0  # RGB distance from the background beyond which a pixel belongs to an object
MIN_BLOB_AREA, MIN_ASPECT, MIN_FILL = 40, 1.5, 0.7  # a rectangle, shape alone (a large one: 171 px, 2.1, 1.0)
EXAMPLE_STEPS = 150  # with batches of 16 examples: about 100 s on one busy CPU thread
EXAMPLE_LEARNING_RATE = 1e-3
EXAMPLE_GUIDANCE = 1.0  # judge the conditional model the adapter trained, without guidance's amplification


def object_mask(shape: str, region: str, size_word: str, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Any shape of the world, or the new rectangle (the world's box, half its height)."""
    center, half = region_center(region, size), half_extent(size_word, size)
    if shape != NEW_SHAPE:
        return shape_mask(shape, center, half, size)
    mask = np.zeros((size, size), bool)
    (cx, cy), half_height = center, half // 2
    mask[cy - half_height: cy + half_height + 1, cx - half: cx + half + 1] = True
    return mask


@dataclass(frozen=True)
class PaintedObject:
    """A scene object whose shape may be the new one (world.SceneObject refuses it)."""

    shape: str
    color: str
    size: str
    region: str

    @property
    def pair(self) -> tuple[str, str]:
        return (self.color, self.shape)


def render(background: str, objects: list[PaintedObject], size: int = DEFAULT_SIZE) -> Image.Image:
    """Flat colours, no antialiasing, exactly as world.render_scene draws its scenes."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = BACKGROUND_COLORS[background]
    for obj in objects:
        canvas[object_mask(obj.shape, obj.region, obj.size, size)] = color_rgb(obj.color)
    return Image.fromarray(canvas, "RGB")


def describe(background: str, objects: list[PaintedObject], rng: random.Random) -> str:
    """The mini world's own wording (tasks.scene_description), so only the shape's word is new."""
    return scene_description(SimpleNamespace(background=background, objects=tuple(objects)), rng)


def random_new_shape_scene(rng: random.Random, places, extra_objects: int) -> tuple[str, list[PaintedObject]]:
    """A rectangle at one of `places` (colour, region), plus `extra_objects` known objects elsewhere."""
    while True:
        color, region = rng.choice(list(places))
        objects = [PaintedObject(NEW_SHAPE, color, rng.choice(SIZES), region)]
        for other_region in rng.sample([r for r in REGIONS if r != region], extra_objects):
            other_color, other_shape = rng.choice(SEEN_PAIRS)
            objects.append(PaintedObject(other_shape, other_color, rng.choice(SIZES), other_region))
        if scene_layout_problem(tuple(objects)) is None:
            return rng.choice(list(BACKGROUND_COLORS)), objects


def make_new_shape_dataset(out_dir: str | Path, n: int = 16, seed: int = 0, size: int = DEFAULT_SIZE) -> Path:
    """Write out_dir/data.jsonl (the official format) and out_dir/images/NN.png: `n` text-to-image examples
    of rectangles at TRAIN_PLACES, every other one with a known object beside. Returns the JSONL path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for index in range(n):
        background, objects = random_new_shape_scene(rng, TRAIN_PLACES, extra_objects=index % 2)
        name = f"images/{index:02d}.png"
        render(background, objects, size).save(out_dir / name)
        lines.append(json.dumps({"instruction": describe(background, objects, rng), "output_image": name}))
    path = out_dir / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def heldout_prompts(seed: int = 1) -> list[tuple[str, dict]]:
    """(prompt, spec): a large rectangle at each of HELDOUT_PLACES, on a white background."""
    rng = random.Random(seed)
    cases = []
    for color, region in HELDOUT_PLACES:
        objects = [PaintedObject(NEW_SHAPE, color, "large", region)]
        spec = {"background": "white", "objects": [vars(o) for o in objects]}
        cases.append((describe("white", objects, rng), spec))
    return cases


def colour_mask(pixels: np.ndarray, color: str) -> np.ndarray:
    """Pixels nearer to `color` than to any other colour of the world (objects' and backgrounds'): robust
    to the tints a small VAE adds, which a fixed distance to the exact colour is not."""
    palette = {**OBJECT_COLORS, **BACKGROUND_COLORS}
    names = list(palette)
    distances = np.stack([np.linalg.norm(pixels - np.asarray(palette[n], np.float32), axis=-1) for n in names])
    return distances.argmin(axis=0) == names.index(color)


def shape_fits(image: Image.Image, spec: dict) -> dict[str, float]:
    """IoU of the object's colour (around its place) with each shape's template, the best over shifts of up
    to SHIFT pixels: {"rectangle": 0.9, "circle": 0.5, ...} for the spec's first object."""
    obj = spec["objects"][0]
    size = image.size[0]
    pixels = np.asarray(image.convert("RGB"), np.float32)
    half = half_extent(obj["size"], size) + SHIFT + 1
    cx, cy = region_center(obj["region"], size)
    window = np.zeros((size, size), bool)
    window[max(cy - half, 0): cy + half + 1, max(cx - half, 0): cx + half + 1] = True
    found = colour_mask(pixels, obj["color"]) & window
    fits = {}
    for shape in (NEW_SHAPE, *SHAPES):
        template = object_mask(shape, obj["region"], obj["size"], size)
        fits[shape] = max(_iou(found, np.roll(template, (dy, dx), axis=(0, 1)))
                          for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1))
    return fits


def draws_rectangle(image: Image.Image, spec: dict) -> bool:
    """The object fits the rectangle best of all shapes, and well (IoU >= MIN_FIT)."""
    fits = shape_fits(image, spec)
    return fits[NEW_SHAPE] >= MIN_FIT and max(fits, key=fits.get) == NEW_SHAPE


def largest_blob(image: Image.Image, background: str) -> dict:
    """The biggest connected patch of non-background pixels anywhere in the image: its area, its bounding
    box's width / height, and how much of that box it fills (a rectangle ~2.1 and ~1, a square ~1 and ~1,
    a circle ~1 and ~0.8, a triangle ~1 and ~0.5)."""
    pixels = np.asarray(image.convert("RGB"), np.float32)
    foreground = np.linalg.norm(pixels - np.asarray(color_rgb(background), np.float32), axis=-1) > BACKGROUND_DISTANCE
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=4)
    if count < 2:
        return {"area": 0, "aspect": 0.0, "fill": 0.0}
    label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    width, height, area = (int(stats[label, k]) for k in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
    return {"area": area, "aspect": width / height, "fill": area / (width * height)}


def looks_like_rectangle(image: Image.Image, spec: dict) -> bool:
    """Wherever and in whatever colour it is drawn, the main object is a wide, filled box: the shape alone,
    for a base model too weak to put objects in the right place and colour."""
    blob = largest_blob(image, spec["background"])
    return blob["area"] >= MIN_BLOB_AREA and blob["aspect"] >= MIN_ASPECT and blob["fill"] >= MIN_FILL


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def example_train_config(out_dir: str | Path, steps: int = EXAMPLE_STEPS) -> "TrainConfig":
    """The settings the studio's one-click example trains with, the held-out prompts as validation samples."""
    from ..training import LoraSettings, TrainConfig

    return TrainConfig(out_dir=str(out_dir), steps=steps, batch_size=16, learning_rate=EXAMPLE_LEARNING_RATE,
                       condition_dropout=0.0, image_condition_dropout=0.0, encode_latents_once=True,
                       checkpoint_every=max(steps // 3, 1), keep_checkpoints=1, log_every=5,
                       lora=LoraSettings(rank=16, targets="attention+mlp"),
                       validation_prompts=[prompt for prompt, _ in heldout_prompts()], sample_every=0,
                       sample_guidance_scale=EXAMPLE_GUIDANCE)


STUDIO_EXAMPLE = "lora-rectangle"  # under assets/examples/: what the studio's Train tab loads with one click
STUDIO_NAME = "rectangle"


def write_studio_example(examples_dir: str | Path | None = None) -> Path:
    """The Train tab's one-click example as files: data.jsonl + images/ (make_new_shape_dataset) and
    train_settings.json (example_train_config's fields, the adapter named "rectangle", samples every third of
    the run, at the world's picture size). Written aside and renamed: the folder is whole or absent."""
    from dataclasses import asdict

    from ..files import atomic_folder, atomic_write_text
    from ..presets import DEFAULT_EXAMPLES_DIR

    folder = Path(examples_dir or DEFAULT_EXAMPLES_DIR) / STUDIO_EXAMPLE
    config = example_train_config("unused")
    config.lora.name = STUDIO_NAME
    config.resolution, config.sample_every = DEFAULT_SIZE, max(config.steps // 3, 1)
    settings = {name: value for name, value in asdict(config).items() if name != "out_dir"}
    with atomic_folder(folder) as scratch:
        make_new_shape_dataset(scratch)
        atomic_write_text(scratch / "train_settings.json", json.dumps(settings, indent=2) + "\n")
    return folder


if __name__ == "__main__":
    print(write_studio_example())
