"""One optimizer step: encode the images, noise the output latents, predict the velocity, score it against the
rectified-flow target (the objective itself is in loss.py), accumulate gradients and update.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..processor import PATCH_PIXELS
from .collator import TrainingBatch
from .config import TrainConfig
from .latents import LatentCache, batch_latents
from .loss import batch_loss_weights, flow_matching_loss, noisy_latents
from .seeds import NOISE, derived_seed
from .sharding import forget_unused_input_embedder, is_sharded


def predict_velocity(model: nn.Module, batch: TrainingBatch, x_t: torch.Tensor, t: torch.Tensor,
                     input_latents: list[torch.Tensor]) -> torch.Tensor:
    """The model's velocity for the noisy output latents, conditioned on the batch's prompts and input images."""
    inputs, device = batch.model_inputs, x_t.device
    velocity, _ = model(x_t, t, input_ids=inputs["input_ids"].to(device), input_img_latents=input_latents or None,
                        input_image_sizes=inputs["input_image_sizes"],
                        attention_mask=inputs["attention_mask"].to(device),
                        position_ids=inputs["position_ids"].to(device))
    return velocity


def training_loss(model: nn.Module, vae, batch: TrainingBatch, config: TrainConfig, generator: torch.Generator,
                  cache: LatentCache | None, max_image_size: int, device: torch.device) -> torch.Tensor:
    """Encode the images, noise the output latents, predict the velocity and score it."""
    output_latents, input_latents = batch_latents(vae, batch, cache, max_image_size, device)
    patch = getattr(getattr(model, "module", model), "config").patch_size
    tokens = (output_latents.shape[-2] // patch) * (output_latents.shape[-1] // patch)
    reserved = batch.model_inputs["attention_mask"].shape[-1] - batch.model_inputs["condition_length"] - 1
    if tokens != reserved:
        raise ValueError(f"the output latent has {tokens} patches but the prompt reserves {reserved} slots: the VAE's "
                         f"downsampling factor times the patch size must be {PATCH_PIXELS}")
    noisy = noisy_latents(output_latents, generator, config.timestep_location)
    velocity = predict_velocity(model, batch, noisy["x_t"], noisy["t"], input_latents)
    weights = None
    if config.edit_weighting:
        edit_latents = [input_latents[span][0] if span is not None else None for span in batch.edit_inputs]
        weights = batch_loss_weights(output_latents, edit_latents, config.edit_threshold, config.edit_amplification)
    return flow_matching_loss(velocity, noisy["target"], weights)


def optimizer_step(accelerator, model: nn.Module, vae, optimizer, parameters: list[nn.Parameter],
                   batches: Iterator[tuple[int, TrainingBatch]], config: TrainConfig, cache: LatentCache | None,
                   max_image_size: int) -> torch.Tensor:
    """grad_accumulation micro-batches, then one optimizer update; returns the mean micro-batch loss."""
    losses, used_input_images = [], False
    for _ in range(config.grad_accumulation):
        g, batch = next(batches)
        generator = torch.Generator().manual_seed(derived_seed(config.seed, g, NOISE))
        with accelerator.accumulate(model):
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP: reduce-scatter only on the last micro-batch
                model.set_requires_gradient_sync(accelerator.sync_gradients)
            with accelerator.autocast():  # a model accelerate did not wrap (FSDP) computes in the run's precision
                loss = training_loss(model, vae, batch, config, generator, cache, max_image_size,
                                     accelerator.device)
            accelerator.backward(loss)
            used_input_images = used_input_images or bool(batch.input_images)
            if accelerator.sync_gradients and is_sharded(model):
                forget_unused_input_embedder(model, used_input_images)
            if accelerator.sync_gradients and config.max_grad_norm > 0:  # 0: no clipping
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses).mean()
