"""Rectified-flow sampling: the plan of a request, schedule, guidance, the solver loop, the condition KV cache
and the step cache.

Time runs from 0 (noise) to 1 (data); the model predicts v = x1 - x0 and an Euler step is x += (t_next - t) * v
(the solvers are in solvers.py). A batch of branches is laid out [cond x n][uncond x n][image-only x n] for
n images; where guidance is off (outside [guidance_start, guidance_end]) only the first n rows, the cond ones, run.
Everything that decides how a request is sampled is decided once, in `plan_sampling`, and read from its plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .layers import KVCache
from .settings import SAMPLER_CALLS_PER_STEP, GenerationSettings
from .solvers import Field, get_sampler, spaced_times


class GenerationCancelled(RuntimeError):
    """Raised when a step callback asks to stop the run."""


class NonFiniteLatents(RuntimeError):
    """Raised when the latents stop being finite numbers (an unstable dtype, mostly)."""


# callback(step, total, latents, estimate): after each step, the latents and the estimate of the final
# latents they are heading for (x + (1 - t) * v, what a live preview decodes); returning False cancels.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], object]


def get_schedule(num_steps: int, shift: float = 1.0, spacing: str = "uniform") -> list[float]:
    """num_steps + 1 times from 0 to 1, spaced by `spacing` (see solvers.spaced_times), then warped by
    t' = t / (t + s - s*t) (s = 1: no warp)."""
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_steps}")
    t = spaced_times(num_steps, spacing)
    return (t / (t + shift - shift * t)).tolist()


@dataclass(frozen=True)
class SamplingPlan:
    """How one request is sampled, decided once from its settings: the guidance branches, the solver and its
    times, where guidance runs, and what is cached. `denoise` runs it; the studio's GPU estimate counts it."""

    branches: int  # 1: cond alone; 2: cond, uncond; 3: cond, uncond, image-only
    sampler: str  # a solvers.SAMPLERS name
    timesteps: tuple[float, ...]  # num_steps + 1 times from 0 to 1
    guidance_scale: float
    img_guidance_scale: float
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # guidance runs on steps whose start t lies in it
    use_kv_cache: bool = True
    offload_kv_cache: bool = False  # keep the condition's cache in CPU memory
    cache_threshold: float = 0.0  # the step cache (reuse_velocity); 0: off

    @property
    def num_steps(self) -> int:
        return len(self.timesteps) - 1

    def guided(self, t: float) -> bool:
        """Whether the step starting at t runs every guidance branch (else the cond branch alone)."""
        return self.branches > 1 and self.guidance_interval[0] <= t <= self.guidance_interval[1]

    def branch_rows_per_image(self) -> int:
        """Branch rows the model runs for one image over the whole run, at most (the step cache may skip some):
        model calls per step times the branches each step runs."""
        calls = SAMPLER_CALLS_PER_STEP[self.sampler]
        return sum(calls * (self.branches if self.guided(t) else 1) for t in self.timesteps[:-1])


def guidance_branches(settings: GenerationSettings, has_input_images: bool) -> int:
    """1 (no guidance needed), 2 (text guidance) or 3 (text and image guidance, with input images)."""
    if has_input_images and settings.use_img_guidance and (settings.guidance_scale != 1.0
                                                          or settings.img_guidance_scale != 1.0):
        return 3
    return 1 if settings.guidance_scale == 1.0 else 2


