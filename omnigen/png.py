"""The record of what made a picture, stored in its PNG, and its inverse.

    save_png(image, "result.png", record)      # the record: a `omnigen` iTXt chunk of JSON (generation_record)
    read_settings("result.png")                 # the record as stored, or None
    found = picture_settings("result.png")      # its valid settings, prompt, inputs; what was ignored and why
    python_snippet(record)                      # the OmniGenPipeline call that makes the same picture again

The CLI, Python (OmniGenOutput.save) and the studio write the same record. The reader of a picture from
elsewhere (`picture_settings`) reads the chunk itself, not through PIL: a forged file may hold megabytes of text,
or a compressed chunk that inflates to gigabytes, and only MAX_RECORD_BYTES of it are ever read.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .files import atomic_save
from .presets import PRESETS
from .settings import DEFAULT_MODEL, GenerationSettings, check_value, setting_field, setting_names

SETTINGS_KEY = "omnigen"
NOT_RECORDED = ("num_images_per_prompt", "offload_kv_cache")  # how many and where, not what
MAX_RECORD_BYTES = 64 * 1024  # a real record is about 2 KB, most of it the negative prompt
MAX_PROMPT_CHARS = 20_000
MAX_INPUT_IMAGES = 5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What a record holds besides the generation settings (generation_record, and the studio's own keys).
DESCRIPTIVE_KEYS = ("prompt", "num_input_images", "model", "device", "dtype", "loras", "offload", "preset",
                    "kept_pixels_outside_mask")


# ----------------------------------------------------------------------------- writing a record


def generation_record(settings: GenerationSettings, prompt: str, num_input_images: int, height: int, width: int,
                      seed: int | None, pipe: Any) -> dict[str, Any]:
    """What made one image: its prompt, settings, size, seed, and the pipeline's model, device, dtype, adapters
    and offload (`pipe`: an OmniGenPipeline)."""
    kept = {k: v for k, v in settings.to_kwargs().items() if k not in NOT_RECORDED}
    return dict(kept, prompt=prompt, num_input_images=num_input_images, height=height, width=width, seed=seed,
                use_input_image_size_as_output=settings.use_input_image_size_as_output or False,
                model=pipe.model_id, device=str(pipe.device), dtype=str(pipe.dtype).replace("torch.", ""),
                loras=dict(pipe.loras), offload=pipe.offload)


def save_png(image: Image.Image, path: str | os.PathLike, settings: dict) -> Path:
    """Write atomically (temporary name, then rename) with the settings as JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SETTINGS_KEY, json.dumps(settings, sort_keys=True, default=str))
    return atomic_save(path, lambda temporary: image.save(temporary, format="PNG", pnginfo=info))


def read_settings(path_or_image: str | os.PathLike | Image.Image) -> dict | None:
    """The settings stored by save_png, or None for a PNG without them (a file this project wrote: unbounded)."""
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    text = image.info.get(SETTINGS_KEY) if hasattr(image, "info") else None
    return json.loads(text) if text else None


class NoSettings(ValueError):
    """The picture carries no readable settings; the message says why."""


@dataclass
class PictureSettings:
    """What a picture's record gives: valid settings, its prompt and inputs, and what was ignored and why."""

    record: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)  # setting name -> value, each valid, all checked together
    prompt: str | None = None
    num_input_images: int = 0
    preset: str | None = None
    loras: dict[str, float] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading a record, bounded


