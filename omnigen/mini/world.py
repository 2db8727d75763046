"""The X2I-mini world: flat-colour scenes of simple shapes and a stick figure, and their renderers.

A scene is a light background with one to three objects (circle, square or triangle; one of six
colours; small or large; in one of five regions, at most one object per region; its depth, drawn
only in the depth map, follows its height in the picture: the lower, the nearer). A figure is a stick
person in one of 54 poses, optionally wearing a coloured or patterned shirt. Every picture
the task generators and the judge need is rendered from these small specs, with antialiasing
off, so the same spec always gives the same pixels.

Coordinates follow the image: x to the right, y down. "left" always means the image's left.
Every size is laid out on a 64-pixel grid and scaled to the requested image size.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

RGB = tuple[int, int, int]

DEFAULT_SIZE = 64
GRID = 64  # the layout below is written for 64x64 and scaled to other sizes

# Object colours: far apart in RGB (nearest pair about 90 apart) and in luminance (52, 90, 113,
# 137, 161, 204), so that a greyscale scene still tells them apart for colourisation.
OBJECT_COLORS: dict[str, RGB] = {
    "red": (230, 30, 30),
    "orange": (255, 140, 20),
    "yellow": (240, 220, 30),
    "green": (60, 190, 70),
    "blue": (20, 40, 200),
    "purple": (160, 70, 210),
}
BACKGROUND_COLORS: dict[str, RGB] = {
    "white": (255, 255, 255),
    "light grey": (190, 190, 190),
    "light blue": (175, 210, 250),
    "light yellow": (250, 240, 170),
}
# Referring segmentation paints the referred object in this colour; no object ever has it.
MARKER_COLOR = "cyan"
MARKER_RGB: RGB = (0, 220, 230)
BODY_RGB: RGB = (60, 60, 60)  # the stick figure's limbs, head and bare torso
PATTERN_RGB: RGB = (255, 255, 255)  # the stripes and dots of a patterned shirt
FIGURE_BACKGROUNDS = ("white", "light grey", "light blue")

SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
REGIONS = ("top left", "top right", "bottom left", "bottom right", "center")
DEPTHS = ("near", "middle", "far")
DEPTH_LEVELS = {"near": 255, "middle": 170, "far": 85}  # nearer is brighter; background is 0
# An object's depth follows from where it stands on the ground plane: lower in the picture is nearer, the
# cue a single photograph gives. (Depth drawn at random was invisible in the scene, which made depth
# estimation, and few-shot depth prompts, guesswork: 25% passed where chance is about 16%.)
REGION_DEPTH = {
    "top left": "far", "top right": "far", "center": "middle", "bottom left": "near", "bottom right": "near",
}

# Half the side of an object's bounding box on the 64 grid. A large object in a corner and a small
# one in the centre keep a 1-pixel gap; two large ones there would overlap, so scenes forbid that.
HALF_EXTENT = {"small": 5, "large": 9}
MIN_GAP = 1  # empty pixels required between two objects' boxes
REGION_CENTERS = {
    "top left": (16, 16),
    "top right": (48, 16),
    "bottom left": (16, 48),
    "bottom right": (48, 48),
    "center": (32, 32),
}
MIRRORED_REGION = {
    "top left": "top right",
    "top right": "top left",
    "bottom left": "bottom right",
    "bottom right": "bottom left",
    "center": "center",
}


def _scale(value: float, size: int) -> int:
    return int(round(value * size / GRID))


def _check_size(size: int) -> None:
    if size < 32 or size % 16:
        raise ValueError(f"image size {size} is not supported: use a multiple of 16 that is at least 32 (default 64)")


# ----------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class SceneObject:
    """One flat-coloured shape. `depth` shows only in the depth map; it defaults to the region's
    (REGION_DEPTH), which is what every generator uses: another value is for building wrong answers."""

    shape: str
    color: str
    size: str
    region: str
    depth: str | None = None

    def __post_init__(self) -> None:
        if self.depth is None:
            object.__setattr__(self, "depth", REGION_DEPTH.get(self.region))
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.color, (*OBJECT_COLORS, MARKER_COLOR), "colour"),
            (self.size, SIZES, "size"),
            (self.region, REGIONS, "region"),
            (self.depth, DEPTHS, "depth"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown object {what} {value!r}; choose one of {list(allowed)}")

    @property
    def pair(self) -> tuple[str, str]:
        return (self.color, self.shape)


@dataclass(frozen=True)
class Scene:
    """A background colour and up to three objects in distinct regions."""

    background: str
    objects: tuple[SceneObject, ...]
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        if self.background not in BACKGROUND_COLORS:
            raise ValueError(f"unknown background {self.background!r}; choose one of {list(BACKGROUND_COLORS)}")
        _check_size(self.size)
        object.__setattr__(self, "objects", tuple(self.objects))
        problem = scene_layout_problem(self.objects)
        if problem:
            raise ValueError(f"invalid scene: {problem}")

    def to_dict(self) -> dict:
        return {"background": self.background, "size": self.size, "objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_dict(data: dict) -> Scene:
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return Scene(background=data["background"], objects=objects, size=data.get("size", DEFAULT_SIZE))

    def replace_object(self, index: int, new: SceneObject | None) -> Scene:
        """The same scene with object `index` replaced (or removed when `new` is None)."""
        objects = list(self.objects)
        if new is None:
            del objects[index]
        else:
            objects[index] = new
        return Scene(self.background, tuple(objects), self.size)


def object_box(obj: SceneObject, size: int = DEFAULT_SIZE) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x0, y0, x1, y1) of an object."""
    cx, cy = region_center(obj.region, size)
    half = half_extent(obj.size, size)
    return cx - half, cy - half, cx + half, cy + half


