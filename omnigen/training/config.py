"""The settings of a training run: TrainConfig, LoraSettings (what a LoRA run adapts), TrainResult (what a run did)
and the resolution stages (which max image size each optimizer step trains at).

TrainConfig and LoraSettings are the one training settings type: each field states its default, range, help
and command-line flag (`setting`), as omnigen.settings.GenerationSettings does for generation. The CLI's flags
(omnigen/training/cli.py), the studio's Train tab and its /train_start parameters (app/train_settings.py) are
made from these fields; `TrainConfig.check` refuses a setting that cannot work before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ..settings import OMNIGEN_V1_NEGATIVE_PROMPT, PATCH_PIXELS, check_value

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
# Where a run's model states no negative prompt of its own (train_lora and `omnigen train` pass the model's).
DEFAULT_UNCONDITIONAL_PROMPT = OMNIGEN_V1_NEGATIVE_PROMPT


# Which linear layers of the decoder a LoRA adapts, by the names the CLI and the studio offer.
LORA_TARGETS = {"attention": ("qkv_proj", "o_proj"),
                "attention+mlp": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}


def setting(default: Any, label: str, help: str, *, minimum: float | None = None, maximum: float | None = None,
            choices: tuple | None = None, flag: str | None = None, ui: tuple[float, float, float] | None = None,
            nullable: bool = False, cli: bool = True, factory: Any = None) -> Any:
    """A dataclass field with what a CLI, a form and a validator need to know about it (the metadata keys of
    omnigen.settings, so its `check_value` checks these too).

    flag: the command-line flag (default: --name-with-dashes); cli: False for what the CLI sets otherwise.
    ui: (low, high, step) of a slider, when the useful range is narrower than the valid one.
    """
    meta = dict(label=label, help=help, minimum=minimum, maximum=maximum, choices=choices, multiple_of=None,
                flag=flag, ui=ui, nullable=nullable, cli=cli)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(spec: dataclasses.Field) -> str:
    return spec.metadata["flag"] or "--" + spec.name.replace("_", "-")


def check_fields(settings: Any, owner: str) -> None:
    """Each field of a settings dataclass checked against its type and range, named as `owner.field`."""
    for spec in fields(settings):
        if "label" not in spec.metadata or spec.type in ("list[str]",):
            continue
        try:
            check_value(spec, getattr(settings, spec.name))
        except ValueError as error:
            raise ValueError(f"{owner}.{error}") from None


@dataclass
class LoraSettings:
    """A LoRA run: an adapter on the decoder's linear layers learns, every base weight stays as it was."""

    rank: int = setting(8, "Rank", "the adapter's rank: more learns more, and takes more memory", minimum=1,
                        maximum=1024, ui=(1, 128, 1))
    # None: the rank (scale 1), as the official OmniGen fine-tuning script does
    alpha: float | None = setting(None, "Alpha", "the adapter's scale is alpha / rank (default: the rank, scale 1)",
                                  minimum=0.0, nullable=True)
    targets: str | list[str] = setting("attention", "Layers", "which linear layers of the decoder the adapter adapts",
                                       choices=tuple(LORA_TARGETS))  # or a list of linear layer names
    dropout: float = setting(0.0, "LoRA dropout", "dropout on the adapter's input while training", minimum=0.0,
                             maximum=0.99, flag="--lora-dropout")
    # Its name while attached (saved files do not record it): the studio names the run's folder after it.
    name: str = setting("my_adapter", "Adapter name", "the adapter's name (letters, digits, - and _)", cli=False)
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
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a whole number of at least 1, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive (or None for the rank), got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        self.target_modules()


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model, VAE, processor and data."""

    out_dir: str = setting(None, "Run folder", "checkpoints, loss.csv and samples go here; a LoRA run's adapter "
                           "to OUT/adapter", flag="--out", cli=False)
    steps: int = setting(500, "Steps", "optimizer steps", minimum=1, maximum=10_000_000)
    batch_size: int = setting(1, "Batch size", "examples per micro-batch and process", minimum=1, maximum=4096,
                              ui=(1, 32, 1))
    global_batch_size: int | None = setting(None, "Global batch", "examples per optimizer step over all processes: "
                                            "sets grad_accumulation to global / (batch size x processes), the same "
                                            "run on 1 or 8 GPUs", minimum=1, nullable=True)
    learning_rate: float = setting(1e-4, "Learning rate", "AdamW's learning rate", minimum=1e-12, maximum=10.0,
                                   flag="--lr")
    warmup_steps: int = setting(0, "Warm-up steps", "linear warm-up from lr/warmup_steps to lr", minimum=0)
    weight_decay: float = setting(0.0, "Weight decay", "AdamW's, on matrices only", minimum=0.0, maximum=1.0)
    lr_schedule: str = setting("constant", "Schedule", "constant after warm-up, or cosine down to 0 at the last "
                               "step", choices=LR_SCHEDULES)
    grad_accumulation: int = setting(1, "Gradient accumulation", "micro-batches per optimizer step", minimum=1)
    mixed_precision: str = setting("no", "Mixed precision", "autocast precision (fp16 needs a GPU); full "
                                   "fine-tuning keeps fp32 master weights", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = setting(False, "Gradient checkpointing", "recompute each decoder layer in the "
                                           "backward pass instead of keeping its activations: less memory, "
                                           "about a third more time per step, the same gradients")
    condition_dropout: float = setting(0.1, "Condition dropout", "probability of training the unconditional "
                                       "branch (text guidance)", minimum=0.0, maximum=1.0, ui=(0.0, 0.5, 0.05))
    image_condition_dropout: float = setting(0.1, "Image condition dropout", "probability of training the "
                                             "image-only branch (image guidance)", minimum=0.0, maximum=1.0)
    unconditional_prompt: str | None = setting(None, "Unconditional prompt", "what the unconditional branch says "
                                               "(default: the model's own negative prompt, which sampling uses)",
                                               nullable=True)
    timestep_location: float = setting(0.0, "Timestep location", "t = sigmoid(N(location, 1)); below 0 trains "
                                       "more at high noise, where layout is decided", minimum=-5.0, maximum=5.0)
    edit_weighting: bool = setting(False, "Edit weighting", "weight the changed parts of same-size edits "
                                   "(paper, 2.3)")
    edit_amplification: float = setting(4.0, "Edit amplification", "loss weight of a changed position",
                                        minimum=1.0, cli=False)
    edit_threshold: float = setting(0.1, "Edit threshold", "mean |z_in - z_out| over channels above which a "
                                    "position changed", minimum=0.0, cli=False)
    resolution: int | None = setting(None, "Resolution", "longest image side in pixels, a multiple of 16 (default: "
                                     "the model's max_input_image_size)", minimum=PATCH_PIXELS, maximum=8192,
                                     nullable=True)
    # [(start_step, max_image_size)]: a schedule of resolutions; None: `resolution` from step 0
    resolution_stages: list[tuple[int, int]] | None = None
    checkpoint_every: int = setting(100, "Checkpoint every", "steps between checkpoints; 0: only the last",
                                    minimum=0)
    keep_checkpoints: int = setting(0, "Keep checkpoints", "how many recent checkpoints to keep; 0 keeps all",
                                    minimum=0)
    log_every: int = setting(1, "Log every", "a loss.csv row is the mean over the steps since the previous row",
                             minimum=1)
    seed: int = setting(0, "Seed", "seed of every random choice of the run", minimum=0, maximum=2**63 - 1)
    max_grad_norm: float = setting(1.0, "Max gradient norm", "before each update the gradients are scaled down "
                                   "to this total norm when theirs is larger; 0: no clipping", minimum=0.0)
    encode_latents_once: bool = setting(False, "Encode latents once", "encode a finite dataset's images once per "
                                        "resolution stage")
    group_by_length: bool = setting(False, "Group by length", "batches of a finite dataset hold examples of like "
                                    "length (less padding)")
    num_workers: int = setting(0, "Data workers", "DataLoader workers preparing batches of a finite dataset",
                               minimum=0)
    resume: bool = setting(False, "Resume", "continue the run in OUT from its latest checkpoint")
    lora: LoraSettings | None = None  # train only a LoRA adapter (the base stays frozen); None: every weight
    validation_prompts: list[str] = setting(None, "Validation prompts", "sampled with fixed seeds during the run "
                                            "(repeat the flag)", flag="--validation-prompt", factory=list)
    sample_every: int = setting(0, "Sample every", "steps between samples of the validation prompts; 0: only at "
                                "the end", minimum=0)
    sample_steps: int = setting(20, "Sample steps", "inference steps of each sample", minimum=1, maximum=1000)
    sample_guidance_scale: float = setting(2.5, "Sample guidance", "guidance scale of the samples", minimum=0.0,
                                           maximum=100.0, ui=(1.0, 5.0, 0.1))
    sample_seed: int = setting(0, "Sample seed", "prompt k is sampled with seed sample_seed + k every time",
                               minimum=0, cli=False)

    def __post_init__(self):
        if isinstance(self.lora, dict):  # a config read back from train_config.json
            self.lora = LoraSettings(**self.lora)

    def check(self) -> None:
        """Raise a ValueError naming the first setting that cannot work."""
        if not self.out_dir:
            raise ValueError("TrainConfig.out_dir is required: the folder the run writes into")
        check_fields(self, "TrainConfig")
        if self.resolution is not None and self.resolution % PATCH_PIXELS:
            raise ValueError(f"TrainConfig.resolution must be a multiple of {PATCH_PIXELS}, got {self.resolution}")
        if self.resolution_stages is not None:
            check_resolution_stages(self.resolution_stages)
        if self.lora is not None:
            self.lora.check()
        prompts = self.validation_prompts
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"TrainConfig.validation_prompts must be a list of non-empty prompts, got {prompts!r}")

    def stages(self, model_size: int) -> list[tuple[int, int]]:
        """The resolution schedule: resolution_stages, else `resolution` (else `model_size`) from step 0."""
        return check_resolution_stages(self.resolution_stages or [(0, self.resolution or model_size)])


def config_fields(owner: type = TrainConfig) -> tuple[dataclasses.Field, ...]:
    """The fields of TrainConfig (or LoraSettings) that are settings: those with a label, help and range."""
    return tuple(spec for spec in fields(owner) if "label" in spec.metadata)


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
