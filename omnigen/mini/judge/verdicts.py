"""The verdicts: a generated image checked against a sample's spec, one check per family of target.

Generated images come through a VAE at 64x64, so every check tolerates slight blur, a couple of
pixels of displacement and colour shifts; none compares exact RGB values.

- Scenes (and depth maps, which are scenes in grey levels on black): the background colour is
  right; each expected object is where it should be (within 3 pixels), in its colour (pixels on
  the line between the background and the object colour, past half way, whose core is nearest to
  the object colour), and the template of its shape fits that mask better than the other shapes'
  templates, at its size; nothing big of another colour is anywhere else.
- Edge maps: F1 of the edge pixels (blurred lines thinned to their ridge) against the true Canny
  map with a one-pixel tolerance; each object's outline fits its shape best; no stray lines.
- Skeleton maps: every limb is present along its true segment, in its own hue; no extra strokes.
- Figures (try-on, pose): every visible limb and the head are where they should be, the shirt
  shows the garment's colour and pattern, nothing stands outside the figure's silhouette.
- Restoration also needs denoised pictures free of noise and deblurred ones much sharper than the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..world import (
    BACKGROUND_COLORS,
    BODY_RGB,
    DEPTH_LEVELS,
    GRID,
    HEAD_RADIUS,
    LIMBS,
    MARKER_COLOR,
    MARKER_RGB,
    OBJECT_COLORS,
    PATTERN_RGB,
    Figure,
    Photo,
    Pose,
    Scene,
    figure_body_mask,
    figure_joints,
    half_extent,
    region_center,
    render_edges,
    render_picture,
    render_skeleton,
    shape_mask,
    torso_mask,
)
from .measures import (
    OFF_LINE_LIMIT,
    all_shifts,
    as_array,
    core_color,
    crop,
    dilate,
    drop_specks,
    flat_noise,
    hue_labels,
    largest_blob,
    near,
    nearest_name,
    object_color_mask,
    open_mask,
    rgb_distance,
    ridges,
    round_point,
    scaled,
    segment_points,
    shape_candidates,
    shape_template,
    sharpness,
    shirt_pattern,
    tolerant_f1,
)
from .stated import judge_photo, judge_stated
from .tolerances import (
    BACKGROUND_LIMIT,
    EDGE_TOLERANCE,
    EXTRA_BLOB_FRACTION,
    LIMB_TOLERANCE,
    MAX_RESIDUAL_NOISE,
    MIN_EDGE_F1,
    MIN_LIMB_COVERAGE,
    MIN_SHAPE_IOU,
    MIN_SHARPNESS_GAIN,
    SHIFT_TOLERANCE,
    Verdict,
    summarize,
)

def judge(sample, image: Image.Image) -> Verdict:
    """Check a generated image against a `tasks.Sample` (only its spec is used)."""
    return judge_spec(sample.spec, image)


def judge_spec(spec: dict, image: Image.Image) -> Verdict:
    """Check a generated image against a sample's spec; an image of another size is resized first."""
    target = spec["target"]
    size = _target_size(target)
    pixels = as_array(image, size)
    kind = target["kind"]
    if "stated" in spec:  # a caption that leaves things out: only what it says is checked
        return judge_stated(spec["stated"], pixels)
    if kind == "photo":
        return judge_photo(Photo.from_dict(target["photo"]), size, pixels)
    if kind == "scene":
        verdict = judge_scene(Scene.from_dict(target["scene"]), pixels)
        if spec.get("family") == "restore":
            verdict = _add_restoration_check(verdict, spec, pixels)
        return verdict
    if kind == "depth":
        return judge_depth(Scene.from_dict(target["scene"]), pixels)
    if kind == "edges":
        return judge_edges(Scene.from_dict(target["scene"]), pixels)
    if kind == "skeleton":
        return judge_skeleton(Pose(**target["pose"]), pixels)
    if kind == "figure":
        return judge_figure(Figure.from_dict(target["figure"]), pixels)
    raise ValueError(f"the judge cannot check a target of kind {kind!r}")


def _target_size(target: dict) -> int:
    for key in ("scene", "figure"):
        if key in target:
            return target[key].get("size", GRID)
    return target.get("size", GRID)


# ----------------------------------------------------------------------------------------------
# Scenes, depth maps and edge maps

SCENE_PALETTE = {**OBJECT_COLORS, **BACKGROUND_COLORS, MARKER_COLOR: MARKER_RGB, "dark": BODY_RGB, "black": (0, 0, 0)}
DEPTH_PALETTE = {"black": (0, 0, 0), **{f"{d} ({v})": (v, v, v) for d, v in DEPTH_LEVELS.items()}}


