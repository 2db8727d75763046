"""PNG files that carry the settings that made them (a `omnigen` iTXt chunk of JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

from .files import atomic_save

SETTINGS_KEY = "omnigen"


def save_png(image: Image.Image, path: str | os.PathLike, settings: dict) -> Path:
    """Write atomically (temporary name, then rename) with the settings as JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SETTINGS_KEY, json.dumps(settings, sort_keys=True, default=str))
    return atomic_save(path, lambda temporary: image.save(temporary, format="PNG", pnginfo=info))


def read_settings(path_or_image: str | os.PathLike | Image.Image) -> dict | None:
    """The settings stored by save_png, or None for a PNG without them."""
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    text = image.info.get(SETTINGS_KEY) if hasattr(image, "info") else None
    return json.loads(text) if text else None
