"""Condition images from a user's picture, for the edge- and depth-guided presets.

    edges = canny_edges(Image.open("photo.png"))      # white edges on black, as the model was shown
    depth = silhouette_depth(Image.open("scene.png"))  # a crude one-level depth proxy, see its docstring

Only what OpenCV can honestly do is here: Canny edges are the real thing; there is no monocular
depth estimator, so the depth helper only separates a plain background from what stands on it.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

# The thresholds of the mini world's edge maps (omnigen/mini/world.py), so user maps look like training maps.
CANNY_LOW, CANNY_HIGH = 100, 200


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def canny_edges(image: Image.Image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """Canny edges over the three colour channels, white on black, as an RGB image of the same size."""
    if not 0 <= low <= high:
        raise ValueError(f"Canny thresholds must satisfy 0 <= low <= high, got low={low}, high={high}")
    edges = cv2.Canny(_rgb_array(image), low, high)
    return Image.fromarray(edges).convert("RGB")


def background_colour(pixels: np.ndarray) -> np.ndarray:
    """The most common colour along the picture's border: the background of a plain-background picture."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colours, counts = np.unique(border.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()]


def silhouette_depth(image: Image.Image, level: int = 160, tolerance: int = 40) -> Image.Image:
    """A flat depth proxy: everything that differs from the border colour at one grey level, on black.

    Not a depth estimate. It tells foreground from a plain background and nothing about how near each
    object is, so every object gets the same `level`; edit the map (or write a real one) for more.
    """
    if not 0 < level <= 255:
        raise ValueError(f"level must be in 1..255, got {level}")
    pixels = _rgb_array(image).astype(np.int16)
    distance = np.abs(pixels - background_colour(pixels)).max(axis=-1)
    foreground = (distance > tolerance).astype(np.uint8)
    # Opening removes speckle (noise, JPEG ringing) that would otherwise read as tiny near objects.
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return Image.fromarray(foreground * np.uint8(level)).convert("RGB")


CONDITIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "canny": canny_edges,
    "silhouette": silhouette_depth,
}


def make_condition(kind: str, image: Image.Image) -> Image.Image:
    """Apply the condition helper named `kind` (see CONDITIONS)."""
    if kind not in CONDITIONS:
        raise ValueError(f"unknown condition {kind!r}; choose one of {', '.join(CONDITIONS)}")
    return CONDITIONS[kind](image)
