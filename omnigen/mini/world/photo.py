"""Pictures from outside the world's grid, like the ones a user uploads: shapes of any size at any place on a
canvas of any size, drawn with smooth edges in colours near the palette's, optionally with noise or JPEG
artefacts.

The world's own scenes put one of two sizes at one of five places on a 64-pixel canvas; a picture a user
brings has none of that. A `Photo` holds such a picture in canvas pixels; `render_photo` draws it as uploaded
(at its canvas size, degraded) and `render_photo_as_output` draws it clean at the size the model works at,
shrunk exactly as the processor shrinks an input picture, which is what an edit of it must give back.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .model import BACKGROUND_COLORS, DEFAULT_SIZE, OBJECT_COLORS, SHAPES, RGB
from .shapes import shape_mask

MIN_CANVAS, MAX_CANVAS = 64, 320
SUPERSAMPLE = 4  # edges are drawn at this many times the canvas size and averaged down: smooth, as in a real picture


@dataclass(frozen=True)
class PhotoObject:
    """A flat shape: `x`, `y` its centre and `half` half its bounding box, in canvas pixels; `rgb` the colour
    it is drawn in (near its palette colour `color`)."""

    shape: str
    color: str
    x: float
    y: float
    half: float
    rgb: RGB

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose one of {list(SHAPES)}")
        if self.color not in OBJECT_COLORS:
            raise ValueError(f"unknown object colour {self.color!r}; choose one of {list(OBJECT_COLORS)}")
        object.__setattr__(self, "rgb", tuple(int(c) for c in self.rgb))

    @property
    def pair(self) -> tuple[str, str]:
        return (self.color, self.shape)


@dataclass(frozen=True)
class Photo:
    """A canvas of `canvas` x `canvas` pixels, its background near the palette's `background`, its objects,
    and what degrades it as uploaded: Gaussian noise of `noise` (0..255 units) and JPEG at `jpeg` quality
    (0 for none); `seed` fixes the noise."""

    background: str
    background_rgb: RGB
    canvas: int
    objects: tuple[PhotoObject, ...]
    noise: float = 0.0
    jpeg: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.background not in BACKGROUND_COLORS:
            raise ValueError(f"unknown background {self.background!r}; choose one of {list(BACKGROUND_COLORS)}")
        if not MIN_CANVAS <= self.canvas <= MAX_CANVAS:
            raise ValueError(f"canvas {self.canvas} is outside {MIN_CANVAS}..{MAX_CANVAS} pixels")
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "background_rgb", tuple(int(c) for c in self.background_rgb))

    def to_dict(self) -> dict:
        return {**asdict(self), "objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_dict(data: dict) -> Photo:
        objects = tuple(PhotoObject(**{**o, "rgb": tuple(o["rgb"])}) for o in data["objects"])
        return Photo(**{**data, "objects": objects, "background_rgb": tuple(data["background_rgb"])})

    def replace(self, **changes) -> Photo:
        return Photo(**{**{k: getattr(self, k) for k in self.__dataclass_fields__}, **changes})

    def scale_to(self, size: int) -> float:
        """How much the processor shrinks this canvas to fit `size` (a square canvas shrinks to exactly it)."""
        return size / self.canvas


def photo_object_mask(obj: PhotoObject, size: int, scale: float = 1.0) -> np.ndarray:
    """Fraction of each pixel of a `size` canvas the object covers (0..1), the object scaled by `scale`."""
    fine = size * SUPERSAMPLE
    factor = scale * SUPERSAMPLE
    center = (int(round((obj.x + 0.5) * factor - 0.5)), int(round((obj.y + 0.5) * factor - 0.5)))
    mask = shape_mask(obj.shape, center, int(round(obj.half * factor)), fine).astype(np.float32)
    return mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def _draw(photo: Photo, size: int, scale: float) -> Image.Image:
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = photo.background_rgb
    for obj in photo.objects:
        cover = photo_object_mask(obj, size, scale)[..., None]
        canvas = canvas * (1 - cover) + np.asarray(obj.rgb, np.float32) * cover
    return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8), "RGB")


def render_photo(photo: Photo) -> Image.Image:
    """The picture as a user would upload it: at its canvas size, with its noise and JPEG artefacts."""
    image = _draw(photo, photo.canvas, 1.0)
    if photo.noise > 0:
        rng = np.random.default_rng(photo.seed)
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, photo.noise, (photo.canvas, photo.canvas, 3))
        image = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8), "RGB")
    if photo.jpeg:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=photo.jpeg)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def render_photo_as_output(photo: Photo, size: int = DEFAULT_SIZE) -> Image.Image:
    """The picture clean, at `size`, as the processor's shrinking of the uploaded canvas places it."""
    from ...images import crop_to_multiple_of_16

    image = _draw(photo, photo.canvas, 1.0)
    return crop_to_multiple_of_16(image, size)