def read_record_text(path: str | Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The text of the PNG's `omnigen` chunk (tEXt, zTXt or iTXt), at most `limit` bytes of it, or NoSettings."""
    with open(path, "rb") as handle:
        if handle.read(8) != PNG_SIGNATURE:
            raise NoSettings("this file is not a PNG: only PNGs made by OmniGen Studio (the studio, the CLI or "
                             "Python) carry their settings")
        while header := handle.read(8):
            if len(header) < 8:
                break
            length, kind = struct.unpack(">I4s", header)
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                keyword = handle.read(min(length, 80)).split(b"\0", 1)[0]
                handle.seek(-min(length, 80), 1)
                if keyword == SETTINGS_KEY.encode():
                    if length > limit + 1024:  # a compressed chunk is smaller than its text: the cap holds too
                        raise NoSettings(f"its settings are {length:,} bytes, more than the {limit:,} a real "
                                         "record needs: refused unread")
                    return chunk_text(kind, handle.read(length), limit)
            if kind == b"IEND":
                break
            handle.seek(length + 4, 1)  # the data and its CRC
    raise NoSettings("this picture carries no OmniGen settings (it was not made by OmniGen Studio, or an editor "
                     "removed its metadata when it was saved or copied)")


def chunk_text(kind: bytes, data: bytes, limit: int) -> str:
    keyword, _, rest = data.partition(b"\0")
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return inflate(rest[1:], limit).decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]  # flag, method
    _, _, rest = rest.partition(b"\0")  # language tag
    _, _, text = rest.partition(b"\0")  # translated keyword
    try:
        return (inflate(text, limit) if compressed else text).decode("utf-8")
    except UnicodeDecodeError:
        raise NoSettings("its settings are not valid UTF-8 text") from None


def inflate(data: bytes, limit: int) -> bytes:
    engine = zlib.decompressobj()
    try:
        text = engine.decompress(data, limit + 1)
    except zlib.error:
        raise NoSettings("its settings chunk is damaged (it does not decompress)") from None
    if len(text) > limit:
        raise NoSettings(f"its settings inflate to more than {limit:,} bytes, more than a real record needs: refused")
    return text


