"""Edit fidelity: keep the original pixels outside the painted mask.

The model redraws the whole picture; for an edit the user paints where the change may happen, and
everything else is copied back from the input after decoding. The input is first brought to the
output's geometry exactly as the processor brought it to the model (crop_to_multiple_of_16), so an
unmasked pixel of the result is the pixel the model was shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from omnigen.images import crop_to_multiple_of_16


def mask_from_layers(layers: Sequence[np.ndarray | Image.Image | None], size: tuple[int, int]) -> np.ndarray | None:
    """The union of the painted strokes of gr.ImageEditor layers (alpha > 0) as an HxW bool mask at `size`
    (width, height); None when nothing is painted."""
    mask = None
    for layer in layers:
        if layer is None:
            continue
        picture = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
        alpha = picture.getchannel("A") if "A" in picture.getbands() else picture.convert("L")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.NEAREST)
        painted = np.asarray(alpha) > 0
        mask = painted if mask is None else mask | painted
    if mask is None or not mask.any():
        return None
    return mask


def mask_from_image(picture: Image.Image) -> np.ndarray | None:
    """A mask given as a picture: opaque, non-black pixels may change. None when it marks nothing."""
    if "A" in picture.getbands():
        mask = np.asarray(picture.getchannel("A")) > 0
        mask &= np.asarray(picture.convert("L")) > 0
    else:
        mask = np.asarray(picture.convert("L")) > 127
    return mask if mask.any() else None


def fit_like_processor(original: Image.Image, mask: np.ndarray, max_input_image_size: int,
                       output_size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """The original picture and its mask in the output's geometry (width, height).

    First the processor's own resize-and-crop, so the picture is the one the model saw; then, only if
    the output was asked at another size, a plain resize to it.
    """
    if mask.shape != (original.height, original.width):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the picture is "
                         f"{original.width}x{original.height}; paint the mask on the same picture")
    picture = crop_to_multiple_of_16(original.convert("RGB"), max_input_image_size)
    mask_picture = crop_to_multiple_of_16(Image.fromarray(mask.astype(np.uint8) * 255), max_input_image_size)
    if picture.size != output_size:
        picture = picture.resize(output_size, Image.BICUBIC)
        mask_picture = mask_picture.resize(output_size, Image.BILINEAR)
    return picture, np.asarray(mask_picture) > 127


def keep_outside_mask(original: Image.Image, edited: Image.Image, mask: np.ndarray) -> Image.Image:
    """`edited` where mask is True, `original` elsewhere; both pictures the size of the mask."""
    if original.size != edited.size or mask.shape != (edited.height, edited.width):
        raise ValueError(f"sizes differ: original {original.size}, edited {edited.size}, "
                         f"mask {mask.shape[1]}x{mask.shape[0]}")
    kept = np.where(mask[..., None], np.asarray(edited.convert("RGB")), np.asarray(original.convert("RGB")))
    return Image.fromarray(kept)


def composite_edit(original: Image.Image, edited: Image.Image, mask: np.ndarray,
                   max_input_image_size: int) -> Image.Image:
    """The edit confined to the mask: the original input image outside it, pixel for pixel."""
    fitted, fitted_mask = fit_like_processor(original, mask, max_input_image_size, edited.size)
    return keep_outside_mask(fitted, edited, fitted_mask)
