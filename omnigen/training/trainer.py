"""The training loop: rectified-flow fine-tuning of an OmniGen transformer with a frozen VAE.

One script runs on a CPU, one GPU, or several under `accelerate launch`: the model and optimizer go
through `accelerator.prepare`, backward and clipping through the accelerator, and only the main
process writes files. Every random choice (data order, condition dropout, t, noise) is drawn from a
generator seeded by (seed, micro-batch number, purpose), so a resumed run replays exactly what an
uninterrupted run would have done, on any number of processes.

Layout of `out_dir`:
    train_config.json                the TrainConfig of the run
    loss.csv                         step, loss, lr, elapsed_s; one row per logged step, flushed as it goes
    checkpoints/step-000500/         model.safetensors + config.json (a loadable transformer) or, in a LoRA
                                     run, adapter_config.json + adapter_model.safetensors; optimizer.pt,
                                     scheduler.pt, rng_state_<rank>.pt, trainer_state.json (written last)
    adapter/                         LoRA runs: the adapter of the latest checkpoint (each file replaced
                                     atomically), loadable with `pipe.load_lora(out_dir / "adapter")`
    samples/step-000500-0.png        images of config.validation_prompts (fixed seeds) every sample_every steps
    latent-cache/stage-64.pt         with encode_latents_once: the stage's latents and the fingerprint of the VAE
                                     and data they belong to, so a resumed run does not encode them again

What is trained is decided in one place, `prepare_model` / `trainable_parameters` /
`save_model_weights` / `load_model_weights`: every weight, or with `config.lora` only a LoRA adapter on
the decoder's linear layers (base frozen; see lora_training.py for training one on a loaded pipeline).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..processor import DEFAULT_NEGATIVE_PROMPT, PATCH_PIXELS, OmniGenProcessor, image_to_tensor
from ..vae import encode as vae_encode
from ..vae import latent_scale as vae_latent_scale
from ..weights import save_transformer
from .collator import TrainingBatch, TrainingCollator, prepare_images
from .dataset import Example, TrainingData, is_finite_dataset
from .loss import batch_loss_weights, flow_matching_loss, noisy_latents
from .samples import write_samples

CHECKPOINTS = "checkpoints"
# AutoencoderKL weights that only decoding uses: the cached latents do not depend on them.
DECODER_SIDE = ("decoder.", "post_quant_conv.")
LATENT_CACHE = "latent-cache"  # out_dir/latent-cache/stage-<size>.pt: encoded images, reused on resume
ADAPTER = "adapter"  # out_dir/adapter: the latest good LoRA adapter
TRAINER_STATE = "trainer_state.json"
MODEL_WEIGHTS = "model.safetensors"
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
# Purposes of the derived seeds: one independent random stream each.
DATA_ORDER, DROPOUT, NOISE, LORA_INIT = 1, 2, 3, 4


# Which linear layers of the decoder a LoRA adapts, by the names the CLI and the studio offer.
LORA_TARGETS = {"attention": ("qkv_proj", "o_proj"),
                "attention+mlp": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}


@dataclass
class LoraSettings:
    """A LoRA run: an adapter on the decoder's linear layers learns, every base weight stays as it was."""

    rank: int = 8
    alpha: float | None = None  # None: the rank (scale 1), as the official OmniGen fine-tuning script does
    targets: str | list[str] = "attention"  # "attention", "attention+mlp", or a list of linear layer names
    dropout: float = 0.0
    name: str = "new_adapter"  # its name while attached (saved files do not record it)
    base_model: str | None = None  # noted as base_model_name_or_path in adapter_config.json

    @property
    def effective_alpha(self) -> float:
        return self.alpha if self.alpha is not None else self.rank

    def target_modules(self) -> tuple[str, ...]:
        if isinstance(self.targets, str):
            if self.targets not in LORA_TARGETS:
                raise ValueError(f"LoRA targets {self.targets!r} unknown; choose {' or '.join(LORA_TARGETS)}, or "
                                 "give a list of linear layer names such as ['qkv_proj', 'o_proj']")
            return LORA_TARGETS[self.targets]
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"LoRA targets must be names of linear layers, got {self.targets!r}")
        return tuple(self.targets)

    def check(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a whole number of at least 1, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive (or None for the rank), got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules()


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model, VAE, processor and data."""

    out_dir: str
    steps: int = 1000  # optimizer steps
    batch_size: int = 1  # examples per micro-batch and process
    learning_rate: float = 1e-4
    warmup_steps: int = 0  # linear warmup from lr/warmup_steps to lr
    weight_decay: float = 0.0  # AdamW, on matrices only
    lr_schedule: str = "constant"  # "constant" after warmup, or "cosine" down to 0 at `steps`
    grad_accumulation: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # "no" | "fp16" (needs a GPU) | "bf16"
    gradient_checkpointing: bool = False
    condition_dropout: float = 0.1  # probability of training the unconditional branch (text guidance)
    image_condition_dropout: float = 0.1  # probability of training the image-only branch (image guidance)
    unconditional_prompt: str = DEFAULT_NEGATIVE_PROMPT  # what the sampler's unconditional branch says
    timestep_location: float = 0.0  # t = sigmoid(N(location, 1)); below 0 trains more at high noise (layout)
    edit_weighting: bool = False  # weight changed positions of same-size edits (see loss.py)
    edit_amplification: float = 4.0
    edit_threshold: float = 0.1  # mean |z_in - z_out| over channels above which a position "changed"
    resolution_stages: list[tuple[int, int]] | None = None  # [(start_step, max_image_size)]; None: processor's
    checkpoint_every: int = 500  # 0: only the final checkpoint
    keep_checkpoints: int = 0  # how many recent checkpoints to keep; 0 keeps all
    log_every: int = 1  # a loss.csv row is the mean over the steps since the previous row
    seed: int = 0
    max_grad_norm: float | None = 1.0
    encode_latents_once: bool = False  # encode a finite dataset's images once per resolution stage
    group_by_length: bool = False  # batches of a finite dataset hold examples of like length (less padding)
    num_workers: int = 0  # DataLoader workers preparing batches of a finite dataset
    resume: bool = False  # continue from the latest checkpoint in out_dir
    lora: LoraSettings | None = None  # train only a LoRA adapter (the base stays frozen); None: every weight
    validation_prompts: list[str] = field(default_factory=list)  # sampled with fixed seeds during the run
    sample_every: int = 0  # steps between samples of validation_prompts; 0: only at the end
    sample_steps: int = 20  # inference steps of each sample
    sample_guidance_scale: float = 2.5
    sample_seed: int = 0  # prompt k is sampled with seed sample_seed + k every time

    def __post_init__(self):
        if isinstance(self.lora, dict):  # a config read back from train_config.json
            self.lora = LoraSettings(**self.lora)

    def check(self) -> None:
        """Raise a ValueError naming the first setting that cannot work."""
        for name in ("steps", "batch_size", "grad_accumulation", "log_every", "sample_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a whole number of at least 1, got {value!r}")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "num_workers", "sample_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("condition_dropout", "image_condition_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name} must be a probability between 0 and 1, got {getattr(self, name)}")
        if not (isinstance(self.timestep_location, (int, float)) and -5.0 <= self.timestep_location <= 5.0):
            raise ValueError(f"TrainConfig.timestep_location must be a number between -5 and 5 (0: the paper's "
                             f"t = sigmoid(N(0, 1))), got {self.timestep_location!r}")
        if self.resolution_stages is not None:
            check_resolution_stages(self.resolution_stages)
        if self.lora is not None:
            self.lora.check()
        prompts = self.validation_prompts
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"TrainConfig.validation_prompts must be a list of non-empty prompts, got {prompts!r}")


@dataclass
class TrainResult:
    """What a run did: the step it reached, its last logged loss and its last checkpoint."""

    step: int
    loss: float | None
    stopped: bool
    checkpoint: Path | None
    out_dir: Path
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) logged by this call
    adapter: Path | None = None  # LoRA runs: out_dir/adapter, the adapter of the last checkpoint
    samples: list[Path] = field(default_factory=list)  # the latest validation samples of this call


# ----------------------------------------------------------------------------- what is trained (the LoRA hook)


def prepare_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Make `model` ready to train. Full fine-tuning: every parameter learns. A LoRA run attaches a new
    adapter and freezes the base; the rest of the trainer only sees `trainable_parameters`."""
    if config.lora is None:
        model.requires_grad_(True)
    else:
        attach_training_adapter(model, config.lora, config.seed)
    if hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing(config.gradient_checkpointing)
    return model.train()


def attach_training_adapter(model: nn.Module, settings: LoraSettings, seed: int) -> None:
    """A new adapter whose random lora_A comes from the run's seed (not the global RNG): runs repeat exactly."""
    from .. import lora

    with torch.random.fork_rng(devices=[]):  # peft initialises the new layers on the CPU, then moves them
        torch.manual_seed(derived_seed(seed, 0, LORA_INIT))
        lora.add_lora(model, settings.name, rank=settings.rank, alpha=settings.alpha,
                      targets=settings.target_modules(), dropout=settings.dropout)
    for param in trainable_parameters(model):  # on a bf16/fp16 base the adapter learns in fp32 (peft casts back)
        if param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_model_weights(model: nn.Module, folder: Path, config: TrainConfig) -> None:
    """Full fine-tuning writes the whole transformer (the folder loads with `load_transformer`); a LoRA run
    writes its adapter in peft's layout (the folder loads with `pipe.load_lora`)."""
    if config.lora is None:
        save_transformer(model, folder)
    else:
        from ..lora import save_lora
        save_lora(model, folder, config.lora.name, base_model=config.lora.base_model)


def load_model_weights(model: nn.Module, folder: Path, config: TrainConfig) -> None:
    """Restore a checkpoint's weights into the very parameters the optimizer holds."""
    if config.lora is None:
        model.load_state_dict(load_file(str(folder / MODEL_WEIGHTS)), strict=True)
    else:
        from ..lora import load_lora_weights
        load_lora_weights(model, folder, config.lora.name)


def build_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if not parameters:
        raise ValueError("the model has no trainable parameters; prepare_model must leave some requiring grad")
    decay = [p for p in parameters if p.ndim >= 2]  # norms and biases are not decayed
    no_decay = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every parameter in one pass, on a CPU as on a GPU: for the mini model's 5.1M
    # parameters 16 ms a step against 45 ms for torch's default on a CPU (one core), the same updates to 1e-8.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, fused=fused or None)


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))


