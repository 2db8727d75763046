"""Saved compositions: a whole request kept as one file (the interleaved prompt, its input pictures, the settings,
the adapters by name and strength, the preset), to load back in the studio or in Python.

    save_composition("scene.omnigen.zip", Composition(prompt, ["a.png"], settings, {"style": 0.8}, "edit"))
    composition = load_composition("scene.omnigen.zip")   # every member checked; pictures read into memory
    out = generate(pipe, composition)                      # the adapters must be loaded under those names
    out.save("result.png")                                 # the PNG the studio writes for it, byte for byte

The file is a zip: `composition.json` (the manifest) and `images/K.EXT` (the pictures, as they were given).
The manifest records each picture's SHA-256; loading refuses members that would land outside a folder, links,
anything the manifest does not name, a picture whose bytes do not match, and a manifest whose fields do not hold
what they should (a forged or damaged file), before anything is returned.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .files import atomic_save, escapes_folder
from .images import load_image
from .settings import GenerationSettings, setting_names

MANIFEST = "composition.json"
FORMAT = "omnigen-composition"
VERSION = 1
MAX_IMAGES = 16
MAX_MEMBER_BYTES = 64 << 20  # one picture
MAX_PIXELS = 40_000_000
MANIFEST_KEYS = {"format", "version", "prompt", "images", "settings", "adapters", "preset"}
TAG = re.compile(r"<\|image_(\d+)\|>")


class CompositionError(ValueError):
    """A composition file that cannot be loaded or saved; the message says what is wrong with it."""


@dataclass
class Composition:
    """What one generation asks: prompt, input pictures (files or PIL images), settings, adapters, preset."""

    prompt: str
    images: list[Any] = field(default_factory=list)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    adapters: dict[str, float] = field(default_factory=dict)
    preset: str = ""


# ----------------------------------------------------------------------------- saving


def picture_bytes(picture: Any) -> tuple[bytes, str]:
    """A picture as stored: a file's own bytes (its pixels exactly), or a PIL image as PNG."""
    if isinstance(picture, Image.Image):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    path = Path(picture)
    suffix = path.suffix.lower() if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp") else ".png"
    return path.read_bytes(), suffix


def save_composition(path: str | os.PathLike, composition: Composition) -> Path:
    """Write the composition as one zip, atomically (a temporary name, then renamed)."""
    check_prompt(composition.prompt, len(composition.images))
    entries, members = [], {}
    for k, picture in enumerate(composition.images, start=1):
        data, suffix = picture_bytes(picture)
        name = f"images/{k}{suffix}"
        members[name] = data
        entries.append({"file": name, "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": FORMAT, "version": VERSION, "prompt": composition.prompt, "images": entries,
                "settings": composition.settings.as_dict(), "adapters": dict(composition.adapters),
                "preset": composition.preset or ""}

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False))
            for name, data in members.items():
                zipped.writestr(name, data)

    return atomic_save(path, write)


# ----------------------------------------------------------------------------- loading


