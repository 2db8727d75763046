"""Sample images during training: the same validation prompts with the same seeds every time, so the
pictures of successive steps show what the run has learned. Sampling goes through OmniGenPipeline, the
path every generated image takes; it draws from its own seeded generators, never the global RNG, so a
run with samples trains exactly as a run without them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..png import save_png
from ..processor import OmniGenProcessor


def sample_path(folder: Path, step: int, index: int) -> Path:
    return folder / f"step-{step:06d}-{index}.png"


def write_samples(model: nn.Module, vae, processor: OmniGenProcessor, prompts: list[str], folder: Path, step: int,
                  size: int, num_inference_steps: int, guidance_scale: float, seed: int, save: bool = True,
                  ) -> list[Path]:
    """Generate one image per prompt (prompt k with seed `seed + k`) and write folder/step-XXXXXX-k.png. A model
    sharded across processes computes on all of them; only the one with `save` writes (each returns the paths)."""
    from ..pipeline import OmniGenPipeline

    base = next(p for n, p in model.named_parameters() if ".lora_" not in n)
    pipe = OmniGenPipeline(model, vae, processor, base.device, base.dtype, model_id="training")
    was_training = model.training
    model.eval()  # no LoRA dropout while sampling
    try:
        with torch.no_grad():
            out = pipe(list(prompts), height=size, width=size, num_inference_steps=num_inference_steps,
                       guidance_scale=guidance_scale, seed=seed, progress=False)
    finally:
        model.train(was_training)
    paths = [sample_path(folder, step, k) for k in range(len(out.images))]
    if save:
        for path, image, settings in zip(paths, out.images, out.settings):
            save_png(image, path, {**settings, "training_step": step})
    return paths
