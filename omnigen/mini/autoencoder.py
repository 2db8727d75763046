"""The image autoencoder of the embedded model: a small diffusers AutoencoderKL trained from scratch.

The mini world's pictures are 64x64, flat-coloured and full of sharp edges and thin lines (3-pixel
limbs, 1-pixel Canny edges), so the VAE is trained at full resolution on a pool of rendered images,
with an L1 + MSE reconstruction loss plus an L1 loss on image gradients that keeps edges sharp, and a
tiny KL term that only keeps the latent space smooth. After training, the latent statistics fix
`shift_factor` and `scaling_factor` so that z = (encode(x) - shift_factor) * scaling_factor has zero
mean and unit variance, the convention `omnigen.vae` reads.

    python -m omnigen.mini.autoencoder --out DIR --steps N [--latent-channels 8] [--max-seconds S]

Training checkpoints into DIR/checkpoints; rerunning the same command continues from the last one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omnigen import vae as vae_io

ImageSource = Callable[[random.Random, int], list[Image.Image]]

# Training is compute-bound at 64x64 and the full-resolution stages cost most: on 2 shared cores a
# batch-32 step took 1.5 CPU-s at these widths against 3.6 at (32, 64, 64, 64), and decoding a third.
DEFAULT_WIDTHS = (16, 32, 64, 64)
DOWN_BLOCKS = 4  # spatial factor 2 ** (4 - 1) = 8, the factor the mini model's latents are laid out for
CHECKPOINT_FILE = "latest.pt"
DECODER_CHECKPOINT_FILE = "decoder-latest.pt"
DECODER_RECORD = "decoder_training.json"
RENDER_CHUNK = 256  # images asked of the source per call while filling the pool
EVAL_IMAGES = 256  # held-out images for the final PSNR
STATISTICS_IMAGES = 2048  # images whose latents fix shift_factor and scaling_factor
WARMUP_FRACTION = 0.05
MAX_WARMUP_STEPS = 50
COSINE_TAIL_FRACTION = 0.5  # the learning rate stays at its peak, then falls along a cosine for this last part
FINAL_LR_FRACTION = 0.02


# ----------------------------------------------------------------------------------------------
# The model


def training_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the one asked for, else a CUDA GPU when there is one (as accelerate picks for
    the transformer), else the CPU. Weights are initialised and random numbers drawn on the CPU either way, so
    the device changes only the arithmetic, not which images, indices or noise a step sees."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def norm_groups(widths: Sequence[int]) -> int:
    """GroupNorm groups that divide every width, with at least 4 channels per group (at most 32 groups)."""
    common = math.gcd(*widths)
    return max(g for g in range(1, 33) if common % g == 0 and common // g >= min(4, common))


def vae_config(latent_channels: int = 8, widths: Sequence[int] = DEFAULT_WIDTHS, sample_size: int = 64) -> dict:
    """A diffusers AutoencoderKL config: 4 down/up blocks (factor 8), one resnet per block.

    `scaling_factor` and `shift_factor` are placeholders (1, 0) until `train_vae` measures the latents.
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
# Loss, schedule, metrics


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, edge_weight: float) -> dict[str, torch.Tensor]:
    """L1 keeps flat colours exact, MSE punishes the large errors at edges, the gradient term keeps lines thin."""
    error = recon - target
    l1 = error.abs().mean()
    mse = error.pow(2).mean()
    grad_x = (error[..., :, 1:] - error[..., :, :-1]).abs().mean()
    grad_y = (error[..., 1:, :] - error[..., :-1, :]).abs().mean()
    return {"l1": l1, "mse": mse, "edge": grad_x + grad_y, "total": l1 + mse + edge_weight * (grad_x + grad_y)}


def learning_rate(base_lr: float, step: int, steps: int, progress: float) -> float:
    """Linear warm-up over the first steps, flat, then a cosine tail over the last part of `progress` (0..1)."""
    warmup = max(1, min(MAX_WARMUP_STEPS, int(WARMUP_FRACTION * steps)))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    tail_start = 1.0 - COSINE_TAIL_FRACTION
    if progress <= tail_start:
        return base_lr
    t = min(1.0, (progress - tail_start) / COSINE_TAIL_FRACTION)
    return base_lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t)))


def schedule_progress(step: int, steps: int, seconds: float, max_seconds: float | None) -> float:
    """How far along the schedule a run is (0..1): by steps, or by time when a time limit is nearer its end."""
    return step / steps if max_seconds is None else max(step / steps, seconds / max_seconds)


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


