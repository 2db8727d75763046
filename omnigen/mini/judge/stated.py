"""Verdicts that check only what was said: captions that leave things out and counts (`judge_stated`), and
edits of pictures from outside the grid (`judge_photo`).

`judge_stated` finds the objects wherever they are: every blob unlike the background that is at least a
third of a small object's area is an object; each must be one of the world's shapes at one of its sizes
(its best-fitting template overlaps it by MIN_SHAPE_IOU), the number of objects must be the number the
caption names, and the objects must match the caption's descriptions one to one (colour, shape, size and
place, each only where stated; a place names the regions it allows). The background must be one of the
world's, and the one stated if any.

`judge_photo` checks an edit of an uploaded picture: each object of the edited picture where it was (within
the shift tolerance), in its colour, its shape fitting better than the other shapes at its size; the
background; nothing else of note.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations

import cv2
import numpy as np

from ..world import (
    BACKGROUND_COLORS,
    GRID,
    OBJECT_COLORS,
    REGION_CENTERS,
    Photo,
    half_extent,
    photo_object_mask,
    shape_mask,
)
from .measures import (
    all_shifts,
    core_color,
    crop,
    dilate,
    largest_blob,
    nearest_name,
    object_color_mask,
    open_mask,
    rgb_distance,
    round_corners,
    scaled,
    shape_candidates,
    shape_template,
)
from .tolerances import BACKGROUND_LIMIT, EXTRA_BLOB_FRACTION, MIN_SHAPE_IOU, SHIFT_TOLERANCE, summarize

OBJECT_PALETTE = {**OBJECT_COLORS, **BACKGROUND_COLORS}


def judge_stated(stated: dict, pixels: np.ndarray):
    size = pixels.shape[0]
    shift = scaled(SHIFT_TOLERANCE, size)
    checks: dict[str, bool] = {}
    details: dict = {}
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background, distance = nearest_name(np.median(border, axis=0), BACKGROUND_COLORS)
    wanted = stated.get("background")
    checks["background"] = distance < BACKGROUND_LIMIT and wanted in (None, background)
    details["background"] = {"stated": wanted, "found": background, "distance": round(distance, 1)}

    foreground = open_mask(rgb_distance(pixels, BACKGROUND_COLORS[background]) > BACKGROUND_LIMIT)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    least = EXTRA_BLOB_FRACTION * np.pi * (half_extent("small", size) + 0.5) ** 2
    found = []
    for label in range(1, count):
        if stats[label, cv2.CC_STAT_AREA] < least:
            continue
        x, y, w, h = (int(v) for v in stats[label, :4])
        center = (x + (w - 1) // 2, y + (h - 1) // 2)
        blob = labels == label
        found.append(_describe_blob(pixels, blob, center, background, size, shift, MIN_SHAPE_IOU))
    details["found"] = found
    expected = stated["objects"]
    checks["count"] = len(found) == len(expected)
    match = None
    if checks["count"]:
        match = next((order for order in permutations(range(len(found)))
                      if all(_fits(found[i], expected[k], size, shift) for k, i in enumerate(order))), None)
    checks["objects match"] = match is not None
    details["stated"] = expected
    return summarize(checks, details)


def _describe_blob(pixels, blob, center, background, size, shift, min_iou) -> dict:
    """Colour, shape and size of a blob. Its outline is where it is past half way from the background to its
    colour, as check_layout measures objects, not where it first differs from the background (a blur
    would widen it)."""
    colors = {n: rgb for n, rgb in OBJECT_PALETTE.items() if n in OBJECT_COLORS or n == background}
    colour = core_color(pixels, blob, colors, background)
    blob = blob & object_color_mask(pixels, colors, background, colour)
    radius = half_extent("large", size) + shift + 2
    local = crop(blob, center, radius)
    scores = {}
    for name, half in shape_candidates(size):
        moved = all_shifts(shape_template(name.split()[1], half, radius), shift)
        scores[name] = float(((moved & local).sum(axis=(1, 2)) / (moved | local).sum(axis=(1, 2))).max())
    best = max(scores, key=scores.get)
    return {"at": center, "area": int(blob.sum()), "colour": colour,
            "size": best.split()[0] if scores[best] >= min_iou else None,
            "shape": best.split()[1] if scores[best] >= min_iou else None, "iou": round(scores[best], 3)}


def _fits(found: dict, stated: dict, size: int, shift: int) -> bool:
    if found["shape"] is None:
        return False  # a blob that is none of the world's shapes is never what a caption asked for
    for key, value in (("shape", stated["shape"]), ("color", stated["color"]), ("size", stated["size"])):
        if value is not None and found["colour" if key == "color" else key] != value:
            return False
    if stated["regions"]:
        x, y = found["at"]
        near = [r for r in stated["regions"] if max(abs(x - REGION_CENTERS[r][0] * size / GRID),
                                                     abs(y - REGION_CENTERS[r][1] * size / GRID)) <= shift]
        return bool(near)
    return True


def judge_photo(photo: Photo, size: int, pixels: np.ndarray):
    scale = photo.scale_to(size)
    shift = scaled(SHIFT_TOLERANCE, size)
    palette = {**OBJECT_COLORS, photo.background: photo.background_rgb}
    expected = [(o, (int(round((o.x + 0.5) * scale - 0.5)), int(round((o.y + 0.5) * scale - 0.5))),
                 max(int(round(o.half * scale)), 1)) for o in photo.objects]
    explained = np.zeros((size, size), bool)
    for obj, center, half in expected:
        explained |= dilate(shape_mask(obj.shape, center, half, size), shift + scaled(2, size))
    checks: dict[str, bool] = {}
    details: dict = {"objects": []}
    outside = pixels[~explained] if (~explained).any() else pixels.reshape(-1, 3)
    found_background, distance = nearest_name(np.median(outside, axis=0), BACKGROUND_COLORS)
    checks["background"] = found_background == photo.background and distance < BACKGROUND_LIMIT
    details["background"] = {"expected": photo.background, "found": found_background, "distance": round(distance, 1)}
    for index, (obj, center, half) in enumerate(expected):
        window = _box(center, half + shift + 1, size)
        for j, (_, other_center, other_half) in enumerate(expected):
            if j != index:
                window &= ~_box(other_center, other_half + 1, size)
        mask = object_color_mask(pixels, palette, photo.background, obj.color) & window
        radius = half + shift + 2
        local = crop(mask, center, radius)
        scores = {}
        for shape in ("circle", "square", "triangle"):
            # Each shape drawn where and as large as the object is (to the sub-pixel), corners rounded as a
            # VAE rounds them, then moved by up to the shift tolerance.
            drawn = photo_object_mask(replace(obj, shape=shape), size, scale) >= 0.5
            template = round_corners(crop(drawn, center, radius), half)
            moved = all_shifts(template, shift)
            union = (moved | local).sum(axis=(1, 2))
            scores[shape] = round(float(((moved & local).sum(axis=(1, 2)) / np.maximum(union, 1)).max()), 3)
        best = max(scores, key=scores.get)
        colour = core_color(pixels, mask, {**OBJECT_COLORS, photo.background: photo.background_rgb}, photo.background)
        ok = best == obj.shape and scores[best] >= MIN_SHAPE_IOU and colour == obj.color
        details["objects"].append({"object": f"{obj.color} {obj.shape} at {center}, half {half}", "found": best,
                                   "colour found": colour, "iou": scores, "ok": ok})
        checks[f"object {index + 1}"] = ok
    stray = open_mask((rgb_distance(pixels, np.asarray(photo.background_rgb, np.float32)) > BACKGROUND_LIMIT)
                      & ~explained)
    area, where = largest_blob(stray)
    checks["nothing else"] = area <= EXTRA_BLOB_FRACTION * np.pi * (half_extent("small", size) + 0.5) ** 2
    details["largest unexpected blob"] = {"area": area, "at": where}
    return summarize(checks, details)


def _box(center, radius: int, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    cx, cy = center
    mask[max(cy - radius, 0) : cy + radius + 1, max(cx - radius, 0) : cx + radius + 1] = True
    return mask
