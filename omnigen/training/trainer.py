"""The training loop: rectified-flow fine-tuning of an OmniGen transformer with a frozen VAE.

One script runs on a CPU, one GPU, or several under `accelerate launch`: the model and optimizer go
through `accelerator.prepare` (DDP), or under an FSDP launch the model is sharded by sharding.py; backward
and clipping go through the accelerator; every process takes part in a checkpoint, and only the main
process writes the run's files. Every random choice (data order, condition dropout, t, noise) is drawn from a
generator seeded by (seed, micro-batch number, purpose), so a resumed run replays exactly what an
uninterrupted run would have done, on any number of processes.

Layout of `out_dir`:
    train_config.json                the TrainConfig of the run
    loss.csv                         step, loss, lr, elapsed_s; one row per logged step, flushed as it goes
    checkpoints/step-000500/         a model folder (config.json, model.safetensors, tokenizer files, vae/) or,
                                     in a LoRA run, adapter_config.json + adapter_model.safetensors;
                                     optimizer.pt (FSDP SHARDED_STATE_DICT: optimizer_<rank>.pt), scheduler.pt,
                                     rng_state_<rank>.pt, trainer_state.json (written last)
    adapter/                         LoRA runs: the adapter of the latest checkpoint (each file replaced
                                     atomically), loadable with `pipe.load_lora(out_dir / "adapter")`
    samples/step-000500-0.png        images of config.validation_prompts (fixed seeds) every sample_every steps
    latent-cache/stage-64.pt         with encode_latents_once: the stage's latents and the fingerprint of the VAE
                                     and data they belong to, so a resumed run does not encode them again

Here is the run itself (`train` and its `_Run`); each concern it calls on lives in the module named after it:
    config.py       TrainConfig, LoraSettings, TrainResult, resolution stages
    trainable.py    what is trained (every weight or a LoRA adapter) and how those weights are saved and loaded
    optimizer.py    AdamW and the learning-rate schedule (the curve itself: schedule.py)
    seeds.py        the derived seeds behind every random choice
    data_order.py   which examples each micro-batch holds, for finite and streamed data
    latents.py      VAE latents of the images, and the latent cache
    step.py         one optimizer step: latents, noise, velocity, loss, update (the objective: loss.py)
    checkpoints.py  writing, listing, pruning and resuming checkpoints; RNG states
    sharding.py     FSDP: the launch's options, sharding the model, gathering it for checkpoints
    loss_log.py     out_dir/loss.csv
lora_training.py trains a LoRA on a loaded pipeline and gives the pipeline back as it was.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..processor import PATCH_PIXELS, OmniGenProcessor
from .checkpoints import (ADAPTER, check_out_dir, check_resumable, copy_adapter, load_rng_state,
                          load_training_state, run_record, save_checkpoint)
from .collator import TrainingCollator
from .config import DEFAULT_UNCONDITIONAL_PROMPT, TrainConfig, TrainResult, resolution_at
from .data_order import BatchPlan, make_batches
from .dataset import TrainingData, is_finite_dataset
from .latents import LATENT_CACHE, LatentCache
from .loss_log import LossLog
from .optimizer import build_optimizer, build_scheduler
from .samples import write_samples
from .sharding import FsdpPlan, shard_model
from .step import optimizer_step
from .trainable import load_model_weights, prepare_model, trainable_parameters


def make_accelerator(config: TrainConfig, plan: FsdpPlan | None = None):
    """An Accelerator for this run. In a single process, a fresh one per call (a studio trains many times).
    Under FSDP the trainer shards the model itself (sharding.py): accelerate joins the processes as for DDP
    and is kept from wrapping the model."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        # accelerate keeps its settings in process-wide singletons; a second run with another precision or
        # accumulation would be refused or silently get the first run's settings.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on this machine")
    # Several processes on a machine without a GPU (`accelerate launch --multi_gpu` or torchrun there): accelerate
    # sets up gloo on the CPU only when asked to; otherwise every process would train alone, as process 0.
    cpu = world > 1 and not _has_accelerator()
    fsdp_flag = os.environ.pop("ACCELERATE_USE_FSDP", None) if plan is not None else None
    try:
        # Batches without input images leave input_x_embedder unused: DDP must not wait for its gradients.
        accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision,
                                  gradient_accumulation_steps=config.grad_accumulation,
                                  step_scheduler_with_optimizer=False,
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    finally:
        if fsdp_flag is not None:
            os.environ["ACCELERATE_USE_FSDP"] = fsdp_flag
    if accelerator.num_processes != world:
        raise RuntimeError(f"launched as {world} processes, but accelerate joined {accelerator.num_processes}; "
                           "check the launcher's settings (docs/training.md)")
    return accelerator