def read_record(path: str | Path, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    text = read_record_text(path, limit)
    try:
        record = json.loads(text, parse_constant=lambda name: None)  # NaN, Infinity: not numbers a setting takes
    except (json.JSONDecodeError, RecursionError):
        raise NoSettings("its settings are not valid JSON (the metadata was damaged or forged)") from None
    if not isinstance(record, dict):
        raise NoSettings(f"its settings are a JSON {type(record).__name__}, not an object of named settings")
    return record


# ----------------------------------------------------------------------------- settings from a picture


def picture_settings(path: str | Path, max_side: int | None = None, limit: int = MAX_RECORD_BYTES,
                     base: GenerationSettings | None = None) -> PictureSettings:
    """The valid settings of a picture's record (NoSettings when it has none), each checked alone and then all
    together over `base` (the page's defaults: e.g. guidance_start below guidance_end, sides the model can draw);
    the rest in `ignored`."""
    record = read_record(path, limit)
    found = PictureSettings(record)
    for name in setting_names():
        if name in record:
            value = record[name]
            if name == "use_input_image_size_as_output" and isinstance(value, bool):
                value = int(value)  # the official API's boolean means image 1
            try:
                check_value(setting_field(name), value)
                found.settings[name] = value
            except ValueError as error:  # the message opens with the setting's name
                found.ignored.append(str(error))
    drop_conflicts(found, max_side, base)
    read_descriptive(found, record)
    unknown = sorted(key for key in record if key not in setting_names() and key not in DESCRIPTIVE_KEYS)
    if unknown:
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        shown = ", ".join(repr(str(k)[:40]) for k in unknown[:8]) + more
        found.ignored.append(f"unknown keys, not settings of this studio: {shown}")
    return found


def drop_conflicts(found: PictureSettings, max_side: int | None, base: GenerationSettings | None = None) -> None:
    """Drop the settings named by a check of all of them together until the rest pass (each valid alone)."""
    for _ in range(len(found.settings) + 1):
        try:
            GenerationSettings.from_record(found.settings, base).check(max_side)
            return
        except ValueError as error:
            message = str(error)
            first = message.split(" ", 1)[0]
            named = [first] if first in found.settings else [n for n in found.settings if f"{n} " in message]
            if not named:
                found.ignored.append(f"all settings: {message}")
                found.settings.clear()
                return
            found.settings.pop(named[0])
            found.ignored.append(message if first == named[0] else f"{named[0]}: {message}")


def read_descriptive(found: PictureSettings, record: dict[str, Any]) -> None:
    prompt = record.get("prompt")
    if isinstance(prompt, str) and len(prompt) <= MAX_PROMPT_CHARS:
        found.prompt = prompt
    elif "prompt" in record:
        found.ignored.append("prompt: " + (f"longer than {MAX_PROMPT_CHARS:,} characters" if isinstance(prompt, str)
                                           else f"not text ({type(prompt).__name__})"))
    count = record.get("num_input_images", 0)
    if isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_INPUT_IMAGES:
        found.num_input_images = count
    else:
        found.ignored.append(f"num_input_images: not a whole number from 0 to {MAX_INPUT_IMAGES} ({str(count)[:40]})")
    preset = record.get("preset")
    if preset is not None:
        if isinstance(preset, str) and preset in PRESETS:
            found.preset = preset
        else:
            found.ignored.append(f"preset: not one of this studio's presets ({str(preset)[:40]})")
    loras = record.get("loras") or {}
    if isinstance(loras, dict) and all(isinstance(k, str) and is_number(v) for k, v in loras.items()):
        found.loras = {k[:80]: float(v) for k, v in list(loras.items())[:16]}
    else:
        found.ignored.append("loras: not a list of adapter names and strengths")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- the same picture again


def reproduce_kwargs(record: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments that remake exactly the one image whose record (PNG settings) this is."""
    settings = GenerationSettings.from_record(record)
    kwargs = settings.to_kwargs(only_reproducing=True)
    if settings.use_input_image_size_as_output:  # the size came from an input image, not from these
        kwargs.pop("height"), kwargs.pop("width")
    else:
        kwargs.pop("use_input_image_size_as_output")
    return kwargs


def python_snippet(record: dict[str, Any], image_paths: list[str] | None = None) -> str:
    """The OmniGenPipeline call that remakes the image this record (PNG settings) describes."""
    kwargs = reproduce_kwargs(record)
    images = image_paths if image_paths is not None else [
        f"image-{k}.png" for k in range(1, int(record.get("num_input_images", 0)) + 1)]
    lines = ["from PIL import Image", "from omnigen import OmniGenPipeline", "",
             f"pipe = OmniGenPipeline.from_pretrained({model_argument(record.get('model'))}"
             f"device={record.get('device')!r}, dtype={record.get('dtype')!r})"]
    for name, scale in (record.get("loras") or {}).items():
        lines.append(f"pipe.load_lora('PATH/TO/{name}', name={name!r}, scale={scale!r})  # the adapter it used")
    lines.append(f"images = [{', '.join(f'Image.open({p!r})' for p in images)}]  # image 1, 2, ... of the prompt")
    lines.append("out = pipe(")
    lines.append(f"    {record.get('prompt', '')!r},")
    lines.append("    images or None,")
    lines += [f"    {key}={value!r}," for key, value in kwargs.items()]
    lines.append(")")
    lines.append("out.save('result.png')  # the PNG with its settings")
    if record.get("kept_pixels_outside_mask"):
        lines.append("# The studio then kept image 1's pixels outside a painted mask: "
                     "app.compose.composite_edit(Image.open(...), out.images[0], mask, max_input_image_size)")
    return "\n".join(lines) + "\n"


def model_argument(model: str | None) -> str:
    """How the snippet names the model (with a trailing ", " where it names one): nothing for the embedded model,
    a Hub id as given, a folder by its name alone (a server's paths are not the reader's)."""
    if not model or Path(model).expanduser().resolve() == DEFAULT_MODEL:
        return ""
    local = Path(model).expanduser()
    if local.is_absolute() or local.exists() or model.startswith((".", "~")) or model.count("/") != 1:
        return f"'PATH/TO/{local.name}', "
    return f"{model!r}, "
