"""The generation settings: the one place that says each setting's name, type, default, range and meaning.

    settings = GenerationSettings(num_inference_steps=30, seed=0)          # the library's defaults otherwise
    settings = pipe.default_settings.replace(seed=0)                        # the model folder's defaults
    settings = GenerationSettings.from_record(read_settings("result.png"))  # what made a picture

Everything else is derived from the fields below: the pipeline's keyword arguments, the CLI's flags
(omnigen/cli.py), the studio's settings panel and API parameters (app/), the copy-as-Python snippet and
the record stored in every PNG. A model folder may state its own defaults (see `model_defaults`); where it
states nothing the official OmniGen-v1 defaults hold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

LATENT_PIXELS = 8  # pixels per side of one latent cell: the VAE downsamples by 8
PATCH_LATENTS = 2  # latent cells per side of one token's patch (the model's patch_size)
PATCH_PIXELS = LATENT_PIXELS * PATCH_LATENTS  # one token slot per 16x16 pixels
GENERATION_CONFIG = "generation_config.json"  # a model folder's own defaults (transformers' file name)
PROMPT_GUIDE = "prompt_guide.json"  # what a model understands, by language: {"en": "...", "zh-CN": "..."}
MAX_PROMPT_GUIDE_CHARS = 2000
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "omnigen-mini"  # the embedded model

# The official OmniGen-v1 pipeline's negative prompt (OmniGen/pipeline.py), used where a folder states none.
OMNIGEN_V1_NEGATIVE_PROMPT = (
    "low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly drawn "
    "hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra limbs, "
    "cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra "
    "legs, fused fingers, too many fingers."
)


# The solvers (omnigen/solvers.py SAMPLERS) and the fewest steps each needs to be what it says.
SAMPLER_MIN_STEPS = {"euler": 1, "heun": 1, "midpoint": 1, "dpmpp_2m": 3}
SAMPLER_CALLS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "dpmpp_2m": 1}  # model evaluations per step
SAMPLER_CHOICES = tuple(SAMPLER_MIN_STEPS)


def _setting(default: Any, label: str, help: str, *, minimum: float | None = None, maximum: float | None = None,
             choices: tuple | None = None, multiple_of: int | None = None, flag: str | None = None,
             ui: tuple[float, float, float] | None = None, reproduces: bool = True, model_default: bool = False,
             nullable: bool = False, flag_help: str | None = None) -> Any:
    """A dataclass field with what a CLI, a form and a validator need to know about it.

    flag_help: what a `--no-...` flag of a setting that is on by default does (help says what the setting is).
    ui: (low, high, step) of a slider, when the useful range is narrower than the valid one.
    reproduces: part of what decides the pixels (kept in the copy-as-Python snippet).
    model_default: a model folder may state its own default.
    """
    meta = dict(label=label, help=help, minimum=minimum, maximum=maximum, choices=choices, multiple_of=multiple_of,
                flag=flag, ui=ui, reproduces=reproduces, model_default=model_default, nullable=nullable,
                flag_help=flag_help)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class GenerationSettings:
    """Every setting of one generation call. Frozen: change one with `.replace(name=value)`."""

    height: int = _setting(1024, "Height", "output height in pixels, a multiple of 16", minimum=16,
                           multiple_of=PATCH_PIXELS, model_default=True)
    width: int = _setting(1024, "Width", "output width in pixels, a multiple of 16", minimum=16,
                          multiple_of=PATCH_PIXELS, model_default=True)
    num_inference_steps: int = _setting(50, "Steps", "denoising steps", minimum=1, maximum=1000, flag="--steps",
                                        ui=(1, 100, 1), model_default=True)
    guidance_scale: float = _setting(3.0, "Guidance (text)", "how strongly the image follows the prompt",
                                     minimum=0.0, maximum=100.0, ui=(1.0, 5.0, 0.1), model_default=True)
    img_guidance_scale: float = _setting(1.6, "Image guidance", "how strongly the image follows the input images",
                                         minimum=0.0, maximum=100.0, ui=(1.0, 3.0, 0.1), model_default=True)
    use_img_guidance: bool = _setting(True, "Image guidance branch", "guide against an image-only branch when there "
                                      "are input images (off: two branches, as the official use_img_guidance="
                                      "False)", flag="--no-img-guidance", model_default=True,
                                      flag_help="guide with two branches even when there are input images: no "
                                      "image-only branch, as the official use_img_guidance=False")
    negative_prompt: str = _setting(OMNIGEN_V1_NEGATIVE_PROMPT, "Negative prompt",
                                    "what the unconditional branch says", model_default=True)
    seed: int | None = _setting(None, "Seed", "seed of the first image (the next ones take seed+1, ...); none: "
                                "a random one, recorded", minimum=0, maximum=2**63 - 1, nullable=True)
    num_images_per_prompt: int = _setting(1, "Number of images", "images per prompt", minimum=1, maximum=64,
                                          flag="--num-images", ui=(1, 4, 1), reproduces=False)
    use_input_image_size_as_output: int = _setting(
        0, "Output size", "0: height x width; k: the size of input image k (True means 1)", minimum=0,
        flag="--use-input-image-size-as-output")
    max_input_image_size: int = _setting(1024, "Max input image size", "input images are scaled down so their "
                                         "longer side is at most this, a multiple of 16", minimum=16,
                                         multiple_of=PATCH_PIXELS, model_default=True)
    cfg_mode: str = _setting("batched", "Guidance mode", "batched: all guidance branches in one forward; "
                             "separate: one at a time (less memory, same result)", choices=("batched", "separate"))
    use_kv_cache: bool = _setting(True, "KV cache", "compute the condition's keys and values once",
                                  flag="--no-kv-cache", flag_help="recompute the condition's keys and values at "
                                  "every step instead of once (slower, the same picture)")
    offload_kv_cache: bool = _setting(False, "Offload KV cache", "keep the KV cache in CPU memory (CUDA only)",
                                      reproduces=False)
    time_shift: float = _setting(1.0, "Time shift", "warp of the schedule's times t' = t / (t + s - s*t); "
                                 "above 1 more steps near noise; 1: no warp",
                                 minimum=1e-3, maximum=100.0, model_default=True)
    sampler: str = _setting("euler", "Sampler", "the ODE solver: euler (1 model call per step), heun or midpoint "
                            "(second order, 2 calls per step), dpmpp_2m (DPM-Solver++(2M), second order from "
                            "the step before, 1 call per step, at least 3 steps)", choices=SAMPLER_CHOICES,
                            model_default=True)
    schedule: str = _setting("uniform", "Schedule", "how the step times are spaced before the time shift: "
                             "uniform; sigmoid (the paper's training density of t: fine mid-way, coarse at "
                             "both ends); cosine (fine at both ends)", choices=("uniform", "sigmoid", "cosine"),
                             model_default=True)
    guidance_start: float = _setting(0.0, "Guidance from t", "guidance runs on the steps whose time t (0 noise, "
                                     "1 data) is at least this; before it only the conditional branch runs "
                                     "(one model call instead of 2-3)", minimum=0.0, maximum=1.0,
                                     ui=(0.0, 1.0, 0.05), model_default=True)
    guidance_end: float = _setting(1.0, "Guidance until t", "guidance runs on the steps whose time t is at most "
                                   "this; after it only the conditional branch runs", minimum=0.0, maximum=1.0,
                                   ui=(0.0, 1.0, 0.05), model_default=True)
    cache_threshold: float = _setting(0.0, "Step cache", "skip a step's model call and reuse the last velocity "
                                      "while its estimated relative change stays below this; 0: off (exact)",
                                      minimum=0.0, maximum=1.0, ui=(0.0, 0.5, 0.01), model_default=True)

    def __post_init__(self) -> None:
        if self.use_input_image_size_as_output is True:  # the official API's boolean means image 1
            object.__setattr__(self, "use_input_image_size_as_output", 1)
        elif self.use_input_image_size_as_output is False or self.use_input_image_size_as_output is None:
            object.__setattr__(self, "use_input_image_size_as_output", 0)

    def replace(self, **changes: Any) -> "GenerationSettings":
        """A copy with some settings changed; an unknown name is refused with the known ones."""
        unknown = sorted(set(changes) - set(setting_names()))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(setting_names())}")
        return dataclasses.replace(self, **changes)

    def check(self, max_side: int | None = None) -> "GenerationSettings":
        """Refuse any setting of the wrong type or out of range, naming it and what it may be; `max_side`: the
        largest image side the model can draw (its position table). Returns self, so calls chain."""
        for spec in fields(self):
            if spec.name not in self.unused():
                check_value(spec, getattr(self, spec.name))
        fewest = SAMPLER_MIN_STEPS[self.sampler]
        if self.num_inference_steps < fewest:
            raise ValueError(f"num_inference_steps must be at least {fewest} with sampler {self.sampler}, got "
                             f"{self.num_inference_steps}; use more steps or sampler euler")
        if self.guidance_start >= self.guidance_end:
            raise ValueError(f"guidance_start ({self.guidance_start}) must be below guidance_end "
                             f"({self.guidance_end}): guidance runs for t in [guidance_start, guidance_end], "
                             "both between 0.0 and 1.0; 0.0 and 1.0 guide every step")
        if max_side is not None:
            for name in ("height", "width"):
                if name in self.unused():
                    continue
                value = getattr(self, name)
                if value > max_side:
                    raise ValueError(f"{name} {value} is larger than this model can draw ({max_side} pixels, the size "
                                     f"of its position table); use at most {max_side}")
        return self

    def unused(self) -> tuple[str, ...]:
        """Settings this call does not use: height and width when the output takes an input image's size."""
        return ("height", "width") if self.use_input_image_size_as_output else ()

    def as_dict(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}

    def to_kwargs(self, only_reproducing: bool = False) -> dict[str, Any]:
        """Pipeline keyword arguments; `only_reproducing`: just those that decide the pixels."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)
                if spec.metadata["reproduces"] or not only_reproducing}

    @classmethod
    def from_record(cls, record: dict[str, Any], base: "GenerationSettings | None" = None) -> "GenerationSettings":
        """The settings in a PNG's record (see `record`) or any dict; names it does not know are ignored."""
        known = {name: record[name] for name in setting_names() if name in record}
        return (base or cls()).replace(**known)