def plan_sampling(settings: GenerationSettings, has_input_images: bool, offload_kv_cache: bool = False,
                  ) -> SamplingPlan:
    """The plan of one request from its settings; `offload_kv_cache`: where the device allows it (CUDA)."""
    return SamplingPlan(
        branches=guidance_branches(settings, has_input_images), sampler=settings.sampler,
        timesteps=tuple(get_schedule(settings.num_inference_steps, settings.time_shift, settings.schedule)),
        guidance_scale=settings.guidance_scale, img_guidance_scale=settings.img_guidance_scale,
        guidance_interval=(settings.guidance_start, settings.guidance_end), use_kv_cache=settings.use_kv_cache,
        offload_kv_cache=offload_kv_cache and settings.offload_kv_cache, cache_threshold=settings.cache_threshold)


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

    def head(self, rows: int) -> "ConditionBatch":
        """The first `rows` rows (the cond branch, where guidance is off), their padding kept."""
        spans = {r: s for r, s in (self.input_image_sizes or {}).items() if r < rows}
        images = sum(len(s) for s in spans.values())
        return ConditionBatch(self.input_ids[:rows], self.attention_mask[:rows], self.position_ids[:rows], spans,
                              self.input_img_latents[:images], rows)


@dataclass
class ConditionCache:
    """The condition's keys/values of one ConditionBatch, allocated for all its rows and filled from the first
    row on as rows first run (the rows that run are always the first ones: cond alone, or all branches)."""

    layers: KVCache
    filled: int = 0


def prefill(model, x: torch.Tensor, timestep: torch.Tensor, batch: ConditionBatch, cache: ConditionCache | None,
            offload: bool = False) -> tuple[torch.Tensor, ConditionCache]:
    """The first cached step of rows cache.filled, cache.filled + 1, ... (as many as x has), one row at a time:
    the same numbers as a batched forward, but the long condition's activations exist for one row at once, and
    each row's keys/values go straight into the batch's cache, so the cache never exists twice."""
    outputs = []
    for j in range(x.shape[0]):
        r = cache.filled if cache is not None else 0
        out, kv = model(x[j:j + 1], timestep[j:j + 1], **batch.row(r), use_cache=True)
        if cache is None:
            device = "cpu" if offload else kv[0][0].device
            cache = ConditionCache([(k.new_empty((batch.rows, *k.shape[1:]), device=device),
                                     v.new_empty((batch.rows, *v.shape[1:]), device=device)) for k, v in kv])
        for (keys, values), (k, v) in zip(cache.layers, kv):
            keys[r:r + 1].copy_(k)
            values[r:r + 1].copy_(v)
        cache.filled += 1
        outputs.append(out)
        del kv
    return torch.cat(outputs), cache


def velocity(model, x: torch.Tensor, t: float, batches: list[ConditionBatch], caches: list[ConditionCache | None],
             use_kv_cache: bool, offload_cache: bool) -> torch.Tensor:
    """The model's velocity for the rows of x: the first len(x) rows of the batches laid end to end (all of
    them, or the cond rows alone). Each batch is one forward (batched or separate CFG); rows already in a
    batch's cache run from it, rows not yet in it fill it."""
    outputs, start = [], 0
    for i, batch in enumerate(batches):
        count = min(batch.rows, x.shape[0] - start)
        if count <= 0:
            break
        rows = x[start:start + count]
        start += count
        timestep = torch.full((count,), t, device=x.device, dtype=torch.float32)
        if not use_kv_cache:
            inputs = batch.model_kwargs() if count == batch.rows else batch.head(count).model_kwargs()
            outputs.append(model(rows, timestep, **inputs)[0])
            continue
        cached = min(count, caches[i].filled) if caches[i] is not None else 0
        if cached:
            past = [(k[:cached], v[:cached]) for k, v in caches[i].layers]
            out, _ = model(rows[:cached], timestep[:cached], attention_mask=batch.attention_mask[:cached],
                           position_ids=batch.position_ids[:cached], past_key_values=past)
            outputs.append(out)
        if count > cached:
            out, caches[i] = prefill(model, rows[cached:], timestep[cached:], batch, caches[i], offload_cache)
            outputs.append(out)
    return torch.cat(outputs)