# ----------------------------------------------------------------------------- randomness and data order


def derived_seed(seed: int, *parts: int) -> int:
    """A well-mixed 63-bit seed for one (seed, micro-batch, purpose) combination."""
    state = np.random.SeedSequence([seed % 2**32, seed // 2**32 % 2**32, *parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def check_resolution_stages(stages: list[tuple[int, int]]) -> list[tuple[int, int]]:
    stages = sorted((int(start), int(size)) for start, size in stages)
    if not stages or stages[0][0] != 0:
        raise ValueError(f"resolution_stages must start at step 0, got {stages}; e.g. [(0, 256), (1000, 512)]")
    if any(size < PATCH_PIXELS for _, size in stages):
        raise ValueError(f"every resolution stage needs a max_image_size of at least {PATCH_PIXELS}, got {stages}")
    return stages


def resolution_at(stages: list[tuple[int, int]], step: int) -> int:
    """The max image size of the stage that optimizer step `step` (0-based) belongs to."""
    return [size for start, size in stages if start <= step][-1]


class DataOrder:
    """Which examples global micro-batch g holds: epoch-wise permutations of a finite dataset.

    With `lengths` (one sequence-length estimate per example) each epoch's permutation is cut into windows
    of GROUP_WINDOW batches, each window sorted by length before it is split into batches, and the batches
    are then shuffled: a batch pads to its longest example, so batches of like lengths waste far less work
    (a mixed set with a few long few-shot prompts trains about twice as fast). Every example still comes
    once per epoch, but the remainder that does not fill a whole batch waits for a later epoch.
    """

    GROUP_WINDOW = 50

    def __init__(self, dataset_size: int, batch_size: int, seed: int, lengths: Sequence[float] | None = None):
        if dataset_size == 0:
            raise ValueError("the training data is empty; give at least one example")
        if lengths is not None and len(lengths) != dataset_size:
            raise ValueError(f"{len(lengths)} lengths for {dataset_size} examples")
        self.size, self.batch_size, self.seed = dataset_size, batch_size, seed
        # Grouping needs at least two batches per epoch to choose from.
        self.lengths = list(lengths) if lengths is not None and dataset_size >= 2 * batch_size else None
        self._epoch, self._permutation, self._batches = -1, None, None

    def indices(self, g: int) -> list[int]:
        if self.lengths is not None:
            per_epoch = self.size // self.batch_size
            return self._grouped_batches(g // per_epoch)[g % per_epoch]
        return [self.index_at(position) for position in range(g * self.batch_size, (g + 1) * self.batch_size)]

    def index_at(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, self._epoch_permutation(epoch)
        return self._permutation[position % self.size]

    def _epoch_permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, DATA_ORDER))
        return torch.randperm(self.size, generator=generator).tolist()

    def _grouped_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            order = self._epoch_permutation(epoch)
            order = order[: len(order) // self.batch_size * self.batch_size]
            window = self.GROUP_WINDOW * self.batch_size
            batches = []
            for start in range(0, len(order), window):
                chunk = sorted(order[start: start + window], key=self.lengths.__getitem__)
                batches += [chunk[i: i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            shuffle = torch.Generator().manual_seed(derived_seed(self.seed, epoch, DATA_ORDER) + 1)
            self._epoch, self._batches = epoch, [batches[i] for i in torch.randperm(len(batches),
                                                                                      generator=shuffle).tolist()]
        return self._batches


def example_length(example: Example) -> float:
    """About how many tokens an example takes: its images' 16x16-pixel patches plus ~4 characters a token."""
    pixels = sum(image.width * image.height for image in [*example.input_images, example.output_image])
    return pixels / PATCH_PIXELS**2 + len(example.instruction) / 4


@dataclass
class BatchPlan:
    """What every process agrees on to build micro-batch g: sizes, counts, seeds and stages."""

    batch_size: int
    grad_accumulation: int
    num_processes: int
    rank: int
    seed: int
    stages: list[tuple[int, int]]

    def micro_batches(self, start_step: int, end_step: int) -> list[int]:
        """This process's global micro-batch numbers for optimizer steps start_step..end_step-1, in order."""
        per_step = self.grad_accumulation * self.num_processes
        return [g for g in range(start_step * per_step, end_step * per_step) if g % self.num_processes == self.rank]

    def step_of(self, g: int) -> int:
        return g // (self.grad_accumulation * self.num_processes)


class FiniteMicroBatches(torch.utils.data.Dataset):
    """Item g is global micro-batch g of a finite dataset; a DataLoader's workers can build them."""

    def __init__(self, data: Any, collator: TrainingCollator, plan: BatchPlan,
                 lengths: Sequence[float] | None = None):
        self.data, self.collator, self.plan = data, collator, plan
        self.order = DataOrder(len(data), plan.batch_size, plan.seed, lengths)

    def __getitem__(self, g: int) -> tuple[int, TrainingBatch]:
        indices = self.order.indices(g)
        rng = random.Random(derived_seed(self.plan.seed, g, DROPOUT))
        size = resolution_at(self.plan.stages, self.plan.step_of(g))
        return g, self.collator([self.data[i] for i in indices], size, rng, example_keys=indices)


def _unchanged(item: Any) -> Any:
    return item


def finite_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int, end_step: int,
                   num_workers: int, lengths: Sequence[float] | None = None) -> Iterator[tuple[int, TrainingBatch]]:
    source = FiniteMicroBatches(data, collator, plan, lengths)
    numbers = plan.micro_batches(start_step, end_step)
    if num_workers == 0:
        return (source[g] for g in numbers)
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=numbers, num_workers=num_workers,
                                         collate_fn=_unchanged)
    return iter(loader)


def streamed_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int,
                     end_step: int) -> Iterator[tuple[int, TrainingBatch]]:
    """Micro-batches of an iterable read in order. Every process reads the whole stream and keeps its own
    micro-batches; a resumed run first skips (now, not lazily) the examples already used."""
    examples = iter(data)
    per_step = plan.grad_accumulation * plan.num_processes
    _take(examples, start_step * per_step * plan.batch_size)
    return _stream(examples, collator, plan, range(start_step * per_step, end_step * per_step))


def _stream(examples: Iterator[Example], collator: TrainingCollator, plan: BatchPlan,
            numbers: range) -> Iterator[tuple[int, TrainingBatch]]:
    for g in numbers:
        batch = _take(examples, plan.batch_size)
        if g % plan.num_processes == plan.rank:
            rng = random.Random(derived_seed(plan.seed, g, DROPOUT))
            yield g, collator(batch, resolution_at(plan.stages, plan.step_of(g)), rng)


def _take(examples: Iterator[Example], count: int) -> list[Example]:
    taken = [example for _, example in zip(range(count), examples)]
    if len(taken) < count:
        raise ValueError("the training data ran out; pass a list or JsonlDataset (reused every epoch) or an "
                         "endless iterable of Examples")
    return taken


# ----------------------------------------------------------------------------- latents


class LatentCache:
    """VAE latents of a finite dataset's images, on the CPU, keyed by (example, image, stage size, h, w).

    With a `folder`, each stage's latents are also kept in `folder/stage-<size>.pt` together with a
    fingerprint of the VAE weights and of every prepared picture, so a resumed or continued run over the
    same data skips the encoding (the mini recipe's 43,556 pictures: 83 s on two quiet CPU cores, 9 min on
    busy ones; read back in 2 s); any change of data, order or VAE changes the fingerprint and the stage
    is encoded afresh.
    """

    def __init__(self, folder: Path | None = None, write: bool = True):
        self.latents: dict[tuple, torch.Tensor] = {}
        self.stage_size: int | None = None
        self.folder, self.write = folder, write
        self.loaded_from: Path | None = None

    def start_stage(self, vae, data: Any, max_image_size: int, batch_size: int = 16) -> None:
        """Encode every image of `data` as the collator will prepare it at this stage (older stages are dropped)."""
        self.latents = {k: v for k, v in self.latents.items() if k[2] == max_image_size}
        self.stage_size = max_image_size
        self.loaded_from = None
        file = self.folder / f"stage-{max_image_size}.pt" if self.folder is not None else None
        fingerprint = stage_fingerprint(vae, data, max_image_size) if file is not None else None
        if file is not None and self._load(file, fingerprint):
            return
        pending: dict[tuple[int, int], list[tuple[tuple, torch.Tensor]]] = {}
        for index in range(len(data)):
            output, inputs = prepare_images(data[index], max_image_size)
            for image_index, picture in [(-1, output), *enumerate(inputs)]:
                key = (index, image_index, max_image_size, picture.height, picture.width)
                if key not in self.latents:
                    pending.setdefault(key[3:], []).append((key, image_to_tensor(picture)))
            for shape in [s for s, items in pending.items() if len(items) >= batch_size]:
                self._encode(vae, pending.pop(shape))
        for items in pending.values():
            self._encode(vae, items)
        if file is not None and self.write:
            self._save(file, fingerprint)

    def _encode(self, vae, items: list[tuple[tuple, torch.Tensor]]) -> None:
        latents = encode_pixels(vae, torch.stack([pixels for _, pixels in items]))
        for (key, _), latent in zip(items, latents.cpu()):
            self.latents[key] = latent

    def _save(self, file: Path, fingerprint: str) -> None:
        groups: dict[tuple, list[tuple]] = {}
        for key, latent in self.latents.items():
            if key[2] == self.stage_size:
                groups.setdefault(tuple(latent.shape), []).append(key)
        payload = {"fingerprint": fingerprint,
                   "groups": [([list(key) for key in keys], torch.stack([self.latents[key] for key in keys]))
                              for keys in groups.values()]}
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(file.name + ".partial")
        torch.save(payload, partial)
        os.replace(partial, file)

    def _load(self, file: Path, fingerprint: str) -> bool:
        if not file.is_file():
            return False
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache file is only a lost shortcut: encode again and overwrite it
            return False
        if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
            return False
        for keys, latents in payload["groups"]:
            for key, latent in zip(keys, latents):
                self.latents[tuple(key)] = latent
        self.loaded_from = file
        return True

    def get(self, key: tuple) -> torch.Tensor | None:
        return self.latents.get(key)

    def put(self, key: tuple, latent: torch.Tensor) -> None:
        self.latents[key] = latent.detach().cpu()


def stage_fingerprint(vae, data: Any, max_image_size: int) -> str:
    """A digest of what the latents depend on: the VAE's encoding side (its weights other than the decoder's,
    and its latent shift and scale) and every picture the stage encodes, in dataset order. A fine-tuned
    decoder keeps the fingerprint; a changed encoder, scale or picture does not."""
    digest = hashlib.sha256(f"latents v2 {max_image_size} {len(data)} {vae_latent_scale(vae)}".encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(DECODER_SIDE):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    for index in range(len(data)):
        output, inputs = prepare_images(data[index], max_image_size)
        for picture in (output, *inputs):
            digest.update(f"{index} {picture.mode} {picture.size}".encode())
            digest.update(picture.tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_pixels(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> fp32 latents; the posterior mean, so cached and fresh latents agree."""
    return vae_encode(vae, pixels, sample=False).float()


def batch_latents(vae, batch: TrainingBatch, cache: LatentCache | None, max_image_size: int,
                  device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output latents (B, C, h, w) and one (1, C, h, w) latent per input image span, from the cache when it has them."""
    height, width = batch.output_images.shape[-2:]
    output_keys = [(key, -1, max_image_size, height, width) for key in batch.example_keys]
    input_keys = [(batch.example_keys[row], index, max_image_size, *image.shape[-2:])
                  for (row, index), image in zip(batch.input_image_refs, batch.input_images)]
    outputs = [_cached_latent(cache, key) for key in output_keys]
    missing = [row for row, latent in enumerate(outputs) if latent is None]
    if missing:
        fresh = encode_pixels(vae, batch.output_images[missing])
        for row, latent in zip(missing, fresh):
            outputs[row] = latent
            _store_latent(cache, output_keys[row], latent)
    inputs = []
    for key, image in zip(input_keys, batch.input_images):
        latent = _cached_latent(cache, key)
        if latent is None:
            latent = encode_pixels(vae, image)[0]
            _store_latent(cache, key, latent)
        inputs.append(latent[None].to(device))
    return torch.stack([latent.to(device) for latent in outputs]), inputs


def _cached_latent(cache: LatentCache | None, key: tuple) -> torch.Tensor | None:
    return cache.get(key) if cache is not None and key[0] is not None else None


def _store_latent(cache: LatentCache | None, key: tuple, latent: torch.Tensor) -> None:
    if cache is not None and key[0] is not None:
        cache.put(key, latent)


# ----------------------------------------------------------------------------- one step


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
    losses = []
    for _ in range(config.grad_accumulation):
        g, batch = next(batches)
        generator = torch.Generator().manual_seed(derived_seed(config.seed, g, NOISE))
        with accelerator.accumulate(model):
            loss = training_loss(model, vae, batch, config, generator, cache, max_image_size, accelerator.device)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (their trainer_state.json, written last, exists), oldest first."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if (p / TRAINER_STATE).is_file()), key=lambda p: p.name)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def save_checkpoint(accelerator, model: nn.Module, optimizer, scheduler, trainer_state: dict, out_dir: Path,
                    config: TrainConfig) -> Path:
    """Write a checkpoint into a hidden temporary folder, then rename it: a checkpoint is whole or absent."""
    folder = checkpoint_dir(out_dir, trainer_state["step"])
    scratch = folder.with_name(f".{folder.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), scratch / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model_weights(accelerator.unwrap_model(model), scratch, config)
        torch.save(optimizer.state_dict(), scratch / "optimizer.pt")
        torch.save(scheduler.state_dict(), scratch / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), scratch / "scaler.pt")
        (scratch / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
        _replace_folder(scratch, folder)
        _prune_checkpoints(out_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return folder


def _replace_folder(source: Path, target: Path) -> None:
    if target.exists():  # a re-run of the same step: move the old one aside, never delete before the new is in place
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, accelerator, model: nn.Module, optimizer, scheduler, config: TrainConfig) -> dict:
    """Restore model, optimizer, scheduler and scaler; returns the trainer state (step, elapsed_s). The RNG
    states are restored by `load_rng_state` once the data stream is positioned (it may draw from them)."""
    load_model_weights(accelerator.unwrap_model(model), folder, config)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True))
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(folder / "scaler.pt", map_location="cpu", weights_only=True))
    return json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))