def image_tokens(height: int, width: int) -> int:
    """The token slots an image of height x width pixels takes in the sequence (one per 16x16 pixels)."""
    return (height // PATCH_PIXELS) * (width // PATCH_PIXELS)


def random_seed() -> int:
    """A fresh seed for a request that names none (the one place one is drawn; it is recorded with the image)."""
    return random.SystemRandom().randrange(2**31)


def setting_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in fields(GenerationSettings))


def setting_fields() -> tuple[dataclasses.Field, ...]:
    """The settings' dataclass fields; each one's `metadata` holds label, help, range, choices, flag, ui."""
    return fields(GenerationSettings)


def setting_field(name: str) -> dataclasses.Field:
    return next(spec for spec in fields(GenerationSettings) if spec.name == name)


def value_type(spec: dataclasses.Field) -> type:
    """int, float, str or bool: the type a setting's values have (its annotation without None)."""
    text = spec.type if isinstance(spec.type, str) else spec.type.__name__
    return {"int": int, "float": float, "str": str, "bool": bool}[text.split("|")[0].strip()]


def check_value(spec: dataclasses.Field, value: Any) -> None:
    """Refuse a value of the wrong type or outside the setting's range, with what it may be."""
    meta, name, kind = spec.metadata, spec.name, value_type(spec)
    if value is None and meta["nullable"]:
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}")
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    _check_range(name, value, meta)


