"""Task presets: a prompt template, the images it needs, recommended settings and ready examples.

Every OmniGen task is the same call with a different prompt, so a preset is only data:

    preset = PRESETS["edit"]
    pipe(preset.template, [picture], **preset.settings)

The templates use the phrasings of the mini world (omnigen/mini/tasks.py) so that they work on the
embedded model as written; with OmniGen-v1 any wording works. Settings are OmniGenPipeline keyword
arguments and follow the official recommendations (guidance 2.5, image guidance 1.6; 2.0 for
condition maps; edits keep the size of their input picture).

Examples live in assets/examples/examples.json, keyed by preset name:

    {"edit": [{"prompt": "<img><|image_1|></img> make the red circle green", "images": ["edit-1.png"]}], ...}

Each example may also carry "settings" (pipeline keyword arguments) and a "title"; "input_images"
and "instruction" are accepted as other names for "images" and "prompt". Image names are relative to
the folder that holds examples.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
EXAMPLES_FILE = "examples.json"

FEWSHOT_LEAD = "According to the following examples, generate an output for the input."


def image_tag(k: int) -> str:
    """The placeholder of input image k (from 1) in a prompt."""
    return f"<img><|image_{k}|></img>"


IMG1, IMG2 = image_tag(1), image_tag(2)

# Official recommendations: text 2.5 / image 1.6; conditioned generation and vision tasks 2.0 / 1.6.
_GUIDED = {"guidance_scale": 2.5, "img_guidance_scale": 1.6}
_CONDITIONED = {"guidance_scale": 2.0, "img_guidance_scale": 1.6}


@dataclass(frozen=True)
class Preset:
    """One task: how to word it, which images it takes, and the settings that suit it."""

    name: str  # the key in PRESETS and in examples.json; the mini world's task family where there is one
    title: str
    description: str
    template: str  # a ready prompt with <img><|image_k|></img> where image k goes
    image_labels: tuple[str, ...]  # what image 1, 2, ... must show
    settings: dict[str, Any] = field(default_factory=dict)  # OmniGenPipeline keyword arguments
    variants: tuple[tuple[str, str], ...] = ()  # (label, template) for presets that cover several tasks
    condition: str | None = None  # the omnigen.conditions helper that can make image 1 from a picture

    @property
    def num_images(self) -> int:
        return len(self.image_labels)

    @property
    def is_edit(self) -> bool:
        """True when the output redraws image 1, so the original pixels can be kept outside a mask."""
        return self.name in ("edit", "restore", "tryon")


def _preset(name: str, title: str, description: str, template: str, image_labels: tuple[str, ...],
            settings: dict, **extra: Any) -> Preset:
    return Preset(name, title, description, template, image_labels, dict(settings), **extra)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("text_to_image", "Text to image", "Describe the picture; no input image.",
            "a large red circle in the center and a small blue square at the top left on a white background",
            (), _GUIDED),
    _preset("edit", "Edit", "Say what to change in image 1; the rest stays. Paint a mask to confine the edit.",
            f"{IMG1} make the red circle green", ("the picture to edit",),
            {**_GUIDED, "use_input_image_size_as_output": True}),
    _preset("tryon", "Virtual try-on", "Dress the person of image 1 in the garment of image 2.",
            f"{IMG1} the person wears the shirt from {IMG2}", ("the person", "the garment"),
            {**_GUIDED, "use_input_image_size_as_output": True}),
    _preset("pose", "Pose-guided", "Draw a person in the pose of the skeleton in image 1.",
            f"following the skeleton in {IMG1}, draw a person in a red striped shirt on a white background",
            ("a pose skeleton",), {**_CONDITIONED, "use_input_image_size_as_output": True}),
    _preset("depth", "Depth-guided", "Generate a picture that follows the depth map in image 1.",
            f"following the depth map {IMG1}, generate a red circle and a blue square on a white background",
            ("a depth map (nearer is brighter)",), {**_CONDITIONED, "use_input_image_size_as_output": True},
            condition="silhouette"),
    _preset("edges", "Edge-guided", "Generate a picture that follows the edge map in image 1.",
            f"following the edge map {IMG1}, generate a red circle and a blue square on a white background",
            ("an edge map (white lines on black)",), {**_CONDITIONED, "use_input_image_size_as_output": True},
            condition="canny"),
    _preset("subject", "Subject-driven", "Put the subject of image 1 into a new scene.",
            f"put the object from {IMG1} at the top left of a white background", ("the subject",), _GUIDED),
    _preset("extraction", "Extraction", "Turn image 1 into an edge map, a depth map or a pose skeleton.",
            f"{IMG1} detect the edges", ("the picture to analyse",),
            {**_CONDITIONED, "use_input_image_size_as_output": True},
            variants=(("edges", f"{IMG1} detect the edges"), ("depth", f"{IMG1} estimate the depth map"),
                      ("skeleton", f"{IMG1} detect the human pose"),
                      ("segmentation", f"{IMG1} segment the red circle"))),
    _preset("segment", "Segmentation", "Mark the named object of image 1 in the marker colour.",
            f"{IMG1} segment the red circle", ("the picture",),
            {**_CONDITIONED, "use_input_image_size_as_output": True}),
    _preset("restore", "Restore", "Denoise, deblur or colourise image 1.",
            f"{IMG1} remove the noise", ("the degraded picture",),
            {**_GUIDED, "use_input_image_size_as_output": True},
            variants=(("denoise", f"{IMG1} remove the noise"), ("deblur", f"{IMG1} deblur this image"),
                      ("colourise", f"colourise {IMG1}"))),
    _preset("fewshot", "Few-shot", "Show input -> output example pairs; the model applies the same change to "
            "the last input.", FEWSHOT_LEAD + f" Input: {IMG1} Output: {IMG2} Input: {image_tag(3)} Output:",
            ("example 1 input", "example 1 output", "the query input"),
            {**_GUIDED, "use_input_image_size_as_output": 3}),
)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------- few-shot


def fewshot_prompt(num_examples: int, lead: str = FEWSHOT_LEAD) -> str:
    """The in-context prompt for `num_examples` (input, output) pairs followed by the query input.

    Images are numbered in order: example 1 input, example 1 output, ..., the query last.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"a few-shot prompt needs at least one example pair, got {num_examples!r}")
    parts = [f"Input: {image_tag(2 * i + 1)} Output: {image_tag(2 * i + 2)}" for i in range(num_examples)]
    parts.append(f"Input: {image_tag(2 * num_examples + 1)} Output:")
    return lead + " " + " ".join(parts)


