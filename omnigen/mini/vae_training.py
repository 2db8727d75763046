"""Training the mini VAE (`train_vae`, from scratch) and fine-tuning its decoder (`finetune_decoder`).

Both loops draw their batches from a pool of rendered pictures, follow the library's one learning-rate curve
(`omnigen.training.schedule.warmup_cosine`: a short warm-up, a plateau, a cosine tail over the last half),
and checkpoint model, optimiser and random state so that a rerun continues as if never stopped. Every file
they write is written atomically (`omnigen.files`). The model, its pictures and its measures are in
autoencoder.py.

    python -m omnigen.mini.vae_training --out DIR --steps N [--latent-channels 8] [--max-seconds S]

Training checkpoints into DIR/checkpoints; rerunning the same command continues from the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from omnigen import vae as vae_io
from omnigen.files import atomic_folder, atomic_save, atomic_write_text
from omnigen.mini.autoencoder import (DEFAULT_WIDTHS, ImageSource, build_vae, decoder_images, draw_batch,
                                      images_to_pixels, latent_statistics, pixel_mse, psnr_from_mse,
                                      reconstruction_psnr, render_pool, start_nearly_deterministic, to_pixels,
                                      vae_config, world_images)
from omnigen.training.schedule import warmup_cosine

CHECKPOINT_FILE = "latest.pt"
DECODER_CHECKPOINT_FILE = "decoder-latest.pt"
DECODER_RECORD = "decoder_training.json"
EVAL_IMAGES = 256  # held-out images for the final PSNR
STATISTICS_IMAGES = 2048  # images whose latents fix shift_factor and scaling_factor
WARMUP_FRACTION = 0.05
MAX_WARMUP_STEPS = 50
COSINE_TAIL_FRACTION = 0.5  # the learning rate stays at its peak, then falls along a cosine for this last part
FINAL_LR_FRACTION = 0.02


def training_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the one asked for, else a CUDA GPU when there is one (as accelerate picks for
    the transformer), else the CPU. Weights are initialised and random numbers drawn on the CPU either way, so
    the device changes only the arithmetic, not which images, indices or noise a step sees."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_run_sizes(steps: int, batch_size: int, pool_size: int) -> None:
    if steps < 1 or batch_size < 1 or pool_size < batch_size:
        raise ValueError(f"steps={steps}, batch_size={batch_size}, pool_size={pool_size}: need steps >= 1 and "
                         "pool_size >= batch_size >= 1")


# ----------------------------------------------------------------------------------------------
# Loss and schedule


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
    return warmup_cosine(step, warmup, progress, peak=base_lr, hold=1.0 - COSINE_TAIL_FRACTION,
                         floor=FINAL_LR_FRACTION)


def schedule_progress(step: int, steps: int, seconds: float, max_seconds: float | None) -> float:
    """How far along the schedule a run is (0..1): by steps, or by time when a time limit is nearer its end."""
    return step / steps if max_seconds is None else max(step / steps, seconds / max_seconds)


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, step: int, steps: int, seconds: float,
                      max_seconds: float | None) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(base_lr, step, steps, schedule_progress(step, steps, seconds, max_seconds))


def out_of_time(seconds: float, max_seconds: float | None) -> bool:
    return max_seconds is not None and seconds >= max_seconds


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


def save_vae(vae, folder: Path) -> None:
    """save_pretrained into `folder` without ever leaving a half-written folder there."""
    with atomic_folder(folder) as scratch:
        vae.save_pretrained(scratch, safe_serialization=True)


def write_record(record: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The random state of a CUDA device (the VAE's posterior samples are drawn there), None on the CPU."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def restore_device_rng(state: torch.Tensor | None, device: torch.device) -> None:
    """Put back a CUDA device's random state saved by `device_rng_state` (a checkpoint written on another kind
    of device resumes with that device's current state: the same training, other noise)."""
    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


def save_checkpoint(path: Path, config: dict, seed: int, progress: dict, vae, optimizer,
                    batch_rng: torch.Generator) -> None:
    """Model, optimiser, RNG states and `progress` (step, seconds, history), written atomically."""
    device = next(vae.parameters()).device
    state = {"config": config, "seed": seed, **progress,
             "model": vae.state_dict(), "optimizer": optimizer.state_dict(),
             "batch_rng": batch_rng.get_state(), "torch_rng": torch.get_rng_state(),
             "device_rng": device_rng_state(device)}
    atomic_save(path, lambda temporary: torch.save(state, temporary))


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