def load_rng_state(folder: Path, rank: int) -> None:
    rng_file = folder / f"rng_state_{rank}.pt"
    if rng_file.is_file():
        restore_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))


# ----------------------------------------------------------------------------- the loss log


class LossLog:
    """out_dir/loss.csv (step, loss, lr, elapsed_s), flushed per row so a UI can plot it during the run."""

    HEADER = ["step", "loss", "lr", "elapsed_s"]

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.file = None
        if not enabled:
            return
        rows = read_loss_log(path) if resume_step is not None and path.is_file() else []
        kept = [row for row in rows if row["step"] <= resume_step] if resume_step is not None else []
        self.file = open(path, "w", newline="", encoding="utf-8")  # rows past the checkpoint are redone
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.HEADER)
        for row in kept:
            self.writer.writerow([row[name] for name in self.HEADER])
        self.file.flush()

    def write(self, step: int, loss: float, lr: float, elapsed_s: float) -> None:
        if self.file is not None:
            self.writer.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{elapsed_s:.2f}"])
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_loss_log(path: str | os.PathLike) -> list[dict]:
    """The rows of a loss.csv as dicts with int step and float loss, lr and elapsed_s."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"step": int(row["step"]), "loss": float(row["loss"]), "lr": float(row["lr"]),
                 "elapsed_s": float(row["elapsed_s"])} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------- the run


def make_accelerator(config: TrainConfig):
    """An Accelerator for this run. In a single process, a fresh one per call (a studio trains many times)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps its settings in process-wide singletons; a second run with another precision or
        # accumulation would be refused or silently get the first run's settings.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on this machine")
    # Batches without input images leave input_x_embedder unused: DDP must not wait for its gradients.
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accumulation,
                       step_scheduler_with_optimizer=False,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def check_out_dir(out_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to mix a fresh run into an old one."""
    latest = latest_checkpoint(out_dir)
    if resume:
        return latest
    if latest is not None:
        raise ValueError(f"{out_dir} already holds checkpoints of a run (latest {latest.name}); pass resume=True "
                         "to continue it, or choose another out_dir")
    if (out_dir / ADAPTER).exists():
        raise ValueError(f"{out_dir} already holds an adapter ({out_dir / ADAPTER}); choose another out_dir, or "
                         "move that adapter away before training a new one there")
    return None


def saved_lora_settings(checkpoint: Path) -> LoraSettings | None:
    """The LoRA settings a checkpoint was trained with (None: every weight was trained)."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    saved = state.get("config", {}).get("lora")
    return LoraSettings(**saved) if saved else None


def check_same_kind_of_run(checkpoint: Path, config: TrainConfig) -> None:
    """A resumed run must train what the checkpoint holds: LoRA or not, with the same rank, alpha and layers."""
    saved, wanted = saved_lora_settings(checkpoint), config.lora
    describe = lambda s: ("every weight" if s is None else  # noqa: E731
                          f"a LoRA of rank {s.rank}, alpha {s.effective_alpha}, targets {'+'.join(s.target_modules())}")
    shape = lambda s: None if s is None else (s.rank, s.effective_alpha, sorted(s.target_modules()))  # noqa: E731
    same = shape(saved) == shape(wanted)
    if not same:
        raise ValueError(f"{checkpoint} trained {describe(saved)}, but this run asks for {describe(wanted)}; resume "
                         "with the run's own settings, or start a new run in another out_dir")


def make_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int, config: TrainConfig):
    if is_finite_dataset(data):
        lengths = [example_length(data[i]) for i in range(len(data))] if config.group_by_length else None
        return finite_batches(data, collator, plan, start_step, config.steps, config.num_workers, lengths)
    return streamed_batches(data, collator, plan, start_step, config.steps)


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
    out_dir = Path(config.out_dir)
    checkpoint = check_out_dir(out_dir, resume)
    if checkpoint is not None:
        check_same_kind_of_run(checkpoint, config)
    accelerator = make_accelerator(config)
    run = _Run(accelerator, model, vae, processor, data, config, callback, stop)
    try:
        return run.execute(checkpoint)
    except torch.cuda.OutOfMemoryError as error:
        raise RuntimeError(f"out of GPU memory while training ({error}). Lower batch_size or the resolution "
                           "stage's max_image_size, set gradient_checkpointing=True or mixed_precision='bf16', "
                           "or train a LoRA instead of the full model") from None
    finally:
        run.close()


