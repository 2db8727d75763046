"""Comparison grids: one or two axes of values, a picture for every cell, and one labelled image of them all.

    from omnigen.grid import parse_axis, run_grid
    x = parse_axis("seed", "0, 1, 2")                 # a list of values
    y = parse_axis("guidance_scale", "1.5..3.5:3")     # or a range START..END:COUNT (numbers only)
    grid = run_grid(pipe, "a red circle", x=x, y=y, settings=pipe.default_settings)
    grid.image.save("grid.png"); grid.cells[0].image; grid.cells[0].settings   # each cell: an ordinary result

An axis is a setting (seed, guidance_scale, img_guidance_scale, num_inference_steps, sampler, ...), the guidance
interval (values START-END, e.g. 0.2-1.0), the prompt (variants separated by '|' or new lines), an input picture
of one slot (image_K: file names), or an adapter's strength (lora:NAME). Every cell is checked before anything
runs; a cell that fails at run time keeps its reason in place and the others go on.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .errors import sentence
from .files import atomic_save
from .images import load_image
from .settings import GenerationSettings, Limits, parse_value, setting_field, value_type

GRID_KEY = "omnigen-grid"  # the PNG text chunk that describes a grid image (its axes and cells)
# Settings an axis may vary; the others (sizes, modes) would give cells that cannot share a grid.
SETTING_AXES = ("seed", "guidance_scale", "img_guidance_scale", "num_inference_steps", "sampler", "schedule",
                "time_shift", "cache_threshold", "max_input_image_size")
SPECIAL_AXES = ("guidance_interval", "prompt")  # and image_K, lora:NAME
SHORT_NAMES = {"guidance_scale": "guidance", "img_guidance_scale": "image guidance", "num_inference_steps": "steps",
               "guidance_interval": "interval", "max_input_image_size": "max input", "cache_threshold": "step cache"}
DEFAULT_MAX_CELLS = Limits().max_grid_cells  # None: no limit
RANGE = re.compile(r"\s*(-?[\d.]+(?:e-?\d+)?)\s*\.\.\s*(-?[\d.]+(?:e-?\d+)?)\s*:\s*(\d+)\s*")


class GridError(ValueError):
    """An axis or a grid that cannot be run; the message says which axis and what to write instead."""


def axis_names() -> tuple[str, ...]:
    """What an axis may be: these, image_K (K from 1) and lora:NAME."""
    return SETTING_AXES + SPECIAL_AXES


@dataclass(frozen=True)
class Axis:
    """One axis of a grid: what varies and its values, in order."""

    name: str
    values: tuple[Any, ...]

    def label(self, value: Any) -> str:
        """How a value is written on the grid image and under a cell."""
        if self.name == "prompt":
            return str(value)
        if self.name.startswith("image_"):
            return f"image {self.name[6:]}: {Path(str(value)).name if isinstance(value, (str, os.PathLike)) else '?'}"
        if self.name.startswith("lora:"):
            return f"{self.name[5:]} {format_number(value)}"
        if self.name == "guidance_interval":
            return f"interval {format_number(value[0])}-{format_number(value[1])}"
        return f"{SHORT_NAMES.get(self.name, self.name)} {format_number(value)}"

    def changes(self, value: Any) -> dict[str, Any]:
        """The settings this axis sets for one value (prompt, images and adapters are not settings: none)."""
        if self.name == "guidance_interval":
            return {"guidance_start": value[0], "guidance_end": value[1]}
        if self.name in SETTING_AXES:
            return {self.name: value}
        return {}


def format_number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_axis(name: str, text: str | Sequence[Any]) -> Axis:
    """An axis from its name and values: a list (text separated by commas, or by '|' or new lines for prompts and
    file names), or for a number setting a range 'START..END:COUNT'. Every value is checked here."""
    name = (name or "").strip()
    kind = axis_kind(name)
    raw = split_values(name, text) if isinstance(text, str) else list(text)
    if isinstance(text, str) and kind == "number" and len(raw) == 1 and RANGE.fullmatch(raw[0]):
        raw = expand_range(name, raw[0])
    raw = [value for value in raw if not (isinstance(value, str) and not value.strip())]
    if not raw:
        raise GridError(f"the axis {name} has no values; write them separated by commas (e.g. 1, 2, 3)"
                        + (" or as a range START..END:COUNT" if kind == "number" else ""))
    return Axis(name, tuple(axis_value(name, kind, value) for value in raw))


def axis_kind(name: str) -> str:
    if name in ("prompt",) or re.fullmatch(r"image_[1-9]\d*", name):
        return "text"
    if name.startswith("lora:") and name[5:].strip():
        return "number"
    if name == "guidance_interval":
        return "interval"
    if name in SETTING_AXES:
        return "number" if value_type(setting_field(name)) in (int, float) else "choice"
    raise GridError(f"{name!r} cannot be an axis; choose one of {', '.join(axis_names())}, image_K (an input "
                    "picture of slot K) or lora:NAME (an adapter's strength)")


def split_values(name: str, text: str) -> list[str]:
    separator = r"\||\n" if axis_kind(name) == "text" or "|" in text or "\n" in text else ","
    return [part.strip() for part in re.split(separator, text)]


def expand_range(name: str, text: str) -> list[Any]:
    start, end, count = RANGE.fullmatch(text).groups()
    count = int(count)
    if count < 1:
        raise GridError(f"the axis {name}: a range needs at least one value, got {text!r}")
    a, b = float(start), float(end)
    values = [a + (b - a) * i / (count - 1) for i in range(count)] if count > 1 else [a]
    integer = not name.startswith("lora:") and value_type(setting_field(name)) is int
    return [round(v) for v in values] if integer else [round(v, 6) for v in values]


def axis_value(name: str, kind: str, value: Any) -> Any:
    """One value, checked as its setting checks it."""
    try:
        if kind == "interval":
            return interval_value(value)
        if name.startswith("lora:"):
            number = lora_strength(value)
            if not math.isfinite(number):
                raise ValueError(f"{value!r} is not a finite number")
            return number
        if kind == "text":
            return value if not isinstance(value, str) else value.strip()
        return parse_value(name, value)
    except ValueError as error:
        raise GridError(f"the axis {name}: {error}") from None


def lora_strength(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):  # Python's own words ("could not convert ...") name no axis and no fix
        raise ValueError(f"{value!r} is not a number") from None


def interval_value(value: Any) -> tuple[float, float]:
    parts = value if isinstance(value, (tuple, list)) else str(value).split("-")
    if len(parts) != 2:
        raise ValueError(f"{value!r} is not an interval: write START-END, e.g. 0.2-1.0")
    start, end = parse_value("guidance_start", parts[0]), parse_value("guidance_end", parts[1])
    if start >= end:
        raise ValueError(f"the interval {value!r} must start below its end")
    return start, end


# ----------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One cell: where it sits, what it asks, and (once run) its picture, settings, file or the reason it failed."""

    row: int
    column: int
    labels: tuple[str, ...]
    prompt: str
    images: list[Any]
    settings: GenerationSettings
    loras: dict[str, float] = field(default_factory=dict)
    image: Image.Image | None = None
    record: dict[str, Any] | None = None
    path: str | None = None
    error: str | None = None

    @property
    def caption(self) -> str:
        return " · ".join(self.labels)


