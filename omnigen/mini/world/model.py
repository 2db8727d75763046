"""What the X2I-mini world holds, with no pixels: its palette, the 64-pixel layout grid, scenes of
shapes, stick-figure poses and garments, and their geometry (object boxes, regions, joints).

A scene is a light background with one to three objects (circle, square or triangle; one of six
colours; small or large; in one of five regions, at most one object per region; its depth, drawn
only in the depth map, follows its height in the picture: the lower, the nearer). A figure is a stick
person in one of 54 poses, optionally wearing a coloured or patterned shirt.

Coordinates follow the image: x to the right, y down. "left" always means the image's left.
Every size is laid out on a 64-pixel grid and scaled to the requested image size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


def scale_from_grid(value: float, size: int) -> int:
    """A length laid out on the 64 grid, in pixels of an image of `size`."""
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
        # Repeated colour-shape pairs are allowed here ("two blue squares"); the task generators refuse them
        # where an instruction must refer to one object (scene_layout_problem's default).
        problem = scene_layout_problem(self.objects, allow_repeats=True)
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
    return scale_from_grid(x, size), scale_from_grid(y, size)


def half_extent(object_size: str, size: int = DEFAULT_SIZE) -> int:
    return scale_from_grid(HALF_EXTENT[object_size], size)


def scene_layout_problem(objects: tuple[SceneObject, ...], allow_repeats: bool = False) -> str | None:
    """Why these objects cannot share a scene, or None when they can (checked on the 64 grid).

    Two objects of the same colour and shape are a problem unless `allow_repeats`: an instruction that names
    one of them could not tell them apart, but a count ("two blue squares") needs them."""
    if len(objects) > 3:
        return f"{len(objects)} objects; a scene holds at most 3"
    regions = [o.region for o in objects]
    if len(set(regions)) != len(regions):
        return f"two objects in the same region ({regions})"
    if not allow_repeats and len({o.pair for o in objects}) != len(objects):
        return "two objects with the same colour and shape (instructions could not tell them apart)"
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            ax0, ay0, ax1, ay1 = object_box(a, GRID)
            bx0, by0, bx1, by1 = object_box(b, GRID)
            if ax0 <= bx1 + MIN_GAP and bx0 <= ax1 + MIN_GAP and ay0 <= by1 + MIN_GAP and by0 <= ay1 + MIN_GAP:
                first, second = f"{a.size} {a.shape} at the {a.region}", f"{b.size} {b.shape} at the {b.region}"
                return f"the {first} and the {second} would touch"
    return None


def color_rgb(name: str) -> RGB:
    for table in (OBJECT_COLORS, BACKGROUND_COLORS):
        if name in table:
            return table[name]
    if name == MARKER_COLOR:
        return MARKER_RGB
    raise ValueError(f"unknown colour {name!r}")


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
