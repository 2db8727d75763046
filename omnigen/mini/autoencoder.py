"""The image autoencoder of the embedded model: a small diffusers AutoencoderKL trained from scratch.

The mini world's pictures are 64x64, flat-coloured and full of sharp edges and thin lines (3-pixel
limbs, 1-pixel Canny edges), so the VAE is trained at full resolution on a pool of rendered images,
with an L1 + MSE reconstruction loss plus an L1 loss on image gradients that keeps edges sharp, and a
tiny KL term that only keeps the latent space smooth. After training, the latent statistics fix
`shift_factor` and `scaling_factor` so that z = (encode(x) - shift_factor) * scaling_factor has zero
mean and unit variance, the convention `omnigen.vae` reads.

Here are the model (its config and initialisation), the pictures it learns from (pools drawn from an image
source, the mini world's sources) and its measures (PSNR, latent statistics). The training loops, their
checkpoints and the command line are in vae_training.py:

    python -m omnigen.mini.vae_training --out DIR --steps N [--latent-channels 8] [--max-seconds S]
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from omnigen import vae as vae_io

ImageSource = Callable[[random.Random, int], list[Image.Image]]

# Training is compute-bound at 64x64 and the full-resolution stages cost most: on 2 shared cores a
# batch-32 step took 1.5 CPU-s at these widths against 3.6 at (32, 64, 64, 64), and decoding a third.
DEFAULT_WIDTHS = (16, 32, 64, 64)
DOWN_BLOCKS = 4  # spatial factor 2 ** (4 - 1) = 8, the factor the mini model's latents are laid out for
RENDER_CHUNK = 256  # images asked of the source per call while filling the pool


# ----------------------------------------------------------------------------------------------
# The model


def norm_groups(widths: Sequence[int]) -> int:
    """GroupNorm groups that divide every width, with at least 4 channels per group (at most 32 groups)."""
    common = math.gcd(*widths)
    return max(g for g in range(1, 33) if common % g == 0 and common // g >= min(4, common))


def vae_config(latent_channels: int = 8, widths: Sequence[int] = DEFAULT_WIDTHS, sample_size: int = 64) -> dict:
    """A diffusers AutoencoderKL config: 4 down/up blocks (factor 8), one resnet per block.

    `scaling_factor` and `shift_factor` are placeholders (1, 0) until `vae_training.train_vae` measures the latents.
    """
    widths = [int(w) for w in widths]
    if len(widths) != DOWN_BLOCKS:
        raise ValueError(f"widths={widths} has {len(widths)} entries; the mini VAE needs {DOWN_BLOCKS} "
                         "(spatial factor 8)")
    if min(widths) < 1 or latent_channels < 1:
        raise ValueError(f"widths={widths} and latent_channels={latent_channels} must be positive")
    if sample_size % 2 ** (DOWN_BLOCKS - 1):
        raise ValueError(f"sample_size={sample_size} is not a multiple of the spatial factor 8")
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * DOWN_BLOCKS,
        "up_block_types": ["UpDecoderBlock2D"] * DOWN_BLOCKS,
        "block_out_channels": widths,
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": int(latent_channels),
        "norm_num_groups": norm_groups(widths),
        "sample_size": int(sample_size),
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
        "force_upcast": False,
        "mid_block_add_attention": True,
    }


def build_vae(config: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config)


INITIAL_LOG_VARIANCE = -6.0


def start_nearly_deterministic(vae) -> None:
    """Set the posterior's initial log-variance to -6 (std 0.05) instead of 0.

    With unit noise on latents whose means start near 0.1, the decoder would spend its first
    hundreds of steps seeing noise; the tiny KL weight would take as long to shrink it.
    """
    with torch.no_grad():
        vae.quant_conv.bias[vae.config.latent_channels :].fill_(INITIAL_LOG_VARIANCE)


# ----------------------------------------------------------------------------------------------
# Data: a pool of rendered images, drawn from at random


def render_pool(images: ImageSource, rng: random.Random, count: int, size: int) -> torch.Tensor:
    """`count` images from the source as a uint8 tensor (count, 3, size, size)."""
    pool = np.empty((count, size, size, 3), np.uint8)
    filled = 0
    while filled < count:
        want = min(RENDER_CHUNK, count - filled)
        batch = images(rng, want)
        if not batch:
            raise ValueError(f"the image source returned no images when asked for {want}")
        for image in batch[:want]:
            if image.size != (size, size):
                raise ValueError(f"the image source gave a {image.size[0]}x{image.size[1]} image; "
                                 f"the VAE trains on {size}x{size} images: resize them in the source")
            pool[filled] = np.asarray(image.convert("RGB"))
            filled += 1
    return torch.from_numpy(pool).permute(0, 3, 1, 2).contiguous()


def to_pixels(uint8_images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1], the model's input convention."""
    return uint8_images.float() / 127.5 - 1.0