def plan_cells(prompt: str, images: Sequence[Any], settings: GenerationSettings, x: Axis, y: Axis | None = None,
               max_cells: int | None = DEFAULT_MAX_CELLS, max_side: int | None = None) -> list[Cell]:
    """Every cell of the grid, row by row (y down, x across), each checked: a bad value or a grid over the cell
    limit (None: no limit) is refused before anything runs; a cell whose combination of values is not valid gets
    its reason in `error` and is not run. Each cell makes one picture."""
    count = len(x.values) * (len(y.values) if y else 1)
    if max_cells and count > max_cells:
        raise GridError(f"the grid has {count} cells ({len(x.values)} x {len(y.values) if y else 1}), over the limit "
                        f"of {max_cells} (max_grid_cells); use fewer values")
    if y is not None and y.name == x.name:
        raise GridError(f"both axes are {x.name}; choose two different axes")
    cells = []
    for row, y_value in enumerate(y.values if y else [None]):
        for column, x_value in enumerate(x.values):
            chosen = [(x, x_value)] + ([(y, y_value)] if y else [])
            cells.append(plan_cell(prompt, images, settings, chosen, row, column, max_side))
    return cells


def plan_cell(prompt: str, images: Sequence[Any], settings: GenerationSettings, chosen: list[tuple[Axis, Any]],
              row: int, column: int, max_side: int | None) -> Cell:
    changes: dict[str, Any] = {"num_images_per_prompt": 1}
    images, loras = list(images), {}
    for axis, value in chosen:
        changes.update(axis.changes(value))
        if axis.name == "prompt":
            prompt = value
        elif axis.name.startswith("image_"):
            k = int(axis.name[6:])
            if k > len(images) + 1:
                raise GridError(f"the axis {axis.name}: the prompt has {len(images)} input picture(s); vary "
                                f"image_{len(images) + 1} or a lower slot")
            images = images[:k - 1] + [value] + images[k:]
        elif axis.name.startswith("lora:"):
            loras[axis.name[5:]] = value
    cell = Cell(row, column, tuple(axis.label(value) for axis, value in chosen), prompt, images,
                settings.replace(**changes), loras)
    try:
        cell.settings.check(max_side)
    except ValueError as error:  # this combination only (e.g. too few steps for a sampler): said in its place
        cell.error = sentence(str(error))
    return cell