def _check_range(name: str, value: float, meta: Any) -> None:
    low, high, step = meta["minimum"], meta["maximum"], meta["multiple_of"]
    if low is not None and value < low or high is not None and value > high:
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {span}, got {value}")
    if step and value % step:
        lower, upper = value // step * step, value // step * step + step
        options = f"{lower} or {upper}" if lower >= (low or step) else f"{upper}"
        raise ValueError(f"{name} {value} is not a multiple of {step}; use {options}")


def parse_value(name: str, text: Any) -> Any:
    """A setting's value from text or a loosely typed value (a form, a query, JSON), checked."""
    value = read_value(name, text)
    check_value(setting_field(name), value)
    return value


def read_value(name: str, text: Any) -> Any:
    """A setting's value from text or a loosely typed value, of the setting's type but not yet checked against
    its range: a request's values are checked together (GenerationSettings.check), which leaves out the ones it
    does not use."""
    spec = setting_field(name)
    kind = value_type(spec)
    if text is None or (isinstance(text, str) and text.strip() in ("", "none", "None")) and spec.metadata["nullable"]:
        value = None
    elif kind is bool:
        value = text if isinstance(text, bool) else str(text).strip().lower() in ("1", "true", "yes", "on")
    elif kind is int:
        value = _whole_number(name, text)
    elif kind is float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {text!r}") from None
    else:
        value = str(text)
    return value