def region_center(region: str, size: int = DEFAULT_SIZE) -> tuple[int, int]:
    x, y = REGION_CENTERS[region]
    return _scale(x, size), _scale(y, size)


def half_extent(object_size: str, size: int = DEFAULT_SIZE) -> int:
    return _scale(HALF_EXTENT[object_size], size)


def scene_layout_problem(objects: tuple[SceneObject, ...]) -> str | None:
    """Why these objects cannot share a scene, or None when they can (checked on the 64 grid)."""
    if len(objects) > 3:
        return f"{len(objects)} objects; a scene holds at most 3"
    regions = [o.region for o in objects]
    if len(set(regions)) != len(regions):
        return f"two objects in the same region ({regions})"
    if len({o.pair for o in objects}) != len(objects):
        return "two objects with the same colour and shape (instructions could not tell them apart)"
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            ax0, ay0, ax1, ay1 = object_box(a, GRID)
            bx0, by0, bx1, by1 = object_box(b, GRID)
            if ax0 <= bx1 + MIN_GAP and bx0 <= ax1 + MIN_GAP and ay0 <= by1 + MIN_GAP and by0 <= ay1 + MIN_GAP:
                first, second = f"{a.size} {a.shape} at the {a.region}", f"{b.size} {b.shape} at the {b.region}"
                return f"the {first} and the {second} would touch"
    return None


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


def object_mask(obj: SceneObject, size: int = DEFAULT_SIZE) -> np.ndarray:
    return shape_mask(obj.shape, region_center(obj.region, size), half_extent(obj.size, size), size)


def object_masks(scene: Scene) -> list[np.ndarray]:
    """One boolean mask per object, in the scene's order (the segmentation masks)."""
    return [object_mask(o, scene.size) for o in scene.objects]


def color_rgb(name: str) -> RGB:
    for table in (OBJECT_COLORS, BACKGROUND_COLORS):
        if name in table:
            return table[name]
    if name == MARKER_COLOR:
        return MARKER_RGB
    raise ValueError(f"unknown colour {name!r}")


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


def segmentation_target(scene: Scene, index: int) -> Scene:
    """The scene that `render_segmentation(scene, index)` draws, as a spec the judge can check."""
    obj = scene.objects[index]
    marked = SceneObject(obj.shape, MARKER_COLOR, obj.size, obj.region)
    return scene.replace_object(index, marked)


def mirror_scene(scene: Scene) -> Scene:
    """The scene flipped left to right (every shape here is left-right symmetric)."""
    objects = tuple(
        SceneObject(o.shape, o.color, o.size, MIRRORED_REGION[o.region]) for o in scene.objects
    )
    return Scene(scene.background, objects, scene.size)


# ----------------------------------------------------------------------------------------------
# Stick figures and garments

ARM_POSES = ("down", "out", "up")
LEG_POSES = ("together", "apart")
LEANS = ("none", "left", "right")
PATTERNS = ("solid", "striped", "dotted")
LEAN_DEGREES = {"none": 0.0, "left": 7.0, "right": -7.0}

# Joints of the figure on the 64 grid, for its image-left side; the right side mirrors x at 32.
_CORE_JOINTS = {"head": (32, 11), "neck": (32, 19), "shoulder": (24, 21), "hip": (27, 38)}
_ARM_JOINTS = {"down": ((21, 30), (19, 39)), "out": ((16, 22), (9, 22)), "up": ((19, 13), (16, 5))}
_LEG_JOINTS = {"together": ((28, 48), (28, 59)), "apart": ((24, 48), (19, 59))}
_LEAN_PIVOT = (32, 59)
HEAD_RADIUS = 6
LIMB_WIDTH = 4
SKELETON_WIDTH = 3