# ----------------------------------------------------------------------------- running with a pipeline


@dataclass
class GridResult:
    x: Axis
    y: Axis | None
    cells: list[Cell]
    image: Image.Image


def run_grid(pipe, prompt: str, images: Sequence[Any] = (), settings: GenerationSettings | None = None, *,
             x: Axis, y: Axis | None = None, max_cells: int | None = DEFAULT_MAX_CELLS,
             on_cell: Callable[[Cell], None] | None = None) -> GridResult:
    """Run every cell with `pipe` (an OmniGenPipeline) and draw the grid. Adapter axes need the adapter loaded
    (pipe.load_lora); its strength is put back afterwards. A failing cell keeps its reason; the others go on."""
    from .errors import user_message

    from .lora import lora_scales

    cells = plan_cells(prompt, images, pipe.settings(settings), x, y, max_cells, pipe.max_image_side)
    before = lora_scales(pipe.transformer)
    missing = sorted({name for cell in cells for name in cell.loras} - set(before))
    if missing:
        raise GridError(f"the adapter(s) {', '.join(missing)} are not loaded; load them first (pipe.load_lora)")
    try:
        for cell in cells:
            if cell.error is not None:
                if on_cell is not None:
                    on_cell(cell)
                continue
            try:
                if cell.loras:
                    pipe.set_lora_scales({**before, **cell.loras})
                out = pipe(cell.prompt, [load_image(i) for i in cell.images] or None, cell.settings, progress=False)
                cell.image, cell.record = out.images[0], out.settings[0]
            except (ValueError, FileNotFoundError, RuntimeError, MemoryError) as error:
                cell.error = user_message(error, cell.settings, len(cell.images), pipe.offload)
            if on_cell is not None:
                on_cell(cell)
    finally:
        if before != lora_scales(pipe.transformer):
            pipe.set_lora_scales(before)
    return GridResult(x, y, cells, grid_image(cells, x, y))


# ----------------------------------------------------------------------------- the labelled image


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's own font at `size` pixels (scalable where Pillow has FreeType, its bitmap font otherwise)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1
        return ImageFont.load_default()


def wrap(text: str, width: int, typeface, draw: ImageDraw.ImageDraw, lines: int = 3) -> list[str]:
    """`text` in at most `lines` lines of at most `width` pixels; a cut line ends with '…'."""
    words, out, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=typeface) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
    out.append(line)
    out = [fit(part, width, typeface, draw) for part in out]
    if len(out) > lines:
        out = out[:lines - 1] + [fit(" ".join(out[lines - 1:]), width, typeface, draw, force=True)]
    return out


def fit(text: str, width: int, typeface, draw: ImageDraw.ImageDraw, force: bool = False) -> str:
    if draw.textlength(text, font=typeface) <= width and not force:
        return text
    while text and draw.textlength(text + "…", font=typeface) > width:
        text = text[:-1]
    return text + "…"


