"""The pixels of the X2I-mini world: masks, the renderers of scenes, depth and edge maps, figures,
skeletons and garments, the degradations of restoration, and `render_picture` for a picture spec.

Antialiasing is off everywhere, so the same spec always gives the same pixels.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from PIL import Image

from .model import (
    BACKGROUND_COLORS,
    BODY_RGB,
    DEFAULT_SIZE,
    DEPTH_LEVELS,
    GRID,
    HEAD_RADIUS,
    LIMB_WIDTH,
    LIMBS,
    MARKER_RGB,
    OBJECT_COLORS,
    PATTERN_RGB,
    SKELETON_WIDTH,
    RGB,
    Figure,
    Garment,
    Pose,
    Scene,
    SceneObject,
    color_rgb,
    figure_joints,
    half_extent,
    region_center,
    scale_from_grid,
)
from .photo import Photo, render_photo, render_photo_as_output
from .shapes import disc_mask, shape_mask

# ----------------------------------------------------------------------------------------------
# Scenes


def object_mask(obj: SceneObject, size: int = DEFAULT_SIZE) -> np.ndarray:
    return shape_mask(obj.shape, region_center(obj.region, size), half_extent(obj.size, size), size)


def object_masks(scene: Scene) -> list[np.ndarray]:
    """One boolean mask per object, in the scene's order (the segmentation masks)."""
    return [object_mask(o, scene.size) for o in scene.objects]


def _to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")


def render_scene_array(scene: Scene) -> np.ndarray:
    canvas = np.empty((scene.size, scene.size, 3), np.uint8)
    canvas[:] = BACKGROUND_COLORS[scene.background]
    for obj, mask in zip(scene.objects, object_masks(scene)):
        canvas[mask] = color_rgb(obj.color)
    return canvas


def render_scene(scene: Scene) -> Image.Image:
    return _to_image(render_scene_array(scene))


def render_depth(scene: Scene) -> Image.Image:
    """Depth map: each object's silhouette at its depth level (nearer is brighter) on black."""
    depth = np.zeros((scene.size, scene.size), np.uint8)
    for obj, mask in zip(scene.objects, object_masks(scene)):
        depth[mask] = DEPTH_LEVELS[obj.depth]
    return _to_image(depth)


CANNY_THRESHOLDS = (100, 200)


def canny_edges(image: Image.Image) -> Image.Image:
    """Canny edges of a picture (gradients over all three channels), white on black."""
    return _to_image(cv2.Canny(np.asarray(image.convert("RGB")), *CANNY_THRESHOLDS))


def render_edges(scene: Scene) -> Image.Image:
    return canny_edges(render_scene(scene))


def render_segmentation(scene: Scene, index: int) -> Image.Image:
    """The scene with object `index` painted in the marker colour (referring segmentation)."""
    canvas = render_scene_array(scene)
    canvas[object_mask(scene.objects[index], scene.size)] = MARKER_RGB
    return _to_image(canvas)


# ----------------------------------------------------------------------------------------------
# Stick figures and garments


def _hue_rgb(index: int, count: int) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(index / count, 1.0, 1.0)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


LIMB_COLORS: tuple[RGB, ...] = tuple(_hue_rgb(i, len(LIMBS)) for i in range(len(LIMBS)))