# ----------------------------------------------------------------------------------------------
# Training from scratch


def vae_pool(images: ImageSource, seed: int, index: int, pool_size: int, sample_size: int) -> torch.Tensor:
    """Pool number `index` of a run: a function of (seed, index) alone, so a resumed run draws from the same images."""
    return render_pool(images, random.Random(f"vae-pool-{seed}-{index}"), pool_size, sample_size)


def new_vae(config: dict, seed: int, device: torch.device):
    """A freshly initialised VAE (weights drawn on the CPU from `seed`), in training mode on `device`."""
    torch.manual_seed(seed)
    vae = build_vae(config).train()
    start_nearly_deterministic(vae)
    return vae.to(device)


def train_vae(images: ImageSource, out_dir: str | os.PathLike, steps: int, batch_size: int = 32, lr: float = 1e-3,
              seed: int = 0, kl_weight: float = 1e-6, checkpoint_every: int = 200, log_every: int = 50,
              resume: bool = True, callback: Callable[[dict], None] | None = None, max_seconds: float | None = None,
              *, latent_channels: int = 8, widths: Sequence[int] = DEFAULT_WIDTHS, sample_size: int = 64,
              edge_weight: float = 1.0, pool_size: int = 20000, refresh_every: int | None = None,
              device: str | torch.device | None = None) -> dict:
    """Train the mini VAE on `images(rng, n)` and save it to out_dir/vae (readable by `omnigen.vae.load_vae`).

    Stops after `steps` optimiser steps or `max_seconds` of optimisation (pool rendering and the final
    statistics not counted), whichever comes first; with `max_seconds` the cosine tail follows whichever
    of the two is nearer its end. `callback(logs)` receives a dict every `log_every` steps. Training runs on
    `device` (see `training_device`); the final statistics and the saved folder are the CPU's. Returns
    {"psnr": held-out dB, "steps": steps done, "seconds": optimisation seconds, ...}.
    """
    check_run_sizes(steps, batch_size, pool_size)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoints" / CHECKPOINT_FILE
    config = vae_config(latent_channels, widths, sample_size)
    device = training_device(device)
    vae = new_vae(config, seed, device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    batch_rng = torch.Generator().manual_seed(seed)
    step, seconds, history = 0, 0.0, []
    if resume and checkpoint_path.is_file():
        restored = load_checkpoint(checkpoint_path, config, seed, vae, optimizer, batch_rng)
        step, seconds, history = restored["step"], restored["seconds"], restored["history"]
    render_start = time.perf_counter()
    pool_index = step // refresh_every if refresh_every else 0
    pool = vae_pool(images, seed, pool_index, pool_size, sample_size)
    render_seconds = time.perf_counter() - render_start

    while step < steps and not out_of_time(seconds, max_seconds):
        if refresh_every and step // refresh_every != pool_index:
            pool_index = step // refresh_every
            pool = vae_pool(images, seed, pool_index, pool_size, sample_size)
        started = time.perf_counter()
        set_learning_rate(optimizer, lr, step, steps, seconds, max_seconds)
        batch = draw_batch(pool, batch_rng, batch_size).to(device)
        recon, losses = training_step(vae, optimizer, batch, kl_weight, edge_weight)
        step += 1
        seconds += time.perf_counter() - started
        if step % log_every == 0 or step == steps or out_of_time(seconds, max_seconds):
            history.append({"step": step, "seconds": round(seconds, 2), "lr": optimizer.param_groups[0]["lr"],
                            **losses, "batch_psnr": float(psnr_from_mse(pixel_mse(recon, batch)).mean())})
            if callback is not None:
                callback(history[-1])
        if step % checkpoint_every == 0 or step >= steps or out_of_time(seconds, max_seconds):
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
    write_record(metrics, out_dir / "vae_training.json")
    return metrics


# ----------------------------------------------------------------------------------------------
# Decoder fine-tuning: the latent space stays fixed, so the transformer's latents stay valid


def finished_decoder_record(record_path: Path, settings: dict, steps: int) -> dict | None:
    """The record of a fine-tuning with these settings that has done at least `steps` steps, if there is one."""
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings and record["steps"] >= steps:
            return record
    return None


def read_decoder_checkpoint(path: Path, settings: dict) -> dict | None:
    """The checkpoint of an unfinished fine-tuning with these settings (None: none); another's is refused."""
    state = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    if state is not None and state["settings"] != settings:
        raise ValueError(f"{path} was written by a decoder fine-tuning with other settings "
                         f"({state['settings']}); delete it to start the fine-tuning over with {settings}")
    return state


def save_decoder_checkpoint(path: Path, settings: dict, step: int, seconds: float, vae, optimizer,
                            generator: torch.Generator) -> None:
    state = {"settings": settings, "step": step, "seconds": seconds, "model": vae.state_dict(),
             "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
    atomic_save(path, lambda temporary: torch.save(state, temporary))


def decoder_parameters_only(vae) -> list[torch.nn.Parameter]:
    """Freeze the encoder side; the decoder (and post_quant_conv) learn. Returns the learning parameters."""
    parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    vae.requires_grad_(False)
    for p in parameters:
        p.requires_grad_(True)
    return parameters


def decoder_step(vae, optimizer, parameters: list[torch.nn.Parameter], pool: torch.Tensor, moments: torch.Tensor,
                 generator: torch.Generator, batch_size: int, latent_noise: float, scale: float, edge_weight: float,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step of the decoder on sampled latents of a batch of the pool; returns (loss, recon, target)."""
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
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    return loss, recon, target


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
    check_run_sizes(steps, batch_size, pool_size)
    model_dir = Path(model_dir)
    checkpoint_path = model_dir / "checkpoints" / DECODER_CHECKPOINT_FILE
    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "pool_size": pool_size,
                "latent_noise": latent_noise, "edge_weight": edge_weight}
    record = finished_decoder_record(model_dir / DECODER_RECORD, settings, steps)
    if record is not None:
        return record
    state = read_decoder_checkpoint(checkpoint_path, settings)  # before the slow part: rendering and encoding
    device = training_device(device)
    vae = vae_io.load_vae(model_dir).to(device)
    shift, scale = vae_io.latent_scale(vae)
    generator = torch.Generator().manual_seed(seed)
    pool = render_pool(images, random.Random(f"decoder-{seed}"), pool_size, vae.config.sample_size)
    with torch.no_grad():
        moments = torch.cat([vae.quant_conv(vae.encoder(to_pixels(chunk).to(device))) for chunk in pool.split(256)])
    parameters = decoder_parameters_only(vae)
    vae.train()
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    step, seconds = 0, 0.0
    if state is not None:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, seconds = state["step"], state["seconds"]

    while step < steps and not out_of_time(seconds, max_seconds):
        started = time.perf_counter()
        set_learning_rate(optimizer, lr, step, steps, seconds, max_seconds)
        loss, recon, target = decoder_step(vae, optimizer, parameters, pool, moments, generator, batch_size,
                                           latent_noise, scale, edge_weight, device)
        step += 1
        seconds += time.perf_counter() - started
        if callback is not None and (step % log_every == 0 or step == steps):
            callback({"step": step, "loss": loss.item(), "batch_psnr": float(psnr_from_mse(pixel_mse(recon, target)).mean()),
                      "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]})
        if step % checkpoint_every == 0 or step == steps or out_of_time(seconds, max_seconds):
            save_decoder_checkpoint(checkpoint_path, settings, step, seconds, vae, optimizer, generator)
    return finish_decoder(vae, images, model_dir, seed, step, seconds, shift, scale, settings)


def finish_decoder(vae, images: ImageSource, model_dir: Path, seed: int, step: int, seconds: float, shift: float,
                   scale: float, settings: dict) -> dict:
    """Save model_dir/vae with the fine-tuned decoder, measure held-out PSNR, write model_dir/decoder_training.json."""
    vae.eval().to("cpu")
    save_vae(vae, model_dir / "vae")
    held_out = images_to_pixels(images(random.Random(f"vae-eval-{seed}"), EVAL_IMAGES))
    record = {"steps": step, "seconds": round(seconds, 1), "psnr": round(reconstruction_psnr(vae, held_out), 2),
              "shift_factor": shift, "scaling_factor": scale, "settings": settings}
    write_record(record, model_dir / DECODER_RECORD)
    return record


# ----------------------------------------------------------------------------------------------
# The command line


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
