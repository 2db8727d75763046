"""The masks of the world's shapes (circle, square, triangle) on a square canvas, drawn without antialiasing,
which the renderers of the world's scenes and of pictures from outside the grid both draw with."""

from __future__ import annotations

import cv2
import numpy as np

from .model import SHAPES


def shape_mask(shape: str, center: tuple[int, int], half: int, size: int) -> np.ndarray:
    """Boolean mask of a shape whose bounding box is centre +- half (triangles point up)."""
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = center
    if shape == "circle":
        return disc_mask(center, half, size)
    elif shape == "square":
        canvas[max(cy - half, 0) : cy + half + 1, max(cx - half, 0) : cx + half + 1] = 1
    elif shape == "triangle":
        points = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]], np.int32)
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
    return canvas.astype(bool)


def disc_mask(center: tuple[float, float], radius: float, size: int) -> np.ndarray:
    """A filled disc; rounder than cv2.circle's, which grows one-pixel spikes at small radii."""
    ys, xs = np.mgrid[0:size, 0:size]
    return (xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= (radius + 0.5) ** 2