class _Run:
    """One train() call: the prepared objects, the step counter and the reporting."""

    def __init__(self, accelerator, model: nn.Module, vae, processor: OmniGenProcessor, data: Any,
                 config: TrainConfig, callback: Callable[[dict], None] | None, stop: threading.Event | None):
        self.accelerator, self.data, self.config, self.callback, self.stop = accelerator, data, config, callback, stop
        self.out_dir = Path(config.out_dir)
        self.stages = check_resolution_stages(config.resolution_stages or [(0, processor.max_input_image_size)])
        self.collator = TrainingCollator(processor, config.condition_dropout, config.image_condition_dropout,
                                         config.unconditional_prompt)
        self.cache = (LatentCache(self.out_dir / LATENT_CACHE, write=accelerator.is_main_process)
                      if config.encode_latents_once else None)
        self.vae = vae.requires_grad_(False).eval().to(accelerator.device)
        model = prepare_model(model, config)
        self.parameters = trainable_parameters(model)
        optimizer = build_optimizer(self.parameters, config)
        self.scheduler = build_scheduler(optimizer, config)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
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
            state = load_checkpoint(checkpoint, self.accelerator, self.model, self.optimizer, self.scheduler,
                                    self.config)
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
                 "loss": self.losses[-1][1] if self.losses else None, "config": asdict(self.config)}
        path = save_checkpoint(self.accelerator, self.model, self.optimizer, self.scheduler, state, self.out_dir,
                               self.config)
        if self.config.lora is not None:
            self.publish_adapter()
        self.saved_step, self.last_checkpoint = self.step, path
        self.emit({"type": "checkpoint", "step": self.step, "path": str(path),
                   "adapter": str(self.adapter) if self.adapter else None})

    def publish_adapter(self) -> None:
        """out_dir/adapter takes the checkpoint's adapter: a new folder appears whole, and in an existing one
        each file is replaced atomically (its adapter_config.json does not change within a run)."""
        if self.accelerator.is_main_process:
            from ..lora import save_lora
            save_lora(self.accelerator.unwrap_model(self.model), self.out_dir / ADAPTER, self.config.lora.name,
                      base_model=self.config.lora.base_model)
        self.accelerator.wait_for_everyone()
        self.adapter = self.out_dir / ADAPTER

    def sample(self) -> None:
        """Images of the validation prompts at this step (main process only), at the current resolution (at most
        the model's native size)."""
        prompts = list(self.config.validation_prompts)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            size = min(resolution_at(self.stages, max(self.step - 1, 0)), model.config.native_image_size)
            size = max(PATCH_PIXELS, size // PATCH_PIXELS * PATCH_PIXELS)
            self.samples = write_samples(model, self.vae, self.processor, prompts,
                                         self.out_dir / "samples", self.step, size, self.config.sample_steps,
                                         self.config.sample_guidance_scale, self.config.sample_seed)
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