def training_step(vae, optimizer, batch: torch.Tensor, kl_weight: float,
                  edge_weight: float) -> tuple[torch.Tensor, dict]:
    """One optimiser step on a batch; returns the reconstruction and the loss terms as floats."""
    posterior = vae.encode(batch).latent_dist
    recon = vae.decode(posterior.sample()).sample
    losses = reconstruction_loss(recon, batch, edge_weight)
    kl = posterior.kl().mean()
    loss = losses["total"] + kl_weight * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    optimizer.step()
    return recon, {"loss": loss.item(), "l1": losses["l1"].item(), "edge": losses["edge"].item(), "kl": kl.item()}


# ----------------------------------------------------------------------------------------------
# Checkpoints and the saved model


def _atomic_torch_save(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _atomic_write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def save_vae(vae, folder: Path) -> None:
    """save_pretrained into `folder` without ever leaving a half-written folder there."""
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The random state of a CUDA device (the VAE's posterior samples are drawn there), None on the CPU."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def save_checkpoint(path: Path, config: dict, seed: int, progress: dict, vae, optimizer,
                    batch_rng: torch.Generator) -> None:
    """Model, optimiser, RNG states and `progress` (step, seconds, history), written atomically."""
    device = next(vae.parameters()).device
    _atomic_torch_save({
        "config": config, "seed": seed, **progress,
        "model": vae.state_dict(), "optimizer": optimizer.state_dict(),
        "batch_rng": batch_rng.get_state(), "torch_rng": torch.get_rng_state(),
        "device_rng": device_rng_state(device),
    }, path)


def load_checkpoint(path: Path, config: dict, seed: int, vae, optimizer, batch_rng: torch.Generator) -> dict:
    """Restore what `save_checkpoint` wrote; returns the progress dict (step, seconds, history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors, numbers, lists, dicts: no code
    if state["config"] != config or state["seed"] != seed:
        raise ValueError(f"{path} was written for another VAE config or seed ({state['config']}, "
                         f"seed {state['seed']}); "
                         "use a fresh out_dir, the same settings, or resume=False to start over")
    vae.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    batch_rng.set_state(state["batch_rng"])
    torch.set_rng_state(state["torch_rng"])
    restore_device_rng(state.get("device_rng"), next(vae.parameters()).device)
    return {key: state[key] for key in ("step", "seconds", "history")}


def restore_device_rng(state: torch.Tensor | None, device: torch.device) -> None:
    """Put back a CUDA device's random state saved by `device_rng_state` (a checkpoint written on another kind
    of device resumes with that device's current state: the same training, other noise)."""
    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


# ----------------------------------------------------------------------------------------------
# Training


def train_vae(
    images: ImageSource,
    out_dir: str | os.PathLike,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    kl_weight: float = 1e-6,
    checkpoint_every: int = 200,
    log_every: int = 50,
    resume: bool = True,
    callback: Callable[[dict], None] | None = None,
    max_seconds: float | None = None,
    *,
    latent_channels: int = 8,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    sample_size: int = 64,
    edge_weight: float = 1.0,
    pool_size: int = 20000,
    refresh_every: int | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Train the mini VAE on `images(rng, n)` and save it to out_dir/vae (readable by `omnigen.vae.load_vae`).

    Stops after `steps` optimiser steps or `max_seconds` of optimisation (pool rendering and the final
    statistics not counted), whichever comes first; with `max_seconds` the cosine tail follows whichever
    of the two is nearer its end. `callback(logs)` receives a dict every `log_every` steps. Training runs on
    `device` (see `training_device`); the final statistics and the saved folder are the CPU's. Returns
    {"psnr": held-out dB, "steps": steps done, "seconds": optimisation seconds, ...}.
    """
    if steps < 1 or batch_size < 1 or pool_size < batch_size:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, pool_size={pool_size}: need steps >= 1 and "
                         "pool_size >= batch_size >= 1")
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = checkpoint_dir / CHECKPOINT_FILE
    config = vae_config(latent_channels, widths, sample_size)

    device = training_device(device)
    torch.manual_seed(seed)
    vae = build_vae(config).train()
    start_nearly_deterministic(vae)
    vae.to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    batch_rng = torch.Generator().manual_seed(seed)
    step, seconds, history = 0, 0.0, []
    if resume and checkpoint_path.is_file():
        restored = load_checkpoint(checkpoint_path, config, seed, vae, optimizer, batch_rng)
        step, seconds, history = restored["step"], restored["seconds"], restored["history"]

    def pool_for(step: int) -> tuple[int, torch.Tensor]:
        # A pool is a function of (seed, index) alone, so a resumed run draws from the same images.
        index = step // refresh_every if refresh_every else 0
        return index, render_pool(images, random.Random(f"vae-pool-{seed}-{index}"), pool_size, sample_size)

    render_start = time.perf_counter()
    pool_index, pool = pool_for(step)
    render_seconds = time.perf_counter() - render_start

    def out_of_time() -> bool:
        return max_seconds is not None and seconds >= max_seconds

    while step < steps and not out_of_time():
        if refresh_every and step // refresh_every != pool_index:
            pool_index, pool = pool_for(step)
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, step, steps, schedule_progress(step, steps, seconds, max_seconds))
        batch = draw_batch(pool, batch_rng, batch_size).to(device)
        recon, losses = training_step(vae, optimizer, batch, kl_weight, edge_weight)
        step += 1
        seconds += time.perf_counter() - started

        if step % log_every == 0 or step == steps or out_of_time():
            history.append({"step": step, "seconds": round(seconds, 2), "lr": optimizer.param_groups[0]["lr"],
                            **losses, "batch_psnr": float(psnr_from_mse(pixel_mse(recon, batch)).mean())})
            if callback is not None:
                callback(history[-1])
        if step % checkpoint_every == 0 or step >= steps or out_of_time():
            save_checkpoint(checkpoint_path, config, seed, {"step": step, "seconds": seconds, "history": history},
                            vae, optimizer, batch_rng)

    return finish_vae(vae, images, out_dir, seed, {"steps": step, "seconds": round(seconds, 1),
                                                  "render_seconds": round(render_seconds, 1), "history": history},
                      statistics_pixels=to_pixels(pool[:STATISTICS_IMAGES]))


def finish_vae(vae, images: ImageSource, out_dir: Path, seed: int, metrics: dict,
               statistics_pixels: torch.Tensor) -> dict:
    """Fix the latent shift/scale, measure held-out PSNR, save out_dir/vae and out_dir/vae_training.json."""
    vae.eval().to("cpu")
    shift, scale = latent_statistics(vae, statistics_pixels, seed)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    held_out = images_to_pixels(images(random.Random(f"vae-eval-{seed}"), EVAL_IMAGES))
    metrics = {"psnr": round(reconstruction_psnr(vae, held_out), 2), **metrics,
               "shift_factor": shift, "scaling_factor": scale,
               "parameters": sum(p.numel() for p in vae.parameters())}
    save_vae(vae, out_dir / "vae")
    _atomic_write_json(metrics, out_dir / "vae_training.json")
    return metrics


# ----------------------------------------------------------------------------------------------
# Decoder fine-tuning: the latent space stays fixed, so the transformer's latents stay valid


def finetune_decoder(model_dir: str | os.PathLike, images: ImageSource, steps: int, batch_size: int = 16,
                     lr: float = 5e-4, seed: int = 0, pool_size: int = 8000, latent_noise: float = 0.1,
                     checkpoint_every: int = 200, edge_weight: float = 1.0, log_every: int = 50,
                     callback: Callable[[dict], None] | None = None, max_seconds: float | None = None,
                     device: str | torch.device | None = None) -> dict:
    """Train only the decoder of model_dir/vae, in place, for `steps` optimiser steps.

    The encoder (and so every latent the transformer learns from) is frozen; the decoder keeps learning
    to turn those latents into sharper pictures. Latents get a little extra noise (`latent_noise`, in
    the scaled units the transformer works in) so the decoder also copes with imperfect generations.
    Decoder, optimiser and random state are checkpointed to model_dir/checkpoints every `checkpoint_every`
    steps: a rerun with the same arguments continues from there as if never stopped, and once all `steps`
    are done a rerun changes nothing and returns the recorded metrics. `max_seconds` stops it earlier (the
    cosine tail then follows whichever end is nearer, as in `train_vae`). Runs on `device`
    (see `training_device`); the random numbers are drawn on the CPU.
    """
    if steps < 1 or batch_size < 1 or pool_size < batch_size:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, pool_size={pool_size}: need steps >= 1 and "
                         "pool_size >= batch_size >= 1")
    model_dir = Path(model_dir)
    checkpoint_path = model_dir / "checkpoints" / DECODER_CHECKPOINT_FILE
    record_path = model_dir / DECODER_RECORD
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "pool_size": pool_size,
                "latent_noise": latent_noise, "edge_weight": edge_weight}
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings and record["steps"] >= steps:
            return record
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True) if checkpoint_path.is_file() else None
    if state is not None and state["settings"] != settings:
        raise ValueError(f"{checkpoint_path} was written by a decoder fine-tuning with other settings "
                         f"({state['settings']}); delete it to start the fine-tuning over with {settings}")
    device = training_device(device)
    vae = vae_io.load_vae(model_dir).to(device)
    shift, scale = vae_io.latent_scale(vae)
    generator = torch.Generator().manual_seed(seed)
    pool = render_pool(images, random.Random(f"decoder-{seed}"), pool_size, vae.config.sample_size)
    with torch.no_grad():
        moments = torch.cat([vae.quant_conv(vae.encoder(to_pixels(chunk).to(device))) for chunk in pool.split(256)])
    decoder_parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    vae.requires_grad_(False)
    for p in decoder_parameters:
        p.requires_grad_(True)
    vae.train()
    optimizer = torch.optim.AdamW(decoder_parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, seconds = 0, 0.0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, seconds = state["step"], state["seconds"]

    def save() -> None:
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save({"settings": settings, "step": step, "seconds": seconds, "model": vae.state_dict(),
                            "optimizer": optimizer.state_dict(), "generator": generator.get_state()}, checkpoint_path)

    def out_of_time() -> bool:
        return max_seconds is not None and seconds >= max_seconds

    while step < steps and not out_of_time():
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, step, steps, schedule_progress(step, steps, seconds, max_seconds))
        index = torch.randint(len(pool), (batch_size,), generator=generator)
        mean, logvar = moments[index.to(device)].chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=generator).to(device)
        extra = torch.randn(mean.shape, generator=generator).to(device)
        z = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise + latent_noise / scale * extra
        target = to_pixels(pool[index]).to(device)
        recon = vae.decode(z).sample
        loss = reconstruction_loss(recon, target, edge_weight)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder_parameters, 1.0)
        optimizer.step()
        step += 1
        seconds += time.perf_counter() - started
        if callback is not None and (step % log_every == 0 or step == steps):
            callback({"step": step, "loss": loss.item(), "batch_psnr": float(psnr_from_mse(pixel_mse(recon, target)).mean()),
                      "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]})
        if step % checkpoint_every == 0 or step == steps or out_of_time():
            save()
    vae.eval().to("cpu")
    save_vae(vae, model_dir / "vae")
    held_out = images_to_pixels(images(random.Random(f"vae-eval-{seed}"), EVAL_IMAGES))
    record = {"steps": step, "seconds": round(seconds, 1), "psnr": round(reconstruction_psnr(vae, held_out), 2),
              "shift_factor": shift, "scaling_factor": scale, "settings": settings}
    _atomic_write_json(record, record_path)
    return record


# ----------------------------------------------------------------------------------------------
# The mini world's images and the command line


def world_images(rng: random.Random, n: int) -> list[Image.Image]:
    """Every input and output image of random samples across all task families of the mini world."""
    from omnigen.mini.tasks import FAMILIES, make_sample

    found: list[Image.Image] = []
    while len(found) < n:
        sample = make_sample(rng.choice(list(FAMILIES)), rng)
        found.extend([*sample.input_images, sample.output_image])
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the mini world's VAE (64x64, factor 8).")
    parser.add_argument("--out", required=True, help="output folder; the VAE lands in OUT/vae")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--finetune-decoder", action="store_true",
                        help="only train the decoder of OUT/vae for --steps steps (the latent space stays fixed)")
    parser.add_argument("--latent-channels", type=int, default=8)
    parser.add_argument("--widths", type=lambda s: [int(w) for w in s.split(",")], default=list(DEFAULT_WIDTHS),
                        help="four comma-separated block widths, e.g. 16,32,64,64")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--pool-size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 can be faster on a CPU shared with other jobs")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT/checkpoints has a checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: a CUDA GPU when there is one, else the CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def report(logs: dict) -> None:
        print(f"step {logs['step']:6d}  {logs['seconds']:8.1f}s  lr {logs['lr']:.2e}  loss {logs['loss']:.4f}  "
              f"batch PSNR {logs['batch_psnr']:.2f} dB", flush=True)

    if args.finetune_decoder:
        metrics = finetune_decoder(args.out, decoder_images, args.steps, batch_size=args.batch_size,
                                   seed=args.seed, pool_size=min(args.pool_size, 8000), max_seconds=args.max_seconds,
                                   device=args.device,
                                   callback=lambda logs: print(f"decoder step {logs['step']:6d}  {logs['seconds']:8.1f}s  "
                                                               f"loss {logs['loss']:.4f}  batch PSNR "
                                                               f"{logs['batch_psnr']:.2f} dB", flush=True))
        print(json.dumps(metrics, indent=2))
        return
    metrics = train_vae(world_images, args.out, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        resume=not args.no_resume, callback=report, max_seconds=args.max_seconds,
                        latent_channels=args.latent_channels, widths=args.widths, pool_size=args.pool_size,
                        device=args.device)
    metrics.pop("history")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