def fsdp_plan_of_launch(config: TrainConfig) -> FsdpPlan | None:
    """The checked FSDP plan of this launch (None: no FSDP), before anything is loaded."""
    plan = FsdpPlan.from_env()
    if plan is not None:
        plan.check()
        if config.mixed_precision == "fp16":
            raise ValueError("mixed_precision fp16 is not supported under FSDP (its loss scaling is not made for "
                             "sharded gradients here): use bf16")
        if not config.gradient_checkpointing and plan.activation_checkpointing:
            config.gradient_checkpointing = True  # fsdp_activation_checkpointing: the model's own switch
    return plan


def _has_accelerator() -> bool:
    """A GPU (or another device torch computes on) is there for each process."""
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def stop_requested(accelerator, stop: threading.Event | None) -> bool:
    """True on every process once the main process's stop event is set."""
    if stop is not None and stop.is_set():
        accelerator.set_trigger()
    return accelerator.check_trigger()


def train(model: nn.Module, vae, processor: OmniGenProcessor, data: TrainingData, config: TrainConfig,
          callback: Callable[[dict], None] | None = None, stop: threading.Event | None = None,
          resume: bool | None = None) -> TrainResult:
    """Train `model` (in place) on `data`: a JsonlDataset, a list of Examples, or an iterable of Examples.

    `callback(event)` gets {"type": "step", step, loss, lr, eta_s, elapsed_s} every log_every steps,
    {"type": "checkpoint", step, path, adapter} (adapter: out_dir/adapter in a LoRA run, else None),
    {"type": "samples", step, paths, prompts}, {"type": "latents", size, count, seconds, loaded_from} when
    encode_latents_once has encoded (or read back) a stage, and finally {"type": "done", step, stopped,
    checkpoint, adapter}.
    Setting `stop` ends the run after the current step with a checkpoint. `resume` (default config.resume)
    continues from the latest checkpoint in config.out_dir. With `config.lora` only a new LoRA adapter
    learns; it stays attached to `model` afterwards (`train_lora` takes it off a pipeline again).
    """
    config.check()
    resume = config.resume if resume is None else resume
    if hasattr(data, "validate") and not getattr(data, "validated", False):
        data.validate()  # every bad line is reported before anything is written or loaded
    if config.encode_latents_once and not is_finite_dataset(data):
        raise ValueError("encode_latents_once needs a finite dataset (a list or JsonlDataset) to encode up front; "
                         "set it to False for a generator of examples")
    plan = fsdp_plan_of_launch(config)
    set_accumulation(config, int(os.environ.get("WORLD_SIZE", "1")))
    out_dir = Path(config.out_dir)
    checkpoint = check_out_dir(out_dir, resume)
    if checkpoint is not None:
        check_resumable(checkpoint, config, model, plan, int(os.environ.get("WORLD_SIZE", "1")))
    accelerator = make_accelerator(config, plan)
    run = _Run(accelerator, model, vae, processor, data, config, callback, stop, plan, checkpoint)
    try:
        return run.execute(checkpoint)
    except torch.cuda.OutOfMemoryError as error:
        raise RuntimeError(f"out of GPU memory while training ({error}). Lower batch_size or the resolution "
                           "stage's max_image_size, set gradient_checkpointing=True or mixed_precision='bf16', "
                           "or train a LoRA instead of the full model") from None
    finally:
        run.close()


