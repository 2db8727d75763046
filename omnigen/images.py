"""Reading pictures for the model: any path, PIL image or array as 8-bit RGB, upright per its EXIF tag, refused
with a sentence when unreadable or too large; and the official crop/resize to multiples of 16 and [-1, 1] tensors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .settings import PATCH_PIXELS

def load_image(image: str | os.PathLike | Image.Image | np.ndarray, max_pixels: int = 64_000_000) -> Image.Image:
    """Read a path, PIL image or HxW[xC] array as an 8-bit RGB PIL image, upright per its EXIF tag."""
    if isinstance(image, (str, os.PathLike)):
        picture = _open_image_file(Path(image), max_pixels)
        where = f"image {str(image)!r}"
    elif isinstance(image, Image.Image):
        picture, where = image, "the image"
    elif isinstance(image, np.ndarray):
        picture, where = _array_to_image(image), "the image array"
    else:
        raise ValueError(
            f"cannot read an image from a {type(image).__name__}; pass a file path, a PIL image or a numpy array"
        )
    _check_image_size(picture.size, max_pixels, where)
    try:
        picture = ImageOps.exif_transpose(picture)
    except Exception:  # a broken EXIF block should not make a good picture unusable
        pass
    return _to_rgb(picture, where)


def _open_image_file(path: Path, max_pixels: int) -> Image.Image:
    if not path.is_file():
        raise ValueError(f"image file not found: {str(path)!r}; check the path")
    with _image_read_errors(path):
        picture = Image.open(path)
    try:
        # The header alone gives the size: refuse huge files before decoding their pixels.
        _check_image_size(picture.size, max_pixels, f"image {str(path)!r}")
    except ValueError:
        picture.close()
        raise
    with _image_read_errors(path):
        picture.load()
    return picture


@contextmanager
def _image_read_errors(path: Path) -> Iterator[None]:
    """Turn Pillow's many ways of failing on a bad file into one clear ValueError."""
    try:
        yield
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {str(path)!r} is too large to open ({error}); downscale it first") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # UnidentifiedImageError is an OSError
        raise ValueError(
            f"cannot read image {str(path)!r}: it is not a valid or complete image file ({error}); "
            "save it again as PNG or JPEG"
        ) from None


def _check_image_size(size: tuple[int, int], max_pixels: int, where: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"{where} is empty ({width}x{height} pixels); use an image with at least one pixel")
    if width * height > max_pixels:
        raise ValueError(
            f"{where} is {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,}; "
            "downscale it first"
        )


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image array is empty (shape {tuple(array.shape)}); use an image with at least one pixel")
    # Image.fromarray infers L, RGB or RGBA from the shape of an 8-bit array.
    return Image.fromarray(np.ascontiguousarray(_to_uint8(array)))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 8-bit, 16-bit, 32-bit integer, boolean or float pixel values to 0..255."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    floats = values.astype(np.float64)
    if not np.isfinite(floats).all():
        raise ValueError("the image contains NaN or infinite values; pass finite pixel values")
    peak = float(floats.max(initial=0.0))
    if np.issubdtype(values.dtype, np.floating) and peak <= 1.0:
        floats = floats * 255.0  # float pictures are conventionally in [0, 1]
    elif (values.dtype.kind == "u" and values.dtype.itemsize == 2) or 255.0 < peak <= 65535.0:
        floats = floats / 257.0  # 16-bit: 65535 -> 255
    elif peak > 65535.0:
        floats = floats * (255.0 / peak)
    return np.clip(np.rint(floats), 0, 255).astype(np.uint8)


def _to_rgb(picture: Image.Image, where: str) -> Image.Image:
    mode = picture.mode
    if mode == "RGB":
        return picture
    if mode.startswith("I") or mode == "F":
        gray = _to_uint8(np.asarray(picture))
        return Image.fromarray(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1)))
    if mode == "P":
        has_alpha = "transparency" in picture.info or getattr(picture.palette, "mode", "") == "RGBA"
        picture = picture.convert("RGBA" if has_alpha else "RGB")
        mode = picture.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels are shown on white, as an image viewer would show them.
        rgba = (picture.convert("LA") if mode == "La" else picture).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return picture.convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(
            f"{where} has colour mode {mode!r}, which cannot be converted to RGB; save it as an RGB PNG"
        ) from error


def crop_to_multiple_of_16(image: Image.Image, max_image_size: int) -> Image.Image:
    """The official `crop_arr`: shrink so the longer side is at most `max_image_size`, then centre-crop
    both sides to multiples of 16. Very small images are first enlarged so the shorter side is 16."""
    while min(image.size) >= 2 * max_image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    if max(image.size) > max_image_size:
        scale = max_image_size / max(image.size)
        # max(1, .) only matters for extreme aspect ratios, where the official code crashes.
        image = image.resize(tuple(max(1, round(side * scale)) for side in image.size), resample=Image.BICUBIC)
    if min(image.size) < PATCH_PIXELS:
        scale = PATCH_PIXELS / min(image.size)
        image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    width, height = image.size
    top, left = (height % PATCH_PIXELS) // 2, (width % PATCH_PIXELS) // 2
    bottom, right = height - (height % PATCH_PIXELS - top), width - (width % PATCH_PIXELS - left)
    return image.crop((left, top, right, bottom))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1]: ToTensor then Normalize(0.5, 0.5), in the same float operations."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return pixels.to(torch.float32).div(255).sub_(0.5).div_(0.5)