def _whole_number(name: str, text: Any) -> int:
    if isinstance(text, bool):
        return int(text)
    try:
        number = float(text) if not isinstance(text, int) else text
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"{name} must be a whole number, got {text!r}")
    return int(number)


# ----------------------------------------------------------------------------- a model's own defaults


def model_defaults(model_dir: str | Path | None, native_size: int) -> GenerationSettings:
    """The library's defaults, with the model's native size and what its folder states on top.

    A folder states defaults in `generation_config.json` (any setting marked model_default); nothing else in the
    folder sets a generation default.
    """
    stated: dict[str, Any] = {"height": native_size, "width": native_size}
    if model_dir is not None:
        stated.update(read_generation_config(Path(model_dir)))
    try:
        return GenerationSettings().replace(**stated).check()
    except ValueError as error:
        raise ValueError(f"{model_dir}: a stated generation default is not valid: {error}") from None


def read_generation_config(model_dir: Path) -> dict[str, Any]:
    """The defaults a folder states in generation_config.json: only settings a model may choose."""
    path = model_dir / GENERATION_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of settings")
    allowed = {spec.name for spec in fields(GenerationSettings) if spec.metadata["model_default"]}
    return {name: value for name, value in data.items() if name in allowed}


# ----------------------------------------------------------------------------- what a host allows


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a host, checked before any work; None: no limit but the model's own.
    The studio's flags are made from these fields; a Hugging Face Space gets `Limits.for_space()`."""

    max_image_side: int | None = field(default=None, metadata=dict(help="largest output height or width"))
    max_input_image_size: int | None = field(default=None, metadata=dict(help="largest max input image size"))
    max_prompt_chars: int | None = field(default=20_000, metadata=dict(help="longest prompt, in characters"))
    max_input_images: int | None = field(default=None, metadata=dict(help="most input images in one request"))
    max_steps: int | None = field(default=None, metadata=dict(help="most denoising steps"))
    max_images: int | None = field(default=None, metadata=dict(help="most images one request makes"))
    max_grid_cells: int | None = field(default=100, metadata=dict(help="most cells of one comparison grid"))
    max_batch_jobs: int | None = field(default=None, metadata=dict(help="most jobs of one batch in the studio"))

    @classmethod
    def for_space(cls) -> "Limits":
        """A shared host's defaults: a free CPU Space draws the embedded model in seconds within these."""
        return cls(max_image_side=1024, max_input_image_size=1024, max_prompt_chars=2_000, max_input_images=5,
                   max_steps=100, max_images=4, max_grid_cells=16, max_batch_jobs=20)

    def check(self, prompt: str, settings: GenerationSettings, num_input_images: int = 0) -> None:
        """Refuse a request over any limit, naming the limit, before anything is allocated."""
        output_side = 0 if settings.use_input_image_size_as_output else max(settings.height, settings.width)
        asked = {"max_image_side": output_side,  # else the input's size, under max_input_image_size
                 "max_input_image_size": settings.max_input_image_size, "max_prompt_chars": len(prompt or ""),
                 "max_input_images": num_input_images, "max_steps": settings.num_inference_steps,
                 "max_images": settings.num_images_per_prompt}
        what = {"max_image_side": "the output size", "max_input_image_size": "the max input image size",
                "max_prompt_chars": "the prompt's length", "max_input_images": "the number of input images",
                "max_steps": "the number of steps", "max_images": "the number of images"}
        for name, value in asked.items():
            limit = getattr(self, name)
            if limit is not None and value > limit:
                raise ValueError(f"{what[name]} ({value}) is over this server's limit of {limit} ({name}); "
                                 "ask for less")


def read_prompt_guide(model_dir: str | Path | None) -> dict[str, str]:
    """What a model folder says its prompts may ask, by language tag ({} when it says nothing). A studio shows it
    beside the prompt; a small model that knows only its own world says which."""
    path = Path(model_dir) / PROMPT_GUIDE if model_dir is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not (isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_PROMPT_GUIDE_CHARS
                                           for k, v in data.items())):
        raise ValueError(f"{path} must hold a JSON object of language tag -> text (at most "
                         f"{MAX_PROMPT_GUIDE_CHARS} characters each), e.g. {{\"en\": \"...\"}}")
    return data
