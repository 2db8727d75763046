"""The settings of a training run: TrainConfig, LoraSettings (what a LoRA run adapts), TrainResult (what a run did)
and the resolution stages (which max image size each optimizer step trains at).

Every default of a training run lives here; `TrainConfig.check` refuses a setting that cannot work before
anything is loaded or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..processor import DEFAULT_NEGATIVE_PROMPT, PATCH_PIXELS

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")


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
