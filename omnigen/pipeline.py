"""OmniGenPipeline: load a model folder, turn requests into latents, sample, decode.

    pipe = OmniGenPipeline.from_pretrained("assets/omnigen-mini")
    out = pipe("<img><|image_1|></img> make the red circle blue", [Image.open("scene.png")], seed=0)
    out.images[0].save("edited.png"); out.settings[0]  # everything that made it
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import vae as vae_io
from .model import OmniGen
from .png import generation_record, save_png
from .processor import OmniGenProcessor, PromptBranches, collate
from .sampler import ConditionBatch, SamplingPlan, StepCallback, denoise, plan_sampling
from .settings import (DEFAULT_MODEL, LATENT_PIXELS, GenerationSettings, image_tokens, model_defaults, random_seed,
                       read_prompt_guide)
from .weights import (ModelFolderError, has_config, infer_config, is_weights_file, load_config, load_transformer,
                      open_checkpoint, resolve_model_dir)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
OFFLOAD_MODES = (None, "model", "sequential")


def default_model() -> str:
    """The embedded model, unless OMNIGEN_MODEL names another folder or Hub id."""
    return os.environ.get("OMNIGEN_MODEL") or str(DEFAULT_MODEL)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None: bf16 on CUDA (fp16 on a GPU without bf16), fp32 elsewhere. 'auto': the same, and fp16 on MPS."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype in names:
        return names[dtype]
    if dtype not in (None, "auto"):
        raise ValueError(f"dtype must be one of auto, {', '.join(names)}; got {dtype!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps" and dtype == "auto":
        return torch.float16
    return torch.float32


FRAGILE_MODULES = ("RMSNorm", "TimestepEmbedder", "FinalLayer")  # fp16 overflows in these


def keep_fragile_parts_in_fp32(model: OmniGen) -> None:
    """fp16 overflows in norms, the time embedding and the output layer: keep those in fp32 (from_pretrained
    reads them from the file in fp32 already; this upcasts a model built otherwise)."""
    for module in model.modules():
        if type(module).__name__ in FRAGILE_MODULES:
            module.float()


@dataclass
class OmniGenOutput:
    images: list[Any]
    settings: list[dict] = field(default_factory=list)  # per image: what made it (see png.generation_record)

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Write image `index` as a PNG that carries its settings (the same file the CLI and studio write)."""
        return save_png(self.images[index], path, self.settings[index])