def torso_polygon(pose: Pose, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The shirt area: a quadrilateral from just outside the shoulders to just below the hips."""
    j = figure_joints(pose, size)
    pad = size / GRID
    (lsx, lsy), (rsx, rsy) = j["left_shoulder"], j["right_shoulder"]
    (lhx, lhy), (rhx, rhy) = j["left_hip"], j["right_hip"]
    corners = [(lsx - pad, lsy - pad), (rsx + pad, rsy - pad), (rhx + pad, rhy + 2 * pad), (lhx - pad, lhy + 2 * pad)]
    return np.array([[round(x), round(y)] for x, y in corners], np.int32)


def torso_mask(pose: Pose, size: int = DEFAULT_SIZE) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [torso_polygon(pose, size)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _point(p: tuple[float, float]) -> tuple[int, int]:
    return (int(round(p[0])), int(round(p[1])))


def _draw_limbs(canvas: np.ndarray, joints: dict, colors, width: int) -> None:
    for (a, b), color in zip(LIMBS, colors):
        if a == "neck" and b == "head":
            continue  # the head is drawn as a disc (figure) or its own short line (skeleton)
        cv2.line(canvas, _point(joints[a]), _point(joints[b]), color, thickness=width, lineType=cv2.LINE_8)


def pattern_fill(garment: Garment, size: int) -> np.ndarray:
    """A full canvas of the garment's colour and pattern; masks cut the shirt out of it."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = OBJECT_COLORS[garment.color]
    period = max(scale_from_grid(8, size), 4)
    if garment.pattern == "striped":
        rows = (np.arange(size) // (period // 2)) % 2 == 1
        canvas[rows] = PATTERN_RGB
    elif garment.pattern == "dotted":
        radius = 2.0 * size / GRID
        for y in range(period // 2, size, period):
            for x in range(period // 2, size, period):
                canvas[disc_mask((x, y), radius, size)] = PATTERN_RGB
    return canvas


def figure_body_mask(pose: Pose, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Where the figure's limbs, neck and head are (the torso excluded)."""
    canvas = np.zeros((size, size, 3), np.uint8)
    joints = figure_joints(pose, size)
    width = max(scale_from_grid(LIMB_WIDTH, size), 3)
    _draw_limbs(canvas, joints, [(1, 1, 1)] * len(LIMBS), width)
    cv2.line(canvas, _point(joints["neck"]), _point(joints["head"]), (1, 1, 1), thickness=width, lineType=cv2.LINE_8)
    return canvas[:, :, 0].astype(bool) | disc_mask(joints["head"], HEAD_RADIUS * size / GRID, size)


def render_figure(figure: Figure) -> Image.Image:
    size = figure.size
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = BACKGROUND_COLORS[figure.background]
    torso = torso_mask(figure.pose, size)
    canvas[figure_body_mask(figure.pose, size) & ~torso] = BODY_RGB
    if figure.garment is None:
        canvas[torso] = BODY_RGB
    else:
        canvas[torso] = pattern_fill(figure.garment, size)[torso]
    # The head sits on top of the shirt's collar line.
    canvas[disc_mask(figure_joints(figure.pose, size)["head"], HEAD_RADIUS * size / GRID, size)] = BODY_RGB
    return _to_image(canvas)


def render_skeleton(pose: Pose, size: int = DEFAULT_SIZE) -> Image.Image:
    """OpenPose-like skeleton map: each limb a line in its own hue on black."""
    canvas = np.zeros((size, size, 3), np.uint8)
    joints = figure_joints(pose, size)
    width = max(scale_from_grid(SKELETON_WIDTH, size), 3)
    _draw_limbs(canvas, joints, LIMB_COLORS, width)
    neck, head = _point(joints["neck"]), _point(joints["head"])
    cv2.line(canvas, neck, head, LIMB_COLORS[0], thickness=width, lineType=cv2.LINE_8)
    return _to_image(canvas)


# Collar, right sleeve, hem, left sleeve, on the 64 grid.
_GARMENT_OUTLINE = [
    (20, 12), (27, 10), (37, 10), (44, 12), (56, 22), (50, 29),
    (45, 25), (45, 54), (19, 54), (19, 25), (14, 29), (8, 22),
]


def _garment_polygon(size: int) -> np.ndarray:
    return np.array([[scale_from_grid(x, size), scale_from_grid(y, size)] for x, y in _GARMENT_OUTLINE], np.int32)


def garment_mask(size: int = DEFAULT_SIZE) -> np.ndarray:
    """A T-shirt seen flat, centred, filling most of the frame."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_garment_polygon(size)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def render_garment(garment: Garment, size: int = DEFAULT_SIZE) -> Image.Image:
    """The garment alone on white, outlined so that white stripes do not cut it apart."""
    canvas = np.full((size, size, 3), 255, np.uint8)
    mask = garment_mask(size)
    canvas[mask] = pattern_fill(garment, size)[mask]
    cv2.polylines(canvas, [_garment_polygon(size)], True, BODY_RGB, thickness=1, lineType=cv2.LINE_8)
    return _to_image(canvas)


# ----------------------------------------------------------------------------------------------
# Degradations for restoration


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Gaussian noise of standard deviation `sigma` (in 0..255 units), reproducible by seed."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, (image.height, image.width, 3))
    noisy = np.asarray(image.convert("RGB"), np.float32) + noise
    return _to_image(np.clip(np.round(noisy), 0, 255))


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur (kernel covers +-3 sigma)."""
    array = np.asarray(image.convert("RGB"))
    return _to_image(cv2.GaussianBlur(array, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE))


def to_grayscale(image: Image.Image) -> Image.Image:
    """The picture's luminance, as a three-channel grey image."""
    return image.convert("L").convert("RGB")


# ----------------------------------------------------------------------------------------------
# Pictures as JSON-serialisable specs: every input and output image of a task is one of these.

PICTURE_KINDS = ("scene", "depth", "edges", "figure", "skeleton", "garment", "noisy", "blurred", "grey", "photo")


def render_picture(picture: dict) -> Image.Image:
    """Render a picture spec such as {"kind": "depth", "scene": {...}} (see PICTURE_KINDS)."""
    kind = picture.get("kind")
    if kind in ("scene", "depth", "edges", "noisy", "blurred", "grey"):
        scene = Scene.from_dict(picture["scene"])
        if kind == "depth":
            return render_depth(scene)
        if kind == "edges":
            return render_edges(scene)
        image = render_scene(scene)
        if kind == "noisy":
            return add_noise(image, picture["sigma"], picture["seed"])
        if kind == "blurred":
            return blur(image, picture["sigma"])
        if kind == "grey":
            return to_grayscale(image)
        return image
    if kind == "figure":
        return render_figure(Figure.from_dict(picture["figure"]))
    if kind == "skeleton":
        return render_skeleton(Pose(**picture["pose"]), picture.get("size", DEFAULT_SIZE))
    if kind == "garment":
        return render_garment(Garment(**picture["garment"]), picture.get("size", DEFAULT_SIZE))
    if kind == "photo":  # as uploaded, or, with a "size", clean as the model's output of that size
        photo = Photo.from_dict(picture["photo"])
        return render_photo_as_output(photo, picture["size"]) if "size" in picture else render_photo(photo)
    raise ValueError(f"unknown picture kind {kind!r}; choose one of {list(PICTURE_KINDS)}")