def load_composition(path: str | os.PathLike) -> Composition:
    """Read and check a composition file; its pictures come back as PIL images, in order."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zipped:
            members = {m.filename: m for m in zipped.infolist() if not m.is_dir()}
            check_members(path.name, list(members.values()))
            if MANIFEST not in members:
                raise CompositionError(f"{path.name} is not a composition: it has no {MANIFEST}")
            manifest = read_manifest(path.name, zipped.read(MANIFEST))
            images = [read_picture(path.name, zipped, members, entry, k)
                      for k, entry in enumerate(manifest["images"], start=1)]
            named = {MANIFEST} | {entry["file"] for entry in manifest["images"]}
            extra = sorted(set(members) - named)
            if extra:
                raise CompositionError(f"{path.name} holds files its manifest does not name ({', '.join(extra[:3])}): "
                                       "it is not a composition as the studio writes them")
    except zipfile.BadZipFile as error:
        raise CompositionError(f"{path.name} is not a readable zip file ({error})") from None
    except FileNotFoundError:
        raise CompositionError(f"the composition {str(path)!r} does not exist") from None
    return Composition(manifest["prompt"], images, manifest_settings(path.name, manifest["settings"]),
                       manifest["adapters"], manifest["preset"])


def check_members(archive: str, members: list[zipfile.ZipInfo]) -> None:
    """Refuse the zip before reading anything from it: escaping names, links, oversized members."""
    escaping = [m.filename for m in members if escapes_folder(m.filename)]
    if escaping:
        raise CompositionError(f"{archive} is refused: {', '.join(escaping[:3])} would land outside its folder "
                               "(absolute paths and '..' are not allowed in a composition)")
    links = [m.filename for m in members if stat.S_ISLNK(m.external_attr >> 16)]
    if links:
        raise CompositionError(f"{archive} is refused: {', '.join(links[:3])} is a link")
    large = [m.filename for m in members if m.file_size > MAX_MEMBER_BYTES]
    if large or len(members) > MAX_IMAGES + 1:
        raise CompositionError(f"{archive} is refused: it holds {'a member over 64 MB' if large else 'too many files'}"
                               f"; a composition is a manifest and at most {MAX_IMAGES} pictures")


def read_manifest(archive: str, data: bytes) -> dict[str, Any]:
    """The manifest, every field of the type it must have."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CompositionError(f"{archive}: {MANIFEST} is not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CompositionError(f"{archive}: {MANIFEST} is not a composition manifest (format {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CompositionError(f"{archive}: composition version {manifest.get('version')!r} is not one this "
                               f"version of omnigen reads ({VERSION})")
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        raise CompositionError(f"{archive}: the manifest has unknown field(s) {', '.join(unknown)}")
    forged = lambda what: CompositionError(f"{archive}: the manifest's {what}")  # noqa: E731
    if not isinstance(manifest.get("prompt"), str) or not manifest["prompt"].strip():
        raise forged("prompt is missing or not text")
    images = manifest.get("images", [])
    if not isinstance(images, list) or len(images) > MAX_IMAGES or not all(
            isinstance(e, dict) and set(e) == {"file", "sha256"} and isinstance(e["file"], str)
            and isinstance(e["sha256"], str) for e in images):
        raise forged("images must be a list of {file, sha256}")
    files = [e["file"] for e in images]
    if len(set(files)) != len(files) or any(not re.fullmatch(r"images/\d+\.\w+", f) for f in files):
        raise forged("images name files outside images/, or one twice")
    if not isinstance(manifest.get("settings"), dict):
        raise forged("settings must be an object")
    adapters = manifest.get("adapters", {})
    if not isinstance(adapters, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for k, v in adapters.items()):
        raise forged("adapters must map names to strengths")
    manifest["adapters"] = {k: float(v) for k, v in adapters.items()}
    if not isinstance(manifest.setdefault("preset", ""), str):
        raise forged("preset must be text")
    check_prompt(manifest["prompt"], len(images), archive)
    return manifest


def read_picture(archive: str, zipped: zipfile.ZipFile, members: dict, entry: dict, k: int) -> Image.Image:
    if entry["file"] not in members:
        raise CompositionError(f"{archive}: the manifest names {entry['file']}, which the zip does not hold")
    data = zipped.read(entry["file"])
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CompositionError(f"{archive}: image {k} ({entry['file']}) does not match its checksum: the file was "
                               "changed after it was saved")
    try:
        picture = Image.open(io.BytesIO(data))
        if picture.width * picture.height > MAX_PIXELS:
            raise CompositionError(f"{archive}: image {k} is {picture.width}x{picture.height}, over "
                                   f"{MAX_PIXELS:,} pixels")
        picture.load()
    except (OSError, Image.DecompressionBombError) as error:
        raise CompositionError(f"{archive}: image {k} ({entry['file']}) is not a readable picture ({error})") from None
    return picture


def manifest_settings(archive: str, values: dict[str, Any]) -> GenerationSettings:
    unknown = sorted(set(values) - set(setting_names()))
    if unknown:
        raise CompositionError(f"{archive}: the manifest's settings name unknown setting(s) {', '.join(unknown)}")
    try:
        return GenerationSettings().replace(**values).check()
    except (TypeError, ValueError) as error:
        raise CompositionError(f"{archive}: the manifest's settings are not valid: {error}") from None


def check_prompt(prompt: str, count: int, archive: str = "the composition") -> None:
    """Image k of the prompt is picture k: every placeholder has its picture and every picture its placeholder."""
    used = {int(k) for k in TAG.findall(prompt or "")}
    if used != set(range(1, count + 1)):
        raise CompositionError(f"{archive}: the prompt uses image(s) {sorted(used) or 'none'} but holds {count} "
                               "picture(s); image k of the prompt is picture k")


# ----------------------------------------------------------------------------- running


def generate(pipe, composition: Composition, **changes: Any):
    """Run the composition with `pipe`: its adapters at their strengths (each must be loaded under its name;
    other loaded adapters are switched off for the call and put back after), each record naming the preset."""
    from .lora import lora_scales

    before = lora_scales(pipe.transformer)
    missing = sorted(set(composition.adapters) - set(before))
    if missing:
        raise CompositionError(f"the composition uses the adapter(s) {', '.join(missing)}: load them first "
                               "(pipe.load_lora(PATH, name=NAME))")
    wanted = {name: composition.adapters.get(name, 0.0) for name in before}
    try:
        if wanted != before:
            pipe.set_lora_scales(wanted)
        pictures = [load_image(picture) for picture in composition.images]
        out = pipe(composition.prompt, pictures or None, composition.settings.replace(**changes))
    finally:
        if wanted != before:
            pipe.set_lora_scales(before)
    if composition.preset:
        out.settings = [{**record, "preset": composition.preset} for record in out.settings]
    return out
