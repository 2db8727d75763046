"""Rectified-flow sampling: schedule, guidance, Euler steps and the condition KV cache.

Time runs from 0 (noise) to 1 (data); the model predicts v = x1 - x0 and a step is x += (t_next - t) * v.
A batch of branches is laid out [cond x n][uncond x n][image-only x n] for n images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .layers import KVCache


class GenerationCancelled(RuntimeError):
    """Raised when a step callback asks to stop the run."""


class NonFiniteLatents(RuntimeError):
    """Raised when the latents stop being finite numbers (an unstable dtype, mostly)."""


# callback(step, total, latents, estimate): after each step, the latents and the estimate of the final
# latents they are heading for (x + (1 - t) * v, what a live preview decodes); returning False cancels.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], object]


def get_schedule(num_steps: int, shift: float = 1.0) -> list[float]:
    """num_steps + 1 times from 0 to 1, warped by t' = t / (t + s - s*t) (s = 1: uniform)."""
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_steps}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    return (t / (t + shift - shift * t)).tolist()


def combine_guidance(v: torch.Tensor, branches: int, guidance_scale: float, img_guidance_scale: float,
                     ) -> torch.Tensor:
    """Two branches: v_u + s*(v_c - v_u); three: v_u + s_img*(v_img - v_u) + s*(v_c - v_img)."""
    if branches == 1:
        return v
    chunks = v.chunk(branches)
    if branches == 2:
        cond, uncond = chunks
        return uncond + guidance_scale * (cond - uncond)
    cond, uncond, image = chunks
    return uncond + img_guidance_scale * (image - uncond) + guidance_scale * (cond - image)


@dataclass
class ConditionBatch:
    """One forward's worth of condition: collated prompts (see processor.collate) and input-image latents."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    input_image_sizes: dict
    input_img_latents: list[torch.Tensor]
    rows: int

    def model_kwargs(self) -> dict:
        return dict(input_ids=self.input_ids, input_img_latents=self.input_img_latents,
                    input_image_sizes=self.input_image_sizes, attention_mask=self.attention_mask,
                    position_ids=self.position_ids)


    def row(self, r: int) -> dict:
        """Model inputs of row r alone, its padding kept, so its cache lines up with the batch's."""
        spans = self.input_image_sizes or {}
        first = sum(len(spans.get(b, [])) for b in range(r))
        own = spans.get(r, [])
        return dict(input_ids=self.input_ids[r:r + 1], attention_mask=self.attention_mask[r:r + 1],
                    position_ids=self.position_ids[r:r + 1], input_image_sizes={0: own} if own else {},
                    input_img_latents=self.input_img_latents[first:first + len(own)])


def prefill(model, x: torch.Tensor, timestep: torch.Tensor, batch: ConditionBatch) -> tuple[torch.Tensor, KVCache]:
    """The first cached step, one row at a time: the same numbers as a batched forward, but the long
    condition's activations exist for one row at once, and each row's keys/values go straight into the
    batch's cache, so the cache never exists twice."""
    outputs, merged = [], None
    for r in range(batch.rows):
        out, cache = model(x[r:r + 1], timestep[r:r + 1], **batch.row(r), use_cache=True)
        if merged is None:
            merged = [(k.new_empty((batch.rows, *k.shape[1:])), v.new_empty((batch.rows, *v.shape[1:])))
                      for k, v in cache]
        for (keys, values), (k, v) in zip(merged, cache):
            keys[r:r + 1].copy_(k)
            values[r:r + 1].copy_(v)
        outputs.append(out)
        del cache
    return torch.cat(outputs), merged


def velocity(model, x: torch.Tensor, t: float, batches: list[ConditionBatch], caches: list[KVCache | None],
             use_kv_cache: bool, offload_cache: bool) -> torch.Tensor:
    """The model's velocity for every branch row; each batch is one forward (batched or separate CFG)."""
    outputs, start = [], 0
    for i, batch in enumerate(batches):
        rows = x[start:start + batch.rows]
        start += batch.rows
        timestep = torch.full((batch.rows,), t, device=x.device, dtype=torch.float32)
        if caches[i] is not None:
            out, _ = model(rows, timestep, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, past_key_values=caches[i])
        elif use_kv_cache:
            out, cache = prefill(model, rows, timestep, batch)
            if offload_cache:
                cache = [(k.to("cpu", non_blocking=True), v.to("cpu", non_blocking=True)) for k, v in cache]
            caches[i] = cache
        else:
            out, _ = model(rows, timestep, **batch.model_kwargs())
        outputs.append(out)
    return torch.cat(outputs)


def denoise(model, latents: torch.Tensor, batches: list[ConditionBatch], timesteps: list[float], branches: int,
            guidance_scale: float, img_guidance_scale: float, use_kv_cache: bool = True,
            offload_cache: bool = False, callback: StepCallback | None = None, progress=None) -> torch.Tensor:
    """Euler integration of the guided velocity from timesteps[0] to timesteps[-1]."""
    caches: list[KVCache | None] = [None] * len(batches)
    total = len(timesteps) - 1
    for step, (t, t_next) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        x = latents.repeat(branches, 1, 1, 1).to(model.dtype)
        v = velocity(model, x, t, batches, caches, use_kv_cache, offload_cache).float()
        guided = combine_guidance(v, branches, guidance_scale, img_guidance_scale)
        latents = latents + (t_next - t) * guided
        if not torch.isfinite(latents).all():
            raise NonFiniteLatents(
                f"the latents stopped being finite at step {step + 1}/{total}: the model's numbers overflowed. "
                "Use dtype='float32' or 'bfloat16' instead of 'float16', or lower guidance_scale.")
        if progress is not None:
            progress.update(1)
        if callback is not None and callback(step + 1, total, latents, latents + (1.0 - t_next) * guided) is False:
            raise GenerationCancelled(f"generation cancelled after step {step + 1} of {total}")
    return latents