@dataclass(frozen=True)
class ExpectedObject:
    name: str  # for the details, e.g. "large red circle at the top left"
    shape: str
    color: str  # a name in the palette the layout is checked with
    center: tuple[int, int]
    size: str  # "small" or "large"


def expected_objects(scene: Scene, colors: dict[str, str] | None = None) -> list[ExpectedObject]:
    """The scene's objects as the judge expects them; `colors` maps object index to a palette name."""
    return [
        ExpectedObject(
            f"{o.size} {o.color} {o.shape} at the {o.region}" + (f" ({colors[i]})" if colors else ""),
            o.shape,
            colors[i] if colors else o.color,
            region_center(o.region, scene.size),
            o.size,
        )
        for i, o in enumerate(scene.objects)
    ]


def judge_scene(scene: Scene, pixels: np.ndarray) -> Verdict:
    return check_layout(pixels, scene.background, SCENE_PALETTE, expected_objects(scene))


def judge_depth(scene: Scene, pixels: np.ndarray) -> Verdict:
    """A depth map is a scene in grey levels (nearer is brighter) on black."""
    levels = {i: f"{o.depth} ({DEPTH_LEVELS[o.depth]})" for i, o in enumerate(scene.objects)}
    return check_layout(pixels, "black", DEPTH_PALETTE, expected_objects(scene, levels))


def check_layout(pixels: np.ndarray, background: str, palette: dict, expected: list[ExpectedObject]) -> Verdict:
    """Background, each expected object (colour, place, shape, size), and nothing else of note."""
    size = pixels.shape[0]
    shift = scaled(SHIFT_TOLERANCE, size)
    background_rgb = np.asarray(palette[background], np.float32)
    explained = _explained_area(expected, size, shift)
    checks: dict[str, bool] = {}
    details: dict = {"objects": []}

    outside = pixels[~explained] if (~explained).any() else pixels.reshape(-1, 3)
    backgrounds = {n: palette[n] for n in palette if n in BACKGROUND_COLORS or n == background}
    found_background, distance = nearest_name(np.median(outside, axis=0), backgrounds)
    checks["background"] = found_background == background and distance < BACKGROUND_LIMIT
    details["background"] = {"expected": background, "found": found_background, "distance": round(distance, 1)}

    for index, obj in enumerate(expected):
        window = _object_window(expected, index, size, shift)
        mask = object_color_mask(pixels, palette, background, obj.color) & window
        result = _fit_shape(mask, obj, size, shift)
        result["colour found"] = core_color(pixels, mask, palette, background)
        result["ok"] = result["ok"] and result["colour found"] == obj.color
        result["object"] = obj.name
        details["objects"].append(result)
        checks[f"object {index + 1}"] = result["ok"]

    stray = open_mask((rgb_distance(pixels, background_rgb) > BACKGROUND_LIMIT) & ~explained)
    area, where = largest_blob(stray)
    small_area = np.pi * (half_extent("small", size) + 0.5) ** 2
    checks["nothing else"] = area <= EXTRA_BLOB_FRACTION * small_area
    details["largest unexpected blob"] = {"area": area, "at": where}
    return summarize(checks, details)


def _explained_area(expected: list[ExpectedObject], size: int, shift: int) -> np.ndarray:
    """Where the expected objects may put pixels: their shapes grown by the shift tolerance and a fringe."""
    explained = np.zeros((size, size), bool)
    for o in expected:
        explained |= dilate(shape_mask(o.shape, o.center, half_extent(o.size, size), size), shift + scaled(2, size))
    return explained