def reuse_velocity(field: Callable[[torch.Tensor, float, bool], torch.Tensor], threshold: float, last_start: float,
                   stats: dict) -> Callable[[torch.Tensor, float, bool], torch.Tensor]:
    """The step cache: `field`, except that a call returns the last computed velocity again when the relative
    change of the velocity since then is estimated below `threshold`.

    The estimate is the relative L1 change between the last two computed velocities per unit of t, times the
    t elapsed since the last one: rate * |t - t_last|, the change accumulated since the last real call if it
    keeps its pace (TeaCache accumulates the same quantity, MagCache its magnitude version). OmniGen feeds t as
    a token, not as a modulation of every block, so TeaCache's modulated-input indicator does not exist here,
    and measuring the outputs themselves needs no per-model calibration. Real calls are forced while fewer
    than two of the current guidance mode are known, at a t already seen (no interval to scale), and on the
    last step (t >= last_start)."""
    memory: dict = {}

    def cached_field(x: torch.Tensor, t: float, guided: bool) -> torch.Tensor:
        if memory.get("guided") != guided:
            memory.clear()
        last, rate = memory.get("v"), memory.get("rate")
        if (threshold > 0 and rate is not None and t < last_start and t != memory["t"]
                and rate * abs(t - memory["t"]) < threshold):
            stats["skipped"] = stats.get("skipped", 0) + 1
            return last
        v = field(x, t, guided)
        if last is not None and t != memory["t"]:
            change = (v - last).abs().mean() / last.abs().mean().clamp_min(1e-12)
            memory["rate"] = change.item() / abs(t - memory["t"])
        memory.update(v=v, t=t, guided=guided)
        return v

    return cached_field


def denoise(model, latents: torch.Tensor, batches: list[ConditionBatch], plan: SamplingPlan,
            callback: StepCallback | None = None, progress=None, stats: dict | None = None) -> torch.Tensor:
    """Integrate the guided velocity along `plan.timesteps` with `plan.sampler` (see solvers.SAMPLERS).

    Guidance runs on the steps `plan.guided` names; elsewhere only the cond rows run. A cache threshold above 0
    lets the step cache (reuse_velocity) skip model calls. `stats`, when given, counts model calls
    ("evaluations", "rows": branch rows run) and skipped ones ("skipped")."""
    step_with = get_sampler(plan.sampler)
    caches: list[ConditionCache | None] = [None] * len(batches)
    stats = {} if stats is None else stats

    def guided_velocity(x: torch.Tensor, t: float, guided: bool) -> torch.Tensor:
        rows = plan.branches if guided else 1
        v = velocity(model, x.repeat(rows, 1, 1, 1).to(model.dtype), t, batches, caches, plan.use_kv_cache,
                     plan.offload_kv_cache).float()
        stats["evaluations"] = stats.get("evaluations", 0) + 1
        stats["rows"] = stats.get("rows", 0) + v.shape[0]
        return combine_guidance(v, rows, plan.guidance_scale, plan.img_guidance_scale)

    timesteps = plan.timesteps
    field = guided_velocity if plan.cache_threshold <= 0 else reuse_velocity(
        guided_velocity, plan.cache_threshold, timesteps[-2], stats)
    memory: dict = {}
    for step, (t, t_next) in enumerate(zip(timesteps[:-1], timesteps[1:])):
        guided = plan.guided(t)
        step_field: Field = lambda x, time: field(x, time, guided)  # noqa: E731
        latents, v = step_with(step_field, latents, t, t_next, memory)
        if not torch.isfinite(latents).all():
            raise NonFiniteLatents(
                f"the latents stopped being finite at step {step + 1}/{plan.num_steps}: the model's numbers "
                "overflowed. Use dtype='float32' or 'bfloat16' instead of 'float16', or lower guidance_scale.")
        if progress is not None:
            progress.update(1)
        if callback is not None and callback(step + 1, plan.num_steps, latents,
                                             latents + (1.0 - t_next) * v) is False:
            raise GenerationCancelled(f"generation cancelled after step {step + 1} of {plan.num_steps}")
    return latents
