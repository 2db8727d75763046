"""The image autoencoder: a diffusers AutoencoderKL read from a model folder's `vae/`.

Latents follow the checkpoint's convention z = (encode(x) - shift_factor) * scaling_factor.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def load_vae(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu"):
    from diffusers import AutoencoderKL

    folder = Path(model_dir) / "vae"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is missing or has no config.json: a model folder needs a diffusers "
                                "AutoencoderKL in vae/")
    vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype)
    return vae.to(device).eval().requires_grad_(False)


def latent_scale(vae) -> tuple[float, float]:
    """(shift, scale) of the latent space; SDXL's VAE has no shift."""
    shift = vae.config.shift_factor if getattr(vae.config, "shift_factor", None) is not None else 0.0
    return float(shift), float(vae.config.scaling_factor)


def spatial_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f)."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    dist = vae.encode(pixels).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    shift, scale = latent_scale(vae)
    return (z - shift) * scale


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> pixels (B, 3, H, W) in [0, 1], fp32."""
    shift, scale = latent_scale(vae)
    z = latents.to(device=vae.device, dtype=vae.dtype) / scale + shift
    return (vae.decode(z).sample.float() * 0.5 + 0.5).clamp(0, 1)


def to_pil(pixels: torch.Tensor) -> list:
    """(B, 3, H, W) in [0, 1] -> PIL images."""
    from PIL import Image

    array = (pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in array]
