"""Measurements of a picture that the judge's checks are built from: pixels near a colour or on a colour
line, blobs, shape templates fitted under shifts, thinned edge ridges, limb hues, shirt patterns,
sharpness and residual noise. They measure; the verdicts (judge.verdicts, judge.stated) decide what passes,
by the tolerances of judge.tolerances.

Generated images come through a VAE at 64x64, so every measurement tolerates slight blur and colour
shifts; none compares exact RGB values. Lengths are for a 64x64 image and scale with the size.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from PIL import Image

from ..world import GRID, LIMB_COLORS, SHAPES, SIZES, half_extent, shape_mask

# How pixels are classified (the pass/fail tolerances live in judge.tolerances).
OFF_LINE_LIMIT = 60.0  # how far (RGB) a pixel may sit from the background-object colour line
TEMPLATE_ROUNDING = 3  # corner radius (pixels, for a large object) of the shape templates
WHITE_LEVEL = 0.4  # how far towards white a shirt pixel must be to count as pattern
MIN_PATTERN_FRACTION = 0.08  # less white than this is a solid shirt
STRIPE_SPREAD_RATIO = 0.5  # column/row spread of white below this is stripes


def as_array(image: Image.Image, size: int) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, np.float32)


def scaled(value: float, size: int) -> int:
    return max(int(round(value * size / GRID)), 1)


def rgb_distance(pixels: np.ndarray, rgb) -> np.ndarray:
    return np.linalg.norm(pixels - np.asarray(rgb, np.float32), axis=-1)


def nearest_name(rgb: np.ndarray, table: dict) -> tuple[str, float]:
    name = min(table, key=lambda n: float(np.linalg.norm(rgb - np.asarray(table[n], np.float32))))
    return name, float(np.linalg.norm(rgb - np.asarray(table[name], np.float32)))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def open_mask(mask: np.ndarray) -> np.ndarray:
    # Removes one- and two-pixel-thin structures: the colour fringes a VAE leaves along edges.
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)


def largest_blob(mask: np.ndarray) -> tuple[int, tuple[int, int] | None]:
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0, None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return int(stats[best, cv2.CC_STAT_AREA]), (int(centroids[best][0]), int(centroids[best][1]))


def object_color_mask(pixels: np.ndarray, palette: dict, background: str, color: str) -> np.ndarray:
    """Pixels past half way from the background to the object colour, close to the line between them.

    Blur mixes an object with the background along that line, so its half-way level keeps the
    object's outline; most other colours sit far off the line. Those on it (the grey levels of a
    depth map all share one line) are told apart afterwards by the mask's core colour.
    """
    background_rgb = np.asarray(palette[background], np.float32)
    direction = np.asarray(palette[color], np.float32) - background_rgb
    offsets = pixels - background_rgb
    t = offsets @ direction / float(direction @ direction)
    off_line = np.linalg.norm(offsets - np.clip(t, 0, 1)[..., None] * direction, axis=-1)
    return (t > 0.5) & (t < 1.6) & (off_line < OFF_LINE_LIMIT)


def core_color(pixels: np.ndarray, mask: np.ndarray, palette: dict, background: str) -> str | None:
    """The palette colour nearest to the median of the mask's inner pixels (its edges are blends)."""
    if not mask.any():
        return None
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    chosen = pixels[inner] if inner.sum() >= 4 else pixels[mask]
    candidates = {n: rgb for n, rgb in palette.items() if n != background}
    return nearest_name(np.median(chosen, axis=0), candidates)[0]