# Limbs as joint pairs; each gets an OpenPose-like hue in the skeleton map.
LIMBS = (
    ("neck", "head"),
    ("neck", "left_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_hand"),
    ("neck", "right_shoulder"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_hand"),
    ("neck", "left_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_foot"),
    ("neck", "right_hip"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_foot"),
)


def _hue_rgb(index: int, count: int) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(index / count, 1.0, 1.0)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


LIMB_COLORS: tuple[RGB, ...] = tuple(_hue_rgb(i, len(LIMBS)) for i in range(len(LIMBS)))


@dataclass(frozen=True)
class Pose:
    left_arm: str = "down"
    right_arm: str = "down"
    legs: str = "together"
    lean: str = "none"

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.left_arm, ARM_POSES, "left arm"),
            (self.right_arm, ARM_POSES, "right arm"),
            (self.legs, LEG_POSES, "legs"),
            (self.lean, LEANS, "lean"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} pose {value!r}; choose one of {list(allowed)}")

    def mirrored(self) -> Pose:
        lean = {"left": "right", "right": "left"}.get(self.lean, self.lean)
        return Pose(self.right_arm, self.left_arm, self.legs, lean)


@dataclass(frozen=True)
class Garment:
    """A shirt: an object colour, solid or with white stripes or dots."""

    color: str
    pattern: str = "solid"

    def __post_init__(self) -> None:
        if self.color not in OBJECT_COLORS:
            raise ValueError(f"unknown garment colour {self.color!r}; choose one of {list(OBJECT_COLORS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown garment pattern {self.pattern!r}; choose one of {list(PATTERNS)}")


@dataclass(frozen=True)
class Figure:
    """A stick figure in a pose, optionally wearing a garment, on a light background."""

    pose: Pose
    garment: Garment | None
    background: str = "light grey"
    size: int = DEFAULT_SIZE

    def __post_init__(self) -> None:
        if self.background not in FIGURE_BACKGROUNDS:
            raise ValueError(f"unknown figure background {self.background!r}; choose one of {list(FIGURE_BACKGROUNDS)}")
        _check_size(self.size)

    def to_dict(self) -> dict:
        return {
            "pose": asdict(self.pose),
            "garment": asdict(self.garment) if self.garment else None,
            "background": self.background,
            "size": self.size,
        }

    @staticmethod
    def from_dict(data: dict) -> Figure:
        garment = Garment(**data["garment"]) if data.get("garment") else None
        return Figure(Pose(**data["pose"]), garment, data["background"], data.get("size", DEFAULT_SIZE))


def _mirror_x(point: tuple[float, float]) -> tuple[float, float]:
    return (GRID - point[0], point[1])


def figure_joints(pose: Pose, size: int = DEFAULT_SIZE) -> dict[str, tuple[float, float]]:
    """Joint positions in pixels (floats) for a pose at an image size."""
    joints: dict[str, tuple[float, float]] = {"head": _CORE_JOINTS["head"], "neck": _CORE_JOINTS["neck"]}
    for side, arm in (("left", pose.left_arm), ("right", pose.right_arm)):
        flip = _mirror_x if side == "right" else (lambda p: p)
        elbow, hand = _ARM_JOINTS[arm]
        joints[f"{side}_shoulder"] = flip(_CORE_JOINTS["shoulder"])
        joints[f"{side}_elbow"] = flip(elbow)
        joints[f"{side}_hand"] = flip(hand)
        knee, foot = _LEG_JOINTS[pose.legs]
        joints[f"{side}_hip"] = flip(_CORE_JOINTS["hip"])
        joints[f"{side}_knee"] = flip(knee)
        joints[f"{side}_foot"] = flip(foot)
    angle = math.radians(LEAN_DEGREES[pose.lean])
    px, py = _LEAN_PIVOT
    scale = size / GRID
    placed = {}
    for name, (x, y) in joints.items():
        # A positive angle turns the figure's top towards the image's left.
        dx, dy = x - px, y - py
        rx = px + dx * math.cos(angle) + dy * math.sin(angle)
        ry = py - dx * math.sin(angle) + dy * math.cos(angle)
        placed[name] = (rx * scale, ry * scale)
    return placed


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
    period = max(_scale(8, size), 4)
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
    width = max(_scale(LIMB_WIDTH, size), 3)
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
    width = max(_scale(SKELETON_WIDTH, size), 3)
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
    return np.array([[_scale(x, size), _scale(y, size)] for x, y in _GARMENT_OUTLINE], np.int32)


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

PICTURE_KINDS = ("scene", "depth", "edges", "figure", "skeleton", "garment", "noisy", "blurred", "grey")


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
    raise ValueError(f"unknown picture kind {kind!r}; choose one of {list(PICTURE_KINDS)}")