def _box_mask(obj: ExpectedObject, size: int, margin: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    cx, cy = obj.center
    r = half_extent(obj.size, size) + margin
    mask[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1] = True
    return mask


def _object_window(expected: list[ExpectedObject], index: int, size: int, shift: int) -> np.ndarray:
    """Where object `index` is looked for: its box grown by the shift, minus the other objects' boxes."""
    window = _box_mask(expected[index], size, shift + 1)
    for j, other in enumerate(expected):
        if j != index:
            window &= ~_box_mask(other, size, 1)
    return window


def _fit_shape(mask: np.ndarray, obj: ExpectedObject, size: int, shift: int) -> dict:
    """Which shape and size fits the mask best (IoU, shifted up to `shift`); ok if it is the expected one."""
    radius = half_extent("large", size) + shift + 2
    local = crop(mask, obj.center, radius)
    area = int(local.sum())
    scores = {}
    for name, half in shape_candidates(size):
        score = 0.0
        if area:
            moved = all_shifts(shape_template(name.split()[1], half, radius), shift)
            score = ((moved & local).sum(axis=(1, 2)) / (moved | local).sum(axis=(1, 2))).max()
        scores[name] = round(float(score), 3)
    return _best_fit(scores, obj, area, MIN_SHAPE_IOU) | {"area": area, "iou": scores}


def _best_fit(scores: dict[str, float], obj: ExpectedObject, found_pixels: int, minimum: float) -> dict:
    found = max(scores, key=scores.get)
    expected = f"{obj.size} {obj.shape}"
    return {"ok": found == expected and scores[expected] >= minimum, "found": found if found_pixels else None}


def _fit_outline(edges: np.ndarray, obj: ExpectedObject, size: int, shift: int) -> dict:
    """Which shape and size's outline fits the edge pixels best (tolerant F1, shifted); ok if the expected one."""
    radius = half_extent("large", size) + shift + 2
    local = crop(edges, obj.center, radius)
    tolerance = scaled(EDGE_TOLERANCE, size)
    found_count = np.count_nonzero(local)
    near_found = dilate(local, tolerance)
    scores = {}
    for name, half in shape_candidates(size):
        score = 0.0
        if found_count:
            outline = shape_template(name.split()[1], half, radius, outline=True)
            near_outline = all_shifts(dilate(outline, tolerance), shift)
            precision = (near_outline & local).sum(axis=(1, 2)) / found_count
            recall = (all_shifts(outline, shift) & near_found).sum(axis=(1, 2)) / np.count_nonzero(outline)
            score = (2 * precision * recall / np.maximum(precision + recall, 1e-9)).max()
        scores[name] = round(float(score), 3)
    return _best_fit(scores, obj, found_count, MIN_EDGE_F1) | {"edge pixels": found_count, "f1": scores}


def judge_edges(scene: Scene, pixels: np.ndarray) -> Verdict:
    """Edge map: overall tolerant F1 against the true Canny map, each object's outline, no stray lines."""
    size = pixels.shape[0]
    shift = scaled(SHIFT_TOLERANCE, size)
    true_edges = np.asarray(render_edges(scene).convert("L")) > 127
    found = drop_specks(ridges(pixels.mean(axis=-1)))
    f1, precision, recall = tolerant_f1(true_edges, found, scaled(EDGE_TOLERANCE, size))
    checks = {"edge map f1": f1 >= MIN_EDGE_F1}
    details: dict = {"f1": round(f1, 3), "precision": round(precision, 3), "recall": round(recall, 3), "objects": []}
    expected = expected_objects(scene)
    for index, obj in enumerate(expected):
        result = _fit_outline(found & _object_window(expected, index, size, shift), obj, size, shift)
        result["object"] = obj.name
        details["objects"].append(result)
        checks[f"object {index + 1}"] = result["ok"]
    area, where = largest_blob(found & ~_explained_area(expected, size, shift))
    checks["nothing else"] = area <= 2 * half_extent("small", size)
    details["largest unexpected line"] = {"length": area, "at": where}
    return summarize(checks, details)


# ----------------------------------------------------------------------------------------------
# Skeleton maps


def judge_skeleton(pose: Pose, pixels: np.ndarray) -> Verdict:
    size = pixels.shape[0]
    tolerance = scaled(LIMB_TOLERANCE, size)
    labels = hue_labels(pixels)
    joints = figure_joints(pose, size)
    truth = np.asarray(render_skeleton(pose, size).convert("L")) > 0
    checks: dict[str, bool] = {}
    coverage = {}
    for index, (a, b) in enumerate(LIMBS):
        points = segment_points(joints[a], joints[b], 0.25, 0.75, 6)
        hits = sum(near(labels == index, p, tolerance) for p in points)
        coverage[f"{a}-{b}"] = round(hits / len(points), 2)
        checks[f"{a}-{b}"] = hits / len(points) >= MIN_LIMB_COVERAGE
    stray = open_mask((labels >= 0) & ~dilate(truth, tolerance + 1))
    area, where = largest_blob(stray)
    checks["nothing else"] = area <= 12 * (size / GRID) ** 2
    return summarize(checks, {"limb coverage": coverage, "largest unexpected blob": {"area": area, "at": where}})


# ----------------------------------------------------------------------------------------------
# Figures


def judge_figure(figure: Figure, pixels: np.ndarray) -> Verdict:
    size = figure.size
    tolerance = scaled(LIMB_TOLERANCE, size)
    background_rgb = np.asarray(BACKGROUND_COLORS[figure.background], np.float32)
    joints = figure_joints(figure.pose, size)
    torso = torso_mask(figure.pose, size)
    silhouette = figure_body_mask(figure.pose, size) | torso
    dark = rgb_distance(pixels, BODY_RGB) < 70

    checks: dict[str, bool] = {}
    details: dict = {}
    outside = pixels[~dilate(silhouette, tolerance + 1)]
    found_background, distance = nearest_name(np.median(outside, axis=0), BACKGROUND_COLORS)
    checks["background"] = found_background == figure.background and distance < BACKGROUND_LIMIT
    details["background"] = {"expected": figure.background, "found": found_background}

    coverage = {}
    hidden = dilate(torso, 1)
    for a, b in LIMBS:
        if a == "neck":
            continue  # the neck-to-shoulder/hip lines and the neck lie under the shirt or the head
        points = [p for p in segment_points(joints[a], joints[b], 0.2, 0.9, 8) if not near(hidden, p, 0)]
        if not points:
            continue
        hits = sum(near(dark, p, tolerance) for p in points)
        coverage[f"{a}-{b}"] = round(hits / len(points), 2)
        checks[f"{a}-{b}"] = hits / len(points) >= MIN_LIMB_COVERAGE
    details["limb coverage"] = coverage

    head = shape_mask("circle", round_point(joints["head"]), scaled(HEAD_RADIUS - 1, size), size) & ~hidden
    checks["head"] = dark[head].mean() >= 0.6
    details["head dark fraction"] = round(float(dark[head].mean()), 2)

    shirt_ok, details["shirt"] = _check_shirt(figure, pixels, torso)
    checks["shirt"] = shirt_ok

    stray = open_mask((rgb_distance(pixels, background_rgb) > BACKGROUND_LIMIT) & ~dilate(silhouette, tolerance + 1))
    area, where = largest_blob(stray)
    checks["nothing else"] = area <= 16 * (size / GRID) ** 2
    details["largest unexpected blob"] = {"area": area, "at": where}
    return summarize(checks, details)


SHIRT_COLORS = {**OBJECT_COLORS, "bare (no shirt)": BODY_RGB}


def _check_shirt(figure: Figure, pixels: np.ndarray, torso: np.ndarray) -> tuple[bool, dict]:
    """The shirt's colour, and its pattern from where its white is (rows only: stripes; spots: dots)."""
    inner = cv2.erode(torso.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(inner)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop, region = pixels[y0:y1, x0:x1], inner[y0:y1, x0:x1]
    white = np.asarray(PATTERN_RGB, np.float32)
    # Each candidate colour explains the pixels on its line to white (blends with the pattern).
    explained, whiteness = {}, {}
    for name, rgb in SHIRT_COLORS.items():
        base = np.asarray(rgb, np.float32)
        direction = white - base
        t = (crop - base) @ direction / float(direction @ direction)
        off_line = np.linalg.norm(crop - base - np.clip(t, 0, 1)[..., None] * direction, axis=-1)
        on_line = (off_line < OFF_LINE_LIMIT) & (t < 1.3) & region
        explained[name] = int((on_line & (t < 0.5)).sum())
        whiteness[name] = np.where(on_line, np.clip(t, 0, 1), 0.0)
    main = max(explained, key=explained.get)
    pattern, measures = shirt_pattern(whiteness[main], region)
    expected_main = figure.garment.color if figure.garment else "bare (no shirt)"
    expected_pattern = figure.garment.pattern if figure.garment else "solid"
    ok = main == expected_main and pattern == expected_pattern
    return ok, {"expected": f"{expected_main}, {expected_pattern}", "found": f"{main}, {pattern}", **measures}


# ----------------------------------------------------------------------------------------------
# Restoration


def _add_restoration_check(verdict: Verdict, spec: dict, pixels: np.ndarray) -> Verdict:
    """Denoising must leave little noise; deblurring must sharpen well past the blurred input."""
    size = pixels.shape[0]
    truth = as_array(render_picture(spec["target"]), size)
    degraded = as_array(render_picture(spec["inputs"][0]), size)
    checks, details = dict(verdict.details["checks"]), dict(verdict.details)
    if spec["task"] == "denoise":
        noise = flat_noise(pixels, truth)
        checks["noise removed"] = noise <= MAX_RESIDUAL_NOISE
        details["residual noise"] = round(noise, 1)
    elif spec["task"] == "deblur":
        gain = sharpness(pixels) / max(sharpness(degraded), 1e-6)
        checks["sharpened"] = gain >= MIN_SHARPNESS_GAIN
        details["sharpness gain"] = round(gain, 2)
    return summarize(checks, details)