def set_accumulation(config: TrainConfig, num_processes: int) -> None:
    """With config.global_batch_size, the micro-batches each process accumulates per optimizer step; a global
    batch the processes cannot share evenly is refused before anything is loaded."""
    if config.global_batch_size is None:
        return
    per_step = config.batch_size * num_processes
    if config.global_batch_size % per_step:
        raise ValueError(f"global_batch_size {config.global_batch_size} cannot be shared by {num_processes} "
                         f"process(es) of batch_size {config.batch_size}: it must be a multiple of {per_step}; "
                         "change the global batch, the batch size or the number of processes")
    config.grad_accumulation = config.global_batch_size // per_step


class _Run:
    """One train() call: the prepared objects, the step counter and the reporting."""

    def __init__(self, accelerator, model: nn.Module, vae, processor: OmniGenProcessor, data: Any,
                 config: TrainConfig, callback: Callable[[dict], None] | None, stop: threading.Event | None,
                 plan: FsdpPlan | None = None, checkpoint: Path | None = None):
        self.accelerator, self.data, self.config, self.callback, self.stop = accelerator, data, config, callback, stop
        self.plan, self.out_dir = plan, Path(config.out_dir)
        self.stages = config.stages(processor.max_input_image_size)
        self.collator = TrainingCollator(processor, config.condition_dropout, config.image_condition_dropout,
                                         config.unconditional_prompt or DEFAULT_UNCONDITIONAL_PROMPT)
        self.cache = (LatentCache(self.out_dir / LATENT_CACHE, write=accelerator.is_main_process)
                      if config.encode_latents_once else None)
        self.vae = vae.requires_grad_(False).eval().to(accelerator.device)
        self.record = run_record(model, plan, accelerator.num_processes)
        model = prepare_model(model, config)
        # A resumed run's weights go in before sharding: under FSDP the main process's are broadcast to all.
        if checkpoint is not None and (plan is None or accelerator.is_main_process or not plan.sync_module_states):
            load_model_weights(model, checkpoint, config)
        if plan is not None:
            model = shard_model(model, plan, accelerator.device)
        self.parameters = trainable_parameters(model)
        optimizer = build_optimizer(self.parameters, config)
        self.scheduler = build_scheduler(optimizer, config)
        if plan is None:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
        else:
            self.model, self.optimizer = model, accelerator.prepare(optimizer)
        self.processor = processor
        self.step, self.elapsed_before, self.saved_step, self.sampled_step = 0, 0.0, None, None
        self.last_checkpoint: Path | None = None
        self.adapter: Path | None = None
        self.samples: list[Path] = []
        self.losses: list[tuple[int, float]] = []
        self.log: LossLog | None = None
        self.batches = None

    def execute(self, checkpoint: Path | None) -> TrainResult:
        if checkpoint is not None:
            state = load_training_state(checkpoint, self.accelerator, self.model, self.optimizer, self.scheduler,
                                        self.plan)
            self.step, self.elapsed_before = int(state["step"]), float(state["elapsed_s"])
            self.saved_step, self.last_checkpoint = self.step, checkpoint
            if self.config.lora is not None and (self.out_dir / ADAPTER).is_dir():
                self.adapter = self.out_dir / ADAPTER
        self.start_files(resumed=checkpoint is not None)
        plan = BatchPlan(self.config.batch_size, self.config.grad_accumulation, self.accelerator.num_processes,
                         self.accelerator.process_index, self.config.seed, self.stages)
        self.batches = make_batches(self.data, self.collator, plan, self.step, self.config)
        if checkpoint is not None:
            load_rng_state(checkpoint, self.accelerator.process_index)
        self.started, self.start_step = time.monotonic(), self.step
        stopped = self.loop()
        if self.saved_step != self.step:
            self.save()
        if not stopped and self.config.validation_prompts and self.sampled_step != self.step:
            self.sample()
        self.emit({"type": "done", "step": self.step, "stopped": stopped,
                   "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                   "adapter": str(self.adapter) if self.adapter else None})
        last_loss = self.losses[-1][1] if self.losses else None
        return TrainResult(self.step, last_loss, stopped, self.last_checkpoint, self.out_dir, self.losses,
                           self.adapter, self.samples)

    def loop(self) -> bool:
        """Run optimizer steps until config.steps; True when the stop event ended the run early."""
        window: list[torch.Tensor] = []
        while self.step < self.config.steps:
            if stop_requested(self.accelerator, self.stop):
                return True
            size = resolution_at(self.stages, self.step)
            if self.cache is not None and self.cache.stage_size != size:
                began = time.monotonic()
                self.cache.start_stage(self.vae, self.data, size)
                self.emit({"type": "latents", "size": size, "count": len(self.cache.latents),
                           "seconds": time.monotonic() - began,
                           "loaded_from": str(self.cache.loaded_from) if self.cache.loaded_from else None})
            lr = self.scheduler.get_last_lr()[0]
            window.append(optimizer_step(self.accelerator, self.model, self.vae, self.optimizer, self.parameters,
                                         self.batches, self.config, self.cache, size))
            self.scheduler.step()
            self.step += 1
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                self.report(window, lr)
                window = []
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save()
            if (self.config.validation_prompts and self.config.sample_every
                    and self.step % self.config.sample_every == 0):
                self.sample()
        return False

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def report(self, window: list[torch.Tensor], lr: float) -> None:
        loss = self.accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {self.step}; lower learning_rate, or use "
                                     "mixed_precision='bf16' instead of 'fp16'")
        done = self.step - self.start_step
        eta = (time.monotonic() - self.started) / done * (self.config.steps - self.step)
        self.losses.append((self.step, loss))
        self.log.write(self.step, loss, lr, self.elapsed())
        self.emit({"type": "step", "step": self.step, "loss": loss, "lr": lr, "eta_s": eta,
                   "elapsed_s": self.elapsed()})

    def save(self) -> None:
        state = {"step": self.step, "elapsed_s": self.elapsed(),
                 "loss": self.losses[-1][1] if self.losses else None, "config": asdict(self.config), **self.record}
        parts = (self.vae, self.processor) if self.config.lora is None else None
        path = save_checkpoint(self.accelerator, self.model, self.optimizer, self.scheduler, state, self.out_dir,
                               self.config, self.plan, parts)
        if self.config.lora is not None:
            self.publish_adapter(path)
        self.saved_step, self.last_checkpoint = self.step, path
        self.emit({"type": "checkpoint", "step": self.step, "path": str(path),
                   "adapter": str(self.adapter) if self.adapter else None})

    def publish_adapter(self, checkpoint: Path) -> None:
        """out_dir/adapter takes the checkpoint's adapter files: a new folder appears whole, and in an existing
        one each file is replaced atomically (its adapter_config.json does not change within a run)."""
        if self.accelerator.is_main_process:
            copy_adapter(checkpoint, self.out_dir / ADAPTER)
        self.accelerator.wait_for_everyone()
        self.adapter = self.out_dir / ADAPTER

    def sample(self) -> None:
        """Images of the validation prompts at this step (main process only), at the current resolution (at most
        the model's native size)."""
        prompts = list(self.config.validation_prompts)
        main = self.accelerator.is_main_process
        if main or self.plan is not None:  # a sharded model computes on every process; the main one writes
            model = self.accelerator.unwrap_model(self.model)
            size = min(resolution_at(self.stages, max(self.step - 1, 0)), model.config.native_image_size)
            size = max(PATCH_PIXELS, size // PATCH_PIXELS * PATCH_PIXELS)
            self.samples = write_samples(model, self.vae, self.processor, prompts,
                                         self.out_dir / "samples", self.step, size, self.config.sample_steps,
                                         self.config.sample_guidance_scale, self.config.sample_seed, save=main)
        self.accelerator.wait_for_everyone()
        self.sampled_step = self.step
        self.emit({"type": "samples", "step": self.step, "paths": [str(p) for p in self.samples],
                   "prompts": prompts})

    def start_files(self, resumed: bool) -> None:
        main = self.accelerator.is_main_process
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "train_config.json").write_text(json.dumps(asdict(self.config), indent=2), encoding="utf-8")
        self.log = LossLog(self.out_dir / "loss.csv", self.step if resumed else None, enabled=main)

    def emit(self, event: dict) -> None:
        if self.callback is not None and self.accelerator.is_main_process:
            self.callback(event)

    def close(self) -> None:
        """Close the log, end data workers, and give the model back ready for inference."""
        if self.log is not None:
            self.log.close()
        self.batches = None
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        if hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing(False)
        model.eval().requires_grad_(False)
        self.accelerator.free_memory()