def grid_image(cells: list[Cell], x: Axis, y: Axis | None = None, min_cell: int = 160) -> Image.Image:
    """The cells side by side, x across and y down, with each column's and row's value written beside it. Cells
    smaller than `min_cell` pixels are enlarged (nearest neighbour, so pixels stay sharp) to keep labels legible;
    a failed cell shows its reason."""
    sizes = [c.image.size for c in cells if c.image is not None] or [(c.settings.width, c.settings.height)
                                                                       for c in cells]
    width, height = max(s[0] for s in sizes), max(s[1] for s in sizes)
    zoom = max(1, math.ceil(min_cell / max(width, height)))
    cw, ch = width * zoom, height * zoom
    size = max(12, min(28, cw // 11))
    typeface, gap = font(size), max(4, size // 3)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    headers = [wrap(x.label(value), cw, typeface, probe) for value in x.values]
    top = (size + 4) * max(len(lines) for lines in headers) + 2 * gap
    widest = 0 if y is None else max(probe.textlength(y.label(v), font=typeface) for v in y.values)
    left = 0 if y is None else min(cw, int(widest)) + 2 * gap
    columns, rows = len(x.values), len(y.values) if y else 1
    canvas = Image.new("RGB", (left + columns * (cw + gap), top + rows * (ch + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(headers):
        for i, line in enumerate(lines):
            draw.text((left + column * (cw + gap), top - gap - (len(lines) - i) * (size + 4)), line, "black", typeface)
    for row, value in enumerate(y.values if y else []):
        lines = wrap(y.label(value), left - gap, typeface, draw)
        for i, line in enumerate(lines):
            draw.text((gap // 2, top + row * (ch + gap) + ch // 2 - len(lines) * (size + 4) // 2 + i * (size + 4)),
                      line, "black", typeface)
    for cell in cells:
        box = (left + cell.column * (cw + gap), top + cell.row * (ch + gap))
        if cell.image is not None:
            canvas.paste(cell.image.convert("RGB").resize((cw, ch), Image.NEAREST), box)
        else:
            draw_failure(draw, box, (cw, ch), cell.error or "not run", size)
    return canvas


def draw_failure(draw: ImageDraw.ImageDraw, box: tuple[int, int], size: tuple[int, int], reason: str,
                 text_size: int) -> None:
    """A grey cell with its reason written in it."""
    (x0, y0), (w, h) = box, size
    draw.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=(235, 235, 235), outline=(176, 0, 32))
    small = font(max(10, text_size - 2))
    for i, line in enumerate(wrap(reason, w - 8, small, draw, lines=max(1, h // (text_size + 2) - 1))):
        draw.text((x0 + 4, y0 + 4 + i * (text_size + 2)), line, (176, 0, 32), small)


def failed_cell_image(reason: str, size: tuple[int, int], min_cell: int = 160) -> Image.Image:
    """A failed cell on its own (for a gallery of cells): grey, its reason written in it."""
    zoom = max(1, math.ceil(min_cell / max(size)))
    picture = Image.new("RGB", (size[0] * zoom, size[1] * zoom), "white")
    draw_failure(ImageDraw.Draw(picture), (0, 0), picture.size, reason, max(12, min(28, picture.width // 11)))
    return picture


def grid_description(cells: list[Cell], x: Axis, y: Axis | None) -> dict[str, Any]:
    """What a grid image shows, for its PNG: the axes with their labels, and each cell's file or failure."""
    return {"x": {"name": x.name, "labels": [x.label(v) for v in x.values]},
            "y": None if y is None else {"name": y.name, "labels": [y.label(v) for v in y.values]},
            "cells": [{"row": c.row, "column": c.column, "file": Path(c.path).name if c.path else None,
                       "seed": c.settings.seed, "error": c.error} for c in cells]}


def save_grid(image: Image.Image, path: str | os.PathLike, description: dict[str, Any]) -> Path:
    """Write the grid image atomically, its description (see grid_description) in a PNG text chunk."""
    import json

    info = PngImagePlugin.PngInfo()
    info.add_itxt(GRID_KEY, json.dumps(description, sort_keys=True, default=str))
    return atomic_save(path, lambda temporary: image.save(temporary, format="PNG", pnginfo=info))


def with_paths(cells: list[Cell], folder: str | os.PathLike, stem: str = "cell") -> list[Cell]:
    """Save every finished cell as an ordinary PNG with its settings (FOLDER/STEM-ROW-COLUMN.png)."""
    from .png import save_png

    for cell in cells:
        if cell.image is not None and cell.record is not None:
            cell.path = str(save_png(cell.image, Path(folder) / f"{stem}-{cell.row}-{cell.column}.png", cell.record))
    return cells