def images_to_pixels(images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.float()
    arrays = np.stack([np.asarray(image.convert("RGB")) for image in images])
    return to_pixels(torch.from_numpy(arrays).permute(0, 3, 1, 2))


def draw_batch(pool: torch.Tensor, generator: torch.Generator, batch_size: int) -> torch.Tensor:
    """A random batch from the pool, each image mirrored left-right with probability 1/2."""
    index = torch.randint(len(pool), (batch_size,), generator=generator)
    flip = torch.rand(batch_size, generator=generator) < 0.5
    batch = to_pixels(pool[index])
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


# ----------------------------------------------------------------------------------------------
# Metrics


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1]; a perfect image counts as 60 dB so that averages stay finite."""
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-6))).clamp_max(60.0)


@torch.no_grad()
def reconstruction_psnr(vae, images: Sequence[Image.Image] | torch.Tensor, batch_size: int = 64) -> float:
    """Mean per-image PSNR (dB) of encode -> decode, latent means used; images as PIL or tensors in [-1, 1]."""
    pixels = images_to_pixels(images)
    if len(pixels) == 0:
        raise ValueError("reconstruction_psnr needs at least one image")
    scores = []
    for chunk in pixels.split(batch_size):
        recon = vae_io.decode(vae, vae_io.encode(vae, chunk, sample=False))
        target = (chunk * 0.5 + 0.5).clamp(0, 1)
        scores.append(psnr_from_mse((recon - target).pow(2).mean(dim=(1, 2, 3))))
    return float(torch.cat(scores).mean())


@torch.no_grad()
def latent_statistics(vae, pixels: torch.Tensor, seed: int, batch_size: int = 64) -> tuple[float, float]:
    """(shift, scale) = (mean, 1/std) of sampled, unscaled latents over `pixels`."""
    generator = torch.Generator().manual_seed(seed)
    latents = [vae.encode(chunk).latent_dist.sample(generator) for chunk in pixels.split(batch_size)]
    latents = torch.cat(latents).double()
    return float(latents.mean()), float(1.0 / latents.std().clamp_min(1e-8))


def pixel_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MSE in [0, 1] pixel units of two batches in [-1, 1]."""
    return (recon.detach().clamp(-1, 1) - target).pow(2).mean(dim=(1, 2, 3)) / 4


# ----------------------------------------------------------------------------------------------
# The mini world's images


def world_images(rng: random.Random, n: int) -> list[Image.Image]:
    """Every input and output image of random samples across all task families of the mini world; an uploaded
    picture of another size as the processor brings it to the native size (what the VAE encodes)."""
    from omnigen.images import crop_to_multiple_of_16
    from omnigen.mini.tasks import FAMILIES, make_sample
    from omnigen.mini.world import DEFAULT_SIZE

    found: list[Image.Image] = []
    while len(found) < n:
        sample = make_sample(rng.choice(list(FAMILIES)), rng)
        found.extend([crop_to_multiple_of_16(image, DEFAULT_SIZE) for image in sample.input_images])
        found.append(sample.output_image)
    return found[:n]


def decoder_samples(rng: random.Random, n: int) -> list:
    """The samples whose outputs the decoder learns to draw: every family equally often, held-out pairs included.

    A generation of a held-out colour-shape pair or of a segmentation marker must come out of the decoder
    as well as any other picture: the held-out pairs test the transformer's composition, not whether the
    VAE can render a colour-shape pair it never saw.
    """
    from omnigen.mini.tasks import FAMILIES, HELDOUT_FAMILIES, make_sample

    samples = []
    for _ in range(n):
        family = rng.choice(list(FAMILIES))
        split = "heldout" if family in HELDOUT_FAMILIES and rng.random() < 0.5 else "train"
        samples.append(make_sample(family, rng, split))
    return samples


def decoder_images(rng: random.Random, n: int) -> list[Image.Image]:
    """Output images of `decoder_samples`: the decoder never draws an input image (those are only encoded)."""
    return [sample.output_image for sample in decoder_samples(rng, n)]