def crop(mask: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """The (2r+1)-square of `mask` around `center`, padded with False beyond the image."""
    padded = np.pad(mask, radius)
    cx, cy = center
    return padded[cy : cy + 2 * radius + 1, cx : cx + 2 * radius + 1]


def shape_template(shape: str, half: int, radius: int, outline: bool = False) -> np.ndarray:
    """A shape's template (or its one-pixel outline) at the centre of a (2r+1)-square crop."""
    template = shape_mask(shape, (radius, radius), half, 2 * radius + 1)
    if outline:
        return template & ~cv2.erode(template.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    # Round the corners: a VAE rounds a square's corners, and a sharp square would then fit a
    # circle's template better than its own. Sharp shapes still fit their own template best.
    return round_corners(template, half)


def round_corners(template: np.ndarray, half: int) -> np.ndarray:
    """A template's corners rounded as a VAE rounds them, in proportion to the shape's half extent."""
    rounding = max(int(round(TEMPLATE_ROUNDING * half / half_extent("large", GRID))), 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rounding + 1, 2 * rounding + 1))
    return cv2.morphologyEx(template.astype(np.uint8), cv2.MORPH_OPEN, disc).astype(bool)


def all_shifts(template: np.ndarray, shift: int) -> np.ndarray:
    """Every copy of `template` moved by up to `shift` pixels each way, stacked: (shifts, h, w)."""
    padded = np.pad(template, shift)
    windows = np.lib.stride_tricks.sliding_window_view(padded, template.shape)
    return windows.reshape(-1, *template.shape)


def shape_candidates(size: int):
    """Every shape at every size, as ("small circle", half extent in pixels)."""
    return [(f"{name} {shape}", half_extent(name, size)) for name in SIZES for shape in SHAPES]


def ridges(brightness: np.ndarray) -> np.ndarray:
    """Bright pixels that are a local maximum across x or across y: blurred lines thinned back to one pixel.

    Threshold 64, a quarter of a true edge's brightness: a VAE dims one-pixel lines but keeps them above it.
    """
    padded = np.pad(brightness, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    across_x = (centre >= padded[1:-1, :-2]) & (centre >= padded[1:-1, 2:])
    across_y = (centre >= padded[:-2, 1:-1]) & (centre >= padded[2:, 1:-1])
    return (brightness > 64) & (across_x | across_y)


def drop_specks(mask: np.ndarray) -> np.ndarray:
    # Isolated pixels are noise, not edges (edges are connected lines).
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 3
    return keep[labels]


def tolerant_f1(truth: np.ndarray, found: np.ndarray, tolerance: int) -> tuple[float, float, float]:
    """F1 of two masks where a pixel within `tolerance` of the other mask counts as matched."""
    if not truth.any() and not found.any():
        return 1.0, 1.0, 1.0
    if not truth.any() or not found.any():
        return 0.0, 0.0, 0.0
    precision = np.count_nonzero(found & dilate(truth, tolerance)) / np.count_nonzero(found)
    recall = np.count_nonzero(truth & dilate(found, tolerance)) / np.count_nonzero(truth)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(f1), float(precision), float(recall)


def _limb_hues() -> np.ndarray:
    return np.array([colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for rgb in LIMB_COLORS])


def hue_labels(pixels: np.ndarray) -> np.ndarray:
    """Index of the nearest limb hue for bright, saturated pixels; -1 for the black background."""
    hsv = cv2.cvtColor(np.clip(pixels, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue, saturation, value = hsv[..., 0] / 256.0, hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    gap = np.abs(hue[..., None] - _limb_hues()[None, None, :])
    gap = np.minimum(gap, 1.0 - gap)
    labels = np.argmin(gap, axis=-1)
    labels[(value < 0.25) | (saturation < 0.4)] = -1
    return labels


def segment_points(a, b, start: float, stop: float, count: int) -> list[tuple[int, int]]:
    return [
        (int(round(a[0] + (b[0] - a[0]) * t)), int(round(a[1] + (b[1] - a[1]) * t)))
        for t in np.linspace(start, stop, count)
    ]


def near(mask: np.ndarray, point: tuple[int, int], radius: int) -> bool:
    x, y = point
    size = mask.shape[0]
    rows = slice(max(y - radius, 0), min(y + radius + 1, size))
    columns = slice(max(x - radius, 0), min(x + radius + 1, size))
    return bool(mask[rows, columns].any())


def round_point(point) -> tuple[int, int]:
    return (int(round(point[0])), int(round(point[1])))


def shirt_pattern(whiteness: np.ndarray, region: np.ndarray) -> tuple[str, dict]:
    white = (whiteness > WHITE_LEVEL) & region
    fraction = white.sum() / max(int(region.sum()), 1)
    if fraction < MIN_PATTERN_FRACTION:
        return "solid", {"white fraction": round(float(fraction), 2)}
    rows = white.sum(axis=1) / np.maximum(region.sum(axis=1), 1)
    columns = white.sum(axis=0) / np.maximum(region.sum(axis=0), 1)
    full_rows = region.sum(axis=1) >= 3
    full_columns = region.sum(axis=0) >= 3
    row_spread = float(rows[full_rows].std()) if full_rows.any() else 0.0
    column_spread = float(columns[full_columns].std()) if full_columns.any() else 0.0
    # Stripes are white along whole rows: rows differ, columns do not. Dots make both differ.
    pattern = "striped" if column_spread < STRIPE_SPREAD_RATIO * row_spread else "dotted"
    measures = {"white fraction": float(fraction), "row spread": row_spread, "column spread": column_spread}
    return pattern, {name: round(value, 2) for name, value in measures.items()}


def sharpness(pixels: np.ndarray) -> float:
    """Mean squared gradient; a step blurred by sigma keeps about 1/sigma of it."""
    gx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1)
    return float((gx**2 + gy**2).mean())


def flat_noise(pixels: np.ndarray, truth: np.ndarray) -> float:
    """RMS of the high frequencies where the true picture is flat: what is left of the noise."""
    flat = ~dilate(np.abs(cv2.Laplacian(truth, cv2.CV_32F)).max(axis=-1) > 0, scaled(2, truth.shape[0]))
    if not flat.any():
        return 0.0
    detail = pixels - cv2.GaussianBlur(pixels, (0, 0), 1.5)
    return float(np.sqrt((detail[flat] ** 2).mean()))