class OmniGenPipeline:
    """Generation from interleaved text-and-image prompts with one OmniGen model folder."""

    def __init__(self, transformer: OmniGen, vae, processor: OmniGenProcessor, device: torch.device,
                 dtype: torch.dtype, model_id: str = "", default_settings: GenerationSettings | None = None):
        self.transformer, self.vae, self.processor = transformer, vae, processor
        self.device, self.dtype, self.model_id = device, dtype, model_id
        native = transformer.config.native_image_size
        # What a call uses for every setting it does not give: the library's, the model's size and its folder's.
        self.default_settings = default_settings or model_defaults(None, native)
        self.offload: str | None = None
        self.progress_bar_config: dict = {}
        self.loras: dict[str, float] = {}
        self.prompt_guide: dict[str, str] = {}  # what the model understands, by language (its folder's prompt_guide.json)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike | None = None, device=None, dtype=None,
                        offload: str | None = None, quantize: str | None = None,
                        base: str | os.PathLike | None = None) -> "OmniGenPipeline":
        """Load a model folder (official or diffusers layout), a Hub repo id, or a single .safetensors file
        (then `base`, a folder or repo id, lends the tokenizer and vae/); the embedded model by default.
        `quantize`: None, 'int8' or 'fp8' (weights kept quantized in memory, see omnigen.quantize)."""
        from .quantize import check_quantize

        model_id = os.fspath(path_or_repo_id) if path_or_repo_id is not None else default_model()
        device = pick_device(device)
        dtype = pick_dtype(dtype, device)
        quantize = check_quantize(quantize, device, dtype)  # before any download or read
        if is_weights_file(model_id):
            source = Path(os.path.expanduser(model_id))
            if not source.is_file():
                raise ModelFolderError(f"weights file not found: {model_id!r}")
            if base is None:
                raise ModelFolderError(f"{model_id} is a single weights file: it has no tokenizer nor VAE. Name a "
                                       "model folder or Hub repo id that has them with base=... (--base on the "
                                       "command line), e.g. base='Shitao/OmniGen-v1'")
            model_dir = resolve_model_dir(base, weights=False)
            base_config = load_config(model_dir) if has_config(model_dir) else None
            with open_checkpoint(source) as checkpoint:
                config = infer_config(checkpoint, base_config)
        else:
            source = model_dir = resolve_model_dir(model_id)
            config = load_config(model_dir)
        transformer = load_transformer(source, dtype=dtype, device=device, quantize=quantize, config=config,
                                       keep_in_fp32=FRAGILE_MODULES if dtype == torch.float16 else ())
        if dtype == torch.float16:
            keep_fragile_parts_in_fp32(transformer)
        vae_dtype = torch.float32 if dtype == torch.float16 else dtype
        vae = vae_io.load_vae(model_dir, dtype=vae_dtype, device=device)
        if vae.config.latent_channels != config.in_channels:
            raise ValueError(f"{model_dir}: the VAE has {vae.config.latent_channels} latent channels but the "
                             f"transformer expects {config.in_channels}")
        processor = OmniGenProcessor.from_pretrained(model_dir)
        defaults = model_defaults(model_dir, config.native_image_size)
        pipe = cls(transformer, vae, processor, device, dtype, model_id=model_id, default_settings=defaults)
        pipe.prompt_guide = read_prompt_guide(model_dir)
        pipe.quantize = quantize
        pipe.set_offload(offload)
        return pipe

    @property
    def native_size(self) -> int:
        return self.transformer.config.native_image_size

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options for the step bar, e.g. disable=True."""
        self.progress_bar_config = kwargs

    # LoRA adapters (omnigen/lora.py, imported here so that peft loads only when adapters are used).
    # `self.loras` (name -> scale of the adapters that change the output) goes into every image's settings.

    def load_lora(self, path: str | os.PathLike, name: str | None = None, scale: float = 1.0) -> str:
        """Attach a LoRA adapter folder (peft layout; the official OmniGen fine-tuning output loads as is) and
        return its name, by default the folder's. One for another base model is refused, nothing changed."""
        from . import lora
        name = lora.load_lora(self.transformer, path, name=name, scale=scale)
        self.loras = lora.active_lora_scales(self.transformer)
        return name

    def set_lora_scales(self, scales: dict[str, float]) -> None:
        """Scale each named adapter; 0 switches it off."""
        from . import lora
        lora.set_lora_scales(self.transformer, scales)
        self.loras = lora.active_lora_scales(self.transformer)

    def unload_lora(self, name: str | None = None) -> None:
        """Remove one adapter, or all of them: the transformer is the base model again."""
        from . import lora
        lora.unload_lora(self.transformer, name)
        self.loras = lora.active_lora_scales(self.transformer)

    def merge_lora(self) -> None:
        """Fold the active adapters into the weights so that steps cost what the base costs."""
        from . import lora
        lora.merge_lora(self.transformer)

    def unmerge_lora(self) -> None:
        from . import lora
        lora.unmerge_lora(self.transformer)

    @property
    def max_image_side(self) -> int:
        """The largest image side the model can draw or read: its position table times 16 pixels per patch."""
        config = self.transformer.config
        return config.pos_embed_max_size * config.patch_size * LATENT_PIXELS

    def settings(self, settings: GenerationSettings | None = None, **changes: Any) -> GenerationSettings:
        """`settings` (the model's defaults when None) with `changes`, checked against this model."""
        return (settings or self.default_settings).replace(**changes).check(self.max_image_side)

    def set_offload(self, mode: str | None) -> None:
        """None, 'model' (only the running part on the accelerator) or 'sequential' (layers streamed one by one).
        A pipeline-wide choice, made between calls: concurrent calls share one placement of the modules."""
        if mode not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of none, model, sequential; got {mode!r}")
        self.offload = mode
        self.place_for("idle")

    def __call__(self, prompt: str | Sequence, input_images: Sequence | None = None,
                 settings: GenerationSettings | None = None, *, latents: torch.Tensor | None = None,
                 callback: StepCallback | None = None, output_type: str = "pil", progress: bool = True,
                 **changes: Any) -> OmniGenOutput:
        """Generate one or more images. `prompt` is a string, an interleaved list of str/PIL parts, or a list
        of either; `input_images` gives one list of images per prompt (or one list for a single prompt).
        `settings` (default: the model's, see `default_settings`) and keyword changes to it, such as
        `seed=0, num_inference_steps=30`, say how: see omnigen.settings.GenerationSettings."""
        generator = changes.pop("seed") if isinstance(changes.get("seed"), torch.Generator) else None
        s = self.settings(settings, **changes)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        # Every branch a prompt may need; its sampling plan decides which ones run.
        requests = self.processor(prompt, input_images, height=s.height, width=s.width,
                                  negative_prompt=s.negative_prompt, use_img_guidance=True,
                                  use_input_image_size_as_output=s.use_input_image_size_as_output or False,
                                  max_input_image_size=s.max_input_image_size)
        jobs = [(i, r) for i, r in enumerate(requests) for _ in range(s.num_images_per_prompt)]
        seeds = [None] * len(jobs) if generator is not None else image_seeds(s.seed, len(jobs))
        if latents is not None and latents.shape[0] != len(jobs):
            raise ValueError(f"latents has {latents.shape[0]} rows for {len(jobs)} images")
        results: list[Any] = [None] * len(jobs)
        bar = tqdm(total=len(jobs) * s.num_inference_steps, **{"disable": not progress, **self.progress_bar_config})
        try:
            for group in group_jobs(jobs):
                noise = None if latents is None else latents[group]
                first = jobs[group[0]][1]
                plan = plan_sampling(s, bool(first.cond.images), offload_kv_cache=self.device.type == "cuda")
                out = self.generate_group([jobs[j][1] for j in group], [seeds[j] for j in group], noise, s.cfg_mode,
                                          plan, callback, bar, generator)
                for j, image in zip(group, self.postprocess(out, output_type)):
                    results[j] = image
        finally:
            bar.close()
            self.place_for("idle")
        records = [generation_record(s, r.prompt, len(r.cond.images), r.height, r.width, seeds[j], self)
                   for j, (_, r) in enumerate(jobs)]
        return OmniGenOutput(images=results, settings=records)

    def generate_group(self, requests: list[PromptBranches], seeds: list[int | None], noise, cfg_mode: str,
                       plan: SamplingPlan, callback, bar, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample images that share an output size and whether they have input images, by one plan."""
        first = requests[0]
        if noise is None:
            noise = initial_noise(len(requests), self.transformer.config.in_channels,
                                  first.height // LATENT_PIXELS, first.width // LATENT_PIXELS, seeds, generator)
        self.place_for("vae")
        rows = branch_rows(requests, plan.branches)
        n = len(requests)
        layout = [rows] if cfg_mode == "batched" else [rows[k * n:(k + 1) * n] for k in range(plan.branches)]
        batches = [self.condition_batch(part, image_tokens(first.height, first.width)) for part in layout]
        self.place_for("transformer")
        with torch.inference_mode():
            return denoise(self.transformer, noise.to(self.device), batches, plan, callback, bar)

    @torch.inference_mode()
    def condition_batch(self, prompts, num_output_tokens: int) -> ConditionBatch:
        pad = self.transformer.config.pad_token_id or 0
        data = collate(prompts, num_output_tokens, pad)
        latents, seen = [], {}
        for image in data["input_images"]:  # the same picture in several branches is encoded once
            key = (image.data_ptr(), tuple(image.shape))
            if key not in seen:
                seen[key] = vae_io.encode(self.vae, image, sample=False).to(self.dtype)
            latents.append(seen[key])
        to = lambda t: t.to(self.device)  # noqa: E731
        return ConditionBatch(to(data["input_ids"]), to(data["attention_mask"]), to(data["position_ids"]),
                              data["input_image_sizes"], [to(l) for l in latents], len(prompts))

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels (B, 3, H, W) in [0, 1]."""
        self.place_for("vae")
        return vae_io.decode(self.vae, latents)

    def postprocess(self, latents: torch.Tensor, output_type: str) -> list:
        if output_type == "latent":
            return list(latents.cpu())
        pixels = self.decode(latents)
        if output_type == "pt":
            return list(pixels.cpu())
        if output_type == "np":
            return list(pixels.permute(0, 2, 3, 1).cpu().numpy())
        return vae_io.to_pil(pixels)

    def place_for(self, stage: str) -> None:
        """With offload='model' only the running part sits on the accelerator; 'sequential' streams layers."""
        if self.device.type == "cpu" or self.offload is None:
            return
        if self.offload == "model":
            self.vae.to(self.device if stage == "vae" else "cpu")
            self.transformer.to(self.device if stage == "transformer" else "cpu")
        elif self.offload == "sequential":
            stream_layers(self.transformer, self.device, enabled=stage != "idle")
            self.vae.to(self.device if stage == "vae" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def branch_rows(requests: list[PromptBranches], branches: int) -> list:
    """[cond x n][uncond x n][image-only x n], as combine_guidance expects."""
    rows = [r.cond for r in requests]
    if branches >= 2:
        rows += [r.uncond for r in requests]
    if branches == 3:
        rows += [r.img_cond for r in requests]
    return rows


def group_jobs(jobs: list[tuple[int, PromptBranches]]) -> list[list[int]]:
    """Indices of images that can share a batch: same output size, and input images or none (the same plan)."""
    groups: dict[tuple, list[int]] = {}
    for j, (_, r) in enumerate(jobs):
        groups.setdefault((r.height, r.width, bool(r.cond.images)), []).append(j)
    return list(groups.values())


def image_seeds(seed, count: int) -> list[int | None]:
    """One seed per image: seed, seed+1, ...; a fresh random seed when none is given."""
    if seed is None:
        seed = random_seed()
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative whole number or a torch.Generator, got {seed!r}")
    return [seed + i for i in range(count)]


def initial_noise(count: int, channels: int, height: int, width: int, seeds: list[int | None],
                  generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise drawn on the CPU per image, so a seed gives the same start on every device."""
    rows = []
    for seed in seeds:
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        rows.append(torch.randn(1, channels, height, width, generator=g, device=g.device).cpu())
    return torch.cat(rows).float()


def stream_layers(model: OmniGen, device: torch.device, enabled: bool) -> None:
    """Keep decoder layers on the CPU and move each to `device` only while it runs."""
    handles = getattr(model, "_stream_handles", [])
    for handle in handles:
        handle.remove()
    model._stream_handles = []
    for name, module in model.named_children():
        if name != "llm":
            module.to(device if enabled else "cpu")
    model.pos_embed.data = model.pos_embed.data.to(device if enabled else "cpu")
    model.llm.embed_tokens.to(device if enabled else "cpu")
    model.llm.norm.to(device if enabled else "cpu")
    for layer in model.llm.layers:
        layer.to("cpu")
        if enabled:
            model._stream_handles.append(layer.register_forward_pre_hook(lambda m, a: m.to(device)))
            model._stream_handles.append(layer.register_forward_hook(lambda m, a, o: m.to("cpu")))
