"""The example pictures and ready prompts of the studio's presets, drawn from the mini world.

    python -m omnigen.mini.examples --out assets/examples

Writes small 64x64 PNGs and examples.json, keyed by preset name:
{"edit": [{"title", "prompt", "images": [file names], "expected": file name, "spec": {...}}], ...}.
Every prompt is worded as the task generators word it, so the embedded model knows it; "expected"
is the true output, and "spec" lets `omnigen.mini.judge.judge_spec` check a generated one. The
same command always writes the same files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..files import atomic_save, atomic_write_bytes
from .tasks import (
    IMG1,
    IMG2,
    Sample,
    build_sample,
    fewshot_instruction,
    figure_picture,
    garment_picture,
    scene_picture,
    skeleton_picture,
)
from .tasks.natural import named_sample
from .world import DEFAULT_SIZE, Figure, Garment, Pose, Scene, SceneObject, segmentation_target

PRESET_NAMES = (
    "text_to_image", "edit", "tryon", "pose", "depth", "edges", "subject",
    "extraction", "segment", "restore", "fewshot",
)

Example = tuple[str, Sample, list[str]]  # (title, sample, file names of its input images)


def _scene(size: int, background: str, *objects: str) -> Scene:
    """A scene from short object descriptions: "large red circle top left [near]"."""
    parsed = []
    for text in objects:
        words = text.split()
        region = "center" if words[3] == "center" else " ".join(words[3:5])
        depth = words[-1] if words[-1] in ("near", "middle", "far") else "middle"
        parsed.append(SceneObject(words[2], words[1], words[0], region, depth))
    return Scene(background, tuple(parsed), size)


def _example(title: str, family: str, task: str, prompt: str, inputs: list[tuple[str, dict]], target: dict,
             **extra) -> Example:
    """An example whose input pictures are saved under the given file names."""
    sample = build_sample(family, task, prompt, [picture for _, picture in inputs], target, "train", **extra)
    return title, sample, [name for name, _ in inputs]


def example_samples(size: int = DEFAULT_SIZE) -> dict[str, list[Example]]:
    """The examples of every preset; pictures shared between presets share a file name."""
    by_preset = {
        **_generation_examples(size),
        **_figure_examples(size),
        **_vision_examples(size),
        "restore": _restore_examples(size),
        "fewshot": [_fewshot_recolour(size), _fewshot_edges(size)],
    }
    return {name: by_preset[name] for name in PRESET_NAMES}


def _generation_examples(size: int) -> dict[str, list[Example]]:
    edit_scene = _scene(size, "white", "large red circle top left", "small blue square bottom right")
    recoloured = _scene(size, "white", "large green circle top left", "small blue square bottom right")
    subject = ("subject.png", scene_picture(_scene(size, "light grey", "large purple triangle center")))
    placed = _scene(size, "white", "large purple triangle top left")
    accompanied = _scene(size, "light yellow", "large purple triangle bottom right", "small green circle top left")
    return {
        "text_to_image": [
            # What a new user types first: a few words, the rest drawn by the convention the model learnt.
            ("A few words", named_sample("a red circle", [("red", "circle")], size), []),
            ("Counting", named_sample("two blue squares", [("blue", "square")] * 2, size), []),
            _example("Two shapes", "text_to_image", "text_to_image",
                     "a large red circle in the center and a small blue square at the top left on a white "
                     "background", [],
                     scene_picture(_scene(size, "white", "large red circle center", "small blue square top left"))),
            _example("A triangle", "text_to_image", "text_to_image",
                     "draw a big orange triangle in the lower right on a light blue background", [],
                     scene_picture(_scene(size, "light blue", "large orange triangle bottom right"))),
        ],
        "edit": [
            _example("Recolour", "edit", "recolour", f"{IMG1} make the red circle green",
                     [("edit-scene.png", scene_picture(edit_scene))], scene_picture(recoloured)),
            _example("New background", "edit", "background", f"{IMG1} change the background to light yellow",
                     [("edit-scene.png", scene_picture(edit_scene))],
                     scene_picture(Scene("light yellow", edit_scene.objects, size))),
        ],
        "subject": [
            _example("New place", "subject", "subject",
                     f"put the object from {IMG1} at the top left of a white background", [subject],
                     scene_picture(placed)),
            _example("New company", "subject", "subject",
                     f"place the shape in {IMG1} at the bottom right on a light yellow background, "
                     "with a small green circle at the top left", [subject], scene_picture(accompanied)),
        ],
    }


def _figure_examples(size: int) -> dict[str, list[Example]]:
    person = Figure(Pose("down", "down", "together", "none"), Garment("blue", "solid"), "white", size)
    shirt = Garment("red", "striped")
    posed = Pose("up", "down", "apart", "none")
    skeleton = ("skeleton.png", skeleton_picture(posed, size))
    return {
        "tryon": [
            _example("Striped shirt", "tryon", "tryon", f"{IMG1} the person wears the shirt from {IMG2}",
                     [("person.png", figure_picture(person)), ("garment.png", garment_picture(shirt, size))],
                     figure_picture(Figure(person.pose, shirt, person.background, size))),
        ],
        "pose": [
            _example("Red striped shirt", "pose", "pose",
                     f"following the skeleton in {IMG1}, draw a person in a red striped shirt on a white background",
                     [skeleton], figure_picture(Figure(posed, Garment("red", "striped"), "white", size))),
            _example("Green dotted shirt", "pose", "pose",
                     f"{IMG1} a person wearing a green shirt with white dots in this pose on a light blue background",
                     [skeleton], figure_picture(Figure(posed, Garment("green", "dotted"), "light blue", size))),
        ],
    }


def _vision_examples(size: int) -> dict[str, list[Example]]:
    depth_scene = _scene(size, "white", "large red circle top left near", "large blue square bottom right far")
    edge_scene = _scene(size, "light blue", "large orange triangle bottom left", "small purple circle top right")
    scene = _scene(size, "light yellow", "large red circle top left near", "small yellow square center middle",
                   "large green triangle bottom right far")
    picture = ("scene.png", scene_picture(scene))
    person = Figure(Pose("down", "down", "together", "none"), Garment("blue", "solid"), "white", size)
    return {
        "depth": [
            _example("Circle and square", "depth", "depth",
                     f"following the depth map {IMG1}, generate a red circle and a blue square on a white background",
                     [("depth.png", scene_picture(depth_scene, "depth"))], scene_picture(depth_scene)),
        ],
        "edges": [
            _example("Triangle and circle", "edges", "edges",
                     f"following the edge map {IMG1}, generate an orange triangle and a purple circle on a light blue "
                     "background", [("edges.png", scene_picture(edge_scene, "edges"))], scene_picture(edge_scene)),
        ],
        "extraction": [
            _example("Edges", "edges_extract", "edges_extract", f"{IMG1} detect the edges", [picture],
                     scene_picture(scene, "edges")),
            _example("Depth", "depth_extract", "depth_extract", f"{IMG1} estimate the depth map", [picture],
                     scene_picture(scene, "depth")),
            _example("Pose", "pose_extract", "pose_extract", f"{IMG1} detect the human pose",
                     [("person.png", figure_picture(person))], skeleton_picture(person.pose, size)),
        ],
        "segment": [
            _example("Red circle", "segment", "segment", f"find the red circle in {IMG1} and mark it in cyan",
                     [picture], scene_picture(segmentation_target(scene, 0)), referred=0),
            _example("Green triangle", "segment", "segment", f"{IMG1} segment the green triangle", [picture],
                     scene_picture(segmentation_target(scene, 2)), referred=2),
        ],
    }


def _restore_examples(size: int) -> list[Example]:
    scene = _scene(size, "white", "large orange circle top right", "small blue square bottom left")
    truth = scene_picture(scene)
    return [
        _example("Denoise", "restore", "denoise", f"{IMG1} remove the noise",
                 [("noisy.png", scene_picture(scene, "noisy", sigma=40.0, seed=7))], truth),
        _example("Deblur", "restore", "deblur", f"{IMG1} deblur this image",
                 [("blurred.png", scene_picture(scene, "blurred", sigma=2.5))], truth),
        _example("Colourise", "restore", "colourise", f"colourise {IMG1}", [("grey.png", scene_picture(scene, "grey"))],
                 truth),
    ]


def _recolour(scene: Scene, source: str, target: str) -> Scene:
    objects = tuple(
        SceneObject(o.shape, target if o.color == source else o.color, o.size, o.region) for o in scene.objects
    )
    return Scene(scene.background, objects, scene.size)


def _fewshot_recolour(size: int) -> Example:
    """Red becomes green, shown twice; the query has a red circle among other colours."""
    first = _scene(size, "white", "large red circle center")
    second = _scene(size, "light blue", "small red circle top left", "large purple triangle bottom right")
    query = _scene(size, "light grey", "large purple square top left", "small red circle bottom right")
    inputs = [
        ("fewshot-recolour-in1.png", scene_picture(first)),
        ("fewshot-recolour-out1.png", scene_picture(_recolour(first, "red", "green"))),
        ("fewshot-recolour-in2.png", scene_picture(second)),
        ("fewshot-recolour-out2.png", scene_picture(_recolour(second, "red", "green"))),
        ("fewshot-recolour-query.png", scene_picture(query)),
    ]
    return _example("Red becomes green", "fewshot", "recolour", fewshot_instruction(2), inputs,
                    scene_picture(_recolour(query, "red", "green")), transform="recolour",
                    params={"from": "red", "to": "green"})


def _fewshot_edges(size: int) -> Example:
    example = _scene(size, "white", "large orange square top right", "small blue triangle bottom left")
    query = _scene(size, "light yellow", "large purple circle bottom right", "small red square top left")
    inputs = [
        ("fewshot-edges-in1.png", scene_picture(example)),
        ("fewshot-edges-out1.png", scene_picture(example, "edges")),
        ("fewshot-edges-query.png", scene_picture(query)),
    ]
    return _example("Edges by example", "fewshot", "edges", fewshot_instruction(1), inputs,
                    scene_picture(query, "edges"), transform="edges", params={})


def write_examples(out_dir: str | Path, size: int = DEFAULT_SIZE) -> dict:
    """Write the example pictures and examples.json into `out_dir`; returns the JSON content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    content: dict[str, list[dict]] = {}
    written: dict[str, bytes] = {}
    for preset, entries in example_samples(size).items():
        content[preset] = []
        for number, (title, sample, names) in enumerate(entries, start=1):
            for name, image in zip(names, sample.input_images, strict=True):
                _write_png(out, name, image, written)
            expected = f"expected-{preset}-{number}.png"
            _write_png(out, expected, sample.output_image, written)
            entry = {"title": title, "prompt": sample.instruction, "images": names, "expected": expected}
            content[preset].append({**entry, "spec": sample.spec})
    atomic_write_bytes(out / "examples.json", (json.dumps(content, indent=2) + "\n").encode("utf-8"))
    return content


def _write_png(out: Path, name: str, image: Image.Image, written: dict[str, bytes]) -> None:
    pixels = image.tobytes()
    if name in written:
        if written[name] != pixels:
            raise RuntimeError(f"two different example pictures would both be written as {name}")
        return
    written[name] = pixels
    atomic_save(out / name, lambda temporary: image.save(temporary, format="PNG"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnigen.mini.examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("assets/examples"),
                        help="folder to write into (default assets/examples)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"image size (default {DEFAULT_SIZE})")
    args = parser.parse_args(argv)
    content = write_examples(args.out, args.size)
    count = sum(len(v) for v in content.values())
    print(f"wrote {count} examples for {len(content)} presets to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