def fewshot_image_labels(num_examples: int) -> tuple[str, ...]:
    labels = []
    for i in range(1, num_examples + 1):
        labels += [f"example {i} input", f"example {i} output"]
    return (*labels, "the query input")


def fewshot_request(pairs: list[tuple[Any, Any]], query: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """(prompt, input_images, settings) for example pairs and a query; the output takes the query's size."""
    if not pairs:
        raise ValueError("give at least one (input, output) example pair")
    for i, pair in enumerate(pairs, start=1):
        if len(pair) != 2 or any(image is None for image in pair):
            raise ValueError(f"example pair {i} needs both an input and an output image")
    if query is None:
        raise ValueError("give the query input image: the picture the examples' change is applied to")
    images = [image for pair in pairs for image in pair] + [query]
    settings = {**PRESETS["fewshot"].settings, "use_input_image_size_as_output": len(images)}
    return fewshot_prompt(len(pairs)), images, settings


def preset_parts(name: str, num_examples: int | None = None,
                 ) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(template, image labels, settings) of a preset; the few-shot one sized for `num_examples` pairs."""
    preset = get_preset(name)
    if name == "fewshot" and num_examples is not None:
        count = 2 * num_examples + 1
        return (fewshot_prompt(num_examples), fewshot_image_labels(num_examples),
                {**preset.settings, "use_input_image_size_as_output": count})
    return preset.template, preset.image_labels, dict(preset.settings)


# ----------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """A ready prompt for a preset, with its pictures (absolute paths) and any settings of its own."""

    preset: str
    prompt: str
    images: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    title: str = ""

    def missing_files(self) -> list[str]:
        return [path for path in self.images if not Path(path).is_file()]


def load_examples(examples_dir: str | os.PathLike | None = None) -> dict[str, list[Example]]:
    """Examples by preset name from examples.json; {} when the folder has none yet."""
    folder = Path(examples_dir) if examples_dir is not None else DEFAULT_EXAMPLES_DIR
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); regenerate it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold an object keyed by preset name, got {type(data).__name__}")
    if isinstance(data.get("examples"), list):  # also accept {"examples": [{"preset": ..., ...}, ...]}
        grouped: dict[str, list] = {}
        for entry in data["examples"]:
            name = entry.get("preset") or entry.get("task") or entry.get("family") if isinstance(entry, dict) else None
            grouped.setdefault(str(name), []).append(entry)
        data = grouped
    examples: dict[str, list[Example]] = {}
    for name, entries in data.items():
        entries = entries if isinstance(entries, list) else [entries]
        examples[name] = [_parse_example(name, entry, folder, path, i) for i, entry in enumerate(entries, start=1)]
    return examples


def _parse_example(name: str, entry: Any, folder: Path, path: Path, number: int) -> Example:
    where = f"{path}: example {number} of {name!r}"
    if isinstance(entry, str):
        entry = {"prompt": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object with a prompt and images, got {type(entry).__name__}")
    prompt = entry.get("prompt", entry.get("instruction"))
    if not isinstance(prompt, str):
        raise ValueError(f"{where} has no prompt")
    images = entry.get("images", entry.get("input_images", []))
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError(f"{where}: images must be a list of file names")
    settings = entry.get("settings", {})
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: settings must be an object of pipeline keyword arguments")
    return Example(name, prompt, tuple(str(folder / image) for image in images), dict(settings),
                   str(entry.get("title", "")))


def examples_for(name: str, examples_dir: str | os.PathLike | None = None) -> list[Example]:
    return load_examples(examples_dir).get(name, [])


def example_settings(example: Example) -> dict[str, Any]:
    """The preset's recommended settings with the example's own on top."""
    base = dict(PRESETS[example.preset].settings) if example.preset in PRESETS else {}
    if example.preset == "fewshot" and example.images:
        base["use_input_image_size_as_output"] = len(example.images)
    return {**base, **example.settings}
