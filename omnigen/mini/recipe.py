"""The recipe of the embedded default model: tokenizer, VAE and transformer trained from scratch.

    python -m omnigen.mini.recipe --out assets/omnigen-mini [--work runs/omnigen-mini]

Every stage writes into the work folder and resumes from it, so an interrupted run continues where it
stopped. The result is an ordinary model folder in the OmniGen-v1 layout (config.json, model.safetensors,
tokenizer files, vae/), written to a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..files import atomic_folder, atomic_write_bytes
from .tasks.natural import CONVENTION_SENTENCE, DEFAULT_FILL, FILLS

# Families are drawn in proportion to these weights: text-to-image, edits and few-shot need the most
# examples. The weights followed the model: from step 25,675 the families it had learnt (try-on, skeleton and
# edge extraction at 95-100%) gave share to those it had not; from step 35,925 again (depth extraction had
# reached 90%; edit, depth, segmentation and few-shot were the rows short of their targets); from step 46,000
# text-to-image (98%) and try-on (98%) gave share to segmentation and few-shot; from step 56,500 (edit the only
# target row short, 76% at 50 per row, its recolours 8/15 and moves 3/6) subject, depth extraction and edges
# gave share to edits (the weights below; to 64,550 steps every other row rose and edit stayed at 74-76%); the
# same weights from 64,550 to 69,550 with the model deepened from 6 to 8 layers (edit 76% -> 79% over 4 seeds).
#   steps      0-25,675: tryon 1.5, pose_extract 1.0, depth 1.0, depth_extract 1.0, edges 1.0, edges_extract 1.0,
#                        segment 1.5, edit 3.0, fewshot 2.0
#   steps 25,675-35,925: tryon 1.0, pose_extract 0.75, depth 1.5, depth_extract 1.5, edges 1.5, edges_extract 0.75,
#                        segment 1.5, edit 3.5, fewshot 2.5
#   steps 35,925-46,000: text_to_image 3.0, tryon 0.75, segment 2.0, fewshot 3.0, edit 4.0, subject 1.5,
#                        depth_extract 1.25, edges 1.75 (the rest as below)
#   steps 46,000-56,500: text_to_image 2.5, tryon 0.5, segment 2.5, fewshot 3.5, edit 4.0, subject 1.5,
#                        depth_extract 1.25, edges 1.75 (the rest as below)
# The last three families (tasks.natural: captions that leave things out, counts, edits of uploaded pictures)
# joined the mix after step 69,550; a 6,000-step continuation with edit at 5.0 and unsaid attributes drawn at
# random learnt part of them and lost edit below its target, so it was not shipped. The continuation after it
# drew unsaid attributes by the convention (tasks.natural.FILLS), edit 5.0 for 1,500 steps (edit fell to 70%),
# then edit 7.0 (the weights below) to +6,450 (edit 76%). The shipped model's last steps continued that with
# edit 10.0 and, within edit, recolours 6.0 and moves 3.0, given to omnigen.mini.continuation as
# --family-weights and --task-weights (recipe.json keeps the exact arguments; docs/omnigen-mini.md).
FAMILY_WEIGHTS = {
    "text_to_image": 2.5, "edit": 7.0, "subject": 1.25, "tryon": 0.5, "pose": 1.0, "pose_extract": 0.5,
    "depth": 2.0, "depth_extract": 1.0, "edges": 1.5, "edges_extract": 0.5, "segment": 2.5, "restore": 1.0,
    "fewshot": 3.5, "caption": 3.5, "count": 2.5, "upload_edit": 3.0,
}
# Sub-tasks drawn in these proportions in the training pool (a sub-task not named weighs 1; the evaluation
# sets stay uniform). Until step 46,000 all were uniform. By then the few-shot row passed its extraction
# prompts 28/28 but its colour-keeping ones (background, recolour, flip) 1/22, and edits failed every move.
# Steps 46,000-56,500 drew edit moves 2.5, recolours 1.5 and few-shot recolours 2.5; after them few-shot
# recolours still passed 0/7 and edit recolours 8/15 (most failures erase the object instead); with the
# weights below, to step 64,550, the same 0/7 and 8/15.
TASK_WEIGHTS = {
    "edit": {"move": 3.0, "recolour": 3.0},
    "upload_edit": {"recolour": 2.0},
    "fewshot": {"recolour": 3.5, "flip": 2.5, "background": 2.5, "edges": 0.5, "depth": 0.5, "skeleton": 0.5},
}


# What the model's unconditional branch is trained on, and so the negative prompt it samples with (the text
# OmniGen2's pipeline uses; the tokenizer is trained on it too).
NEGATIVE_PROMPT = '(((deformed))), blurry, over saturation, bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), fused fingers, messy drawing, broken legs censor, censored, censor_bar'
# The sampling the exported folder states in generation_config.json: the settings the model was judged with at its
# defaults (midpoint over cosine-spaced times, 6 steps: 244/300 on the judge against Euler-50's 246/300, at a
# quarter of the model calls; docs/benchmarks.md), and the guidance of every evaluation.
GENERATION_DEFAULTS = {"num_inference_steps": 6, "sampler": "midpoint", "schedule": "cosine", "guidance_scale": 2.5,
                       "img_guidance_scale": 1.6}


# What the model understands, written to the folder's prompt_guide.json for the studio to show beside the prompt.
PROMPT_GUIDE = {
    "en": "This miniature model knows only its own world: circles, squares and triangles in red, orange, yellow, "
          "green, blue or purple, small or large, at the top left, top right, bottom left, bottom right or centre of "
          "a white, light grey, light blue or light yellow background, and a stick figure; and the presets' tasks. "
          f"{CONVENTION_SENTENCE[0].upper()}{CONVENTION_SENTENCE[1:]}. Anything else (\"a cat\") draws its best guess.",
    "zh-CN": "这个微型模型只认识它自己的小世界：红、橙、黄、绿、蓝、紫六种颜色的圆形、正方形和三角形，大或小，"
             "位于白色、浅灰、浅蓝或浅黄背景的左上、右上、左下、右下或中央，还有一个火柴人；以及各预设的任务。"
             "没有说明的部分按约定绘制：大号、居中（多个物体从左到右排列）、橙色或圆形、白色背景。"
             "其他内容（如“一只猫”）只会画出它的最佳猜测。",
}


@dataclass
class Recipe:
    """Every number that shapes the embedded model; written next to it as recipe.json."""

    seed: int = 0
    image_size: int = 64
    vocab_size: int = 1024
    vae_steps: int = 6000
    vae_max_minutes: float = 55.0
    vae_latent_channels: int = 8
    vae_widths: tuple = (16, 32, 64, 64)
    vae_batch_size: int = 16
    vae_lr: float = 2e-3
    vae_pool_size: int = 8000
    # Decoder-only training after the transformer's (the latents stay fixed). Counted in steps, not minutes (an
    # earlier recipe gave it 20 minutes), so the same recipe gives the same decoder on any machine and device;
    # on 2 cores of an Intel Xeon a step took 0.27 s (1,000 in 4.5 min), so 4,000 are about the old 20 minutes.
    decoder_steps: int = 4000
    hidden_size: int = 192
    # The shipped model had 6 layers to step 64,550, then was deepened to 8 by block expansion (--layers 8).
    num_hidden_layers: int = 8
    num_attention_heads: int = 6
    intermediate_size: int = 768
    pool_per_family: int = 1500
    steps: int = 12000
    batch_size: int = 32
    learning_rate: float = 5e-4
    warmup_steps: int = 300
    checkpoint_every: int = 250
    condition_dropout: float = 0.1
    image_condition_dropout: float = 0.05
    edit_weighting: bool = True
    # t = sigmoid(N(location, 1)). At 0 (the paper's choice) the model under-trained the high-noise steps where
    # a picture's layout is decided: it learnt left/right from text but ignored top/bottom. -1.0 (about SD3's
    # time shift of 3) fixed that; the shipped model switched to it at step 16,400.
    timestep_location: float = -1.0
    # How caption and count targets draw what their words leave out (tasks.natural.FILLS): the convention gives
    # the same words one right picture instead of thousands (docs/omnigen-mini.md has the measurement).
    fill: str = DEFAULT_FILL
    group_by_length: bool = True  # few-shot prompts are 3-4x longer than the rest: batch like with like
    # The transformer's matmuls in bf16 (weights and optimizer stay fp32): "auto" picks bf16 on a CUDA GPU that
    # has it and on a CPU with AMX or AVX-512 bf16 (cpu_has_fast_bf16), fp32 elsewhere. The model was trained in
    # fp32 to step 75,550; recipe.json records the precision of each later stage.
    precision: str = "auto"
    negative_prompt: str = NEGATIVE_PROMPT
    generation: dict = field(default_factory=lambda: dict(GENERATION_DEFAULTS))
    family_weights: dict = field(default_factory=lambda: dict(FAMILY_WEIGHTS))
    task_weights: dict = field(default_factory=lambda: {f: dict(w) for f, w in TASK_WEIGHTS.items()})


PRECISIONS = ("auto", "fp32", "bf16")


def mixed_precision(precision: str) -> str:
    """The trainer's mixed_precision ("no" | "bf16") for a recipe precision on this machine."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_has_fast_bf16() else "no"
    return "bf16" if precision == "bf16" else "no"


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX-512 bf16 instructions: bf16 matmuls run faster than fp32 there (1.77x per step with AMX,
    1.40x on an AMD EPYC with AVX-512 bf16; benchmarks/bench_train.py). Without either they run ten times slower."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported",
                                                                          "_is_avx512_bf16_supported"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seed_stages_from(folder: Path, work: Path) -> None:
    """Continue from an exported model folder: its tokenizer and VAE become the work folder's finished stages.

    A transformer initialised from a folder only makes sense with that folder's tokenizer (its embedding rows
    are indexed by those token ids) and VAE (its latent space), so --init-from takes all three together.
    Stages the work folder already has are kept.
    """
    tokenizer_dir, vae_dir = work / "tokenizer", work / "vae-training" / "vae"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        tokenizer_dir.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, tokenizer_dir / name)
        log(f"tokenizer taken from {folder}")
    if not (vae_dir / "config.json").is_file():
        shutil.copytree(folder / "vae", vae_dir)
        log(f"VAE taken from {folder}")


def train_tokenizer_stage(recipe: Recipe, work: Path) -> Path:
    from .tasks import corpus
    from .tokenizer import train_tokenizer

    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        log("training the tokenizer")
        train_tokenizer(corpus(400, recipe.seed) + [recipe.negative_prompt] * 20, folder, recipe.vocab_size)
    return folder


def train_vae_stage(recipe: Recipe, work: Path) -> Path:
    from .autoencoder import world_images
    from .vae_training import train_vae

    folder = work / "vae-training"
    if not (folder / "vae" / "config.json").is_file():
        log(f"training the VAE ({recipe.vae_steps} steps or {recipe.vae_max_minutes} min)")
        metrics = train_vae(world_images, folder, recipe.vae_steps, batch_size=recipe.vae_batch_size,
                            lr=recipe.vae_lr, seed=recipe.seed, resume=True, max_seconds=recipe.vae_max_minutes * 60,
                            latent_channels=recipe.vae_latent_channels, widths=recipe.vae_widths,
                            pool_size=recipe.vae_pool_size,
                            callback=lambda logs: log(f"vae step {logs['step']} loss {logs['loss']:.4f} "
                                                      f"psnr {logs['batch_psnr']:.1f} dB"))
        log(f"VAE: {metrics['psnr']} dB held-out PSNR after {metrics['steps']} steps")
    return folder / "vae"


def sample_pool(recipe: Recipe) -> list:
    """A fixed, seeded pool of training examples; latents are encoded once for it."""
    from ..training import Example
    from .tasks import FILLED_FAMILIES, make_sample

    rng = random.Random(f"pool-{recipe.seed}")
    total = sum(recipe.family_weights.values())
    examples = []
    for family, weight in recipe.family_weights.items():
        count = round(recipe.pool_per_family * len(recipe.family_weights) * weight / total)
        fill = recipe.fill if family in FILLED_FAMILIES else None
        for _ in range(count):
            s = make_sample(family, rng, split="train", task_weights=recipe.task_weights.get(family), fill=fill)
            examples.append(Example(s.instruction, list(s.input_images), s.output_image))
    random.Random(recipe.seed).shuffle(examples)
    return examples


def _png(image) -> bytes:
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _unpng(data: bytes):
    import io

    from PIL import Image
    return Image.open(io.BytesIO(data)).convert("RGB")


def pool_path(recipe: Recipe, work: Path) -> Path:
    """Where the rendered pool is kept: named by everything `sample_pool` reads from the recipe, so a change
    of seed, size or family or sub-task weights renders a new pool instead of silently reusing the old one."""
    import hashlib

    weights = json.dumps([sorted(recipe.family_weights.items()), recipe.task_weights, recipe.fill],
                         sort_keys=True).encode()
    return work / f"pool-{recipe.seed}-{recipe.pool_per_family}-{hashlib.sha256(weights).hexdigest()[:8]}.pkl"


def load_or_build_pool(recipe: Recipe, work: Path) -> list:
    """The pool, rendered once and kept as PNG bytes in the work folder (rendering is the slow part)."""
    import pickle

    from ..training import Example

    path = pool_path(recipe, work)
    if not path.is_file():
        log(f"rendering the training pool ({recipe.pool_per_family} per family on average)")
        rows = [(e.instruction, [_png(i) for i in e.input_images], _png(e.output_image)) for e in sample_pool(recipe)]
        atomic_write_bytes(path, pickle.dumps(rows))
    rows = pickle.loads(path.read_bytes())
    log(f"pool: {len(rows)} examples")
    return [Example(text, [_unpng(b) for b in inputs], _unpng(output)) for text, inputs, output in rows]


def model_config(recipe: Recipe, tokenizer_dir: Path, latent_channels: int) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = (len(tokenizer) + 63) // 64 * 64
    head_dim = recipe.hidden_size // recipe.num_attention_heads
    return {
        "architectures": ["OmniGen"], "model_type": "phi3", "hidden_size": recipe.hidden_size,
        "num_hidden_layers": recipe.num_hidden_layers, "num_attention_heads": recipe.num_attention_heads,
        "num_key_value_heads": recipe.num_attention_heads, "intermediate_size": recipe.intermediate_size,
        "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        # Phi-3 'su' scaling with unit factors: the same code path as OmniGen-v1, plain RoPE in effect.
        "rope_scaling": {"type": "su", "short_factor": [1.0] * (head_dim // 2), "long_factor": [1.0] * (head_dim // 2)},
        "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "patch_size": 2, "in_channels": latent_channels,
        "pos_embed_max_size": 32, "native_image_size": recipe.image_size,
        "max_input_image_size": recipe.image_size,
    }


def train_transformer_stage(recipe: Recipe, work: Path, tokenizer_dir: Path, vae_dir: Path,
                            init_from: Path | None, max_minutes: float | None, stop_at_step: int | None = None):
    from ..model import OmniGen
    from ..processor import OmniGenProcessor
    from ..training import TrainConfig, latest_checkpoint, train
    from ..vae import load_vae
    from ..weights import load_transformer

    vae = load_vae(vae_dir.parent)
    config = model_config(recipe, tokenizer_dir, vae.config.latent_channels)
    torch.manual_seed(recipe.seed)
    if init_from:
        model = load_transformer(init_from).requires_grad_(True)
        have = model.config.num_hidden_layers
        if recipe.num_hidden_layers < have:
            raise ValueError(f"{init_from} has {have} decoder layers; --layers {recipe.num_hidden_layers} would drop "
                             "trained ones (give at least that many)")
        if recipe.num_hidden_layers > have:  # deepened by block expansion: it starts computing what it did
            expand_depth(model, recipe.num_hidden_layers)
            log(f"expanded the transformer from {have} to {recipe.num_hidden_layers} layers (new layers start as identities)")
    else:
        model = OmniGen.from_config(config)
    processor = OmniGenProcessor.from_pretrained(tokenizer_dir, max_input_image_size=recipe.image_size,
                                                 pad_token_id=config["pad_token_id"])
    precision = mixed_precision(recipe.precision)
    log(f"transformer: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters "
        f"(mixed precision: {precision}); building the pool")
    examples = load_or_build_pool(recipe, work)
    out_dir = work / "transformer"
    start = time.time()
    stop = StopAfter(max_minutes, work / "STOP", stop_at_step)
    train_config = TrainConfig(
        out_dir=str(out_dir), steps=recipe.steps, batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate, warmup_steps=recipe.warmup_steps, lr_schedule="cosine",
        weight_decay=0.01, condition_dropout=recipe.condition_dropout,
        image_condition_dropout=recipe.image_condition_dropout, edit_weighting=recipe.edit_weighting,
        timestep_location=recipe.timestep_location,
        checkpoint_every=recipe.checkpoint_every, keep_checkpoints=2, log_every=25, seed=recipe.seed,
        encode_latents_once=True, group_by_length=recipe.group_by_length, resume=latest_checkpoint(out_dir) is not None,
        mixed_precision=precision, unconditional_prompt=recipe.negative_prompt)

    def report(event: dict) -> None:
        stop.check(event.get("step"))
        if event["type"] == "step":
            log(f"step {event['step']}/{recipe.steps} loss {event['loss']:.4f} lr {event['lr']:.2e} "
                f"eta {event.get('eta_s', 0) / 60:.0f} min")
        elif event["type"] == "checkpoint":
            log(f"checkpoint {event['path']}")
        elif event["type"] == "latents":
            how = f"read from {event['loaded_from']}" if event["loaded_from"] else "encoded"
            log(f"{event['count']} latents at {event['size']} px {how} in {event['seconds']:.0f} s")

    result = train(model, vae, processor, examples, train_config, callback=report, stop=stop.event)
    if stop.stop_file.exists():  # honoured: the next run must not stop at its first step
        stop.stop_file.unlink()
    log(f"transformer stage: step {result.step} in {(time.time() - start) / 60:.1f} min "
        f"({'stopped early' if result.stopped else 'complete'})")
    return model.eval().requires_grad_(False), config, result


def decoder_stage(recipe: Recipe, vae_dir: Path) -> None:
    """Fine-tune the VAE decoder for `recipe.decoder_steps` steps; the encoder stays fixed.

    It runs after the transformer, not beside it: on two cores the two side by side made the transformer
    three times slower (1.7 vs 0.55 s/step) for a decoder at one step per 0.5 s. The pictures are
    `decoder_images`: outputs of every family, held-out pairs and the segmentation marker included. It
    checkpoints, so an interrupted run continues where it stopped, and a finished one is not repeated.
    """
    from .autoencoder import decoder_images
    from .vae_training import finetune_decoder

    if recipe.decoder_steps < 1:
        return
    log(f"fine-tuning the VAE decoder for {recipe.decoder_steps} steps (the latents the transformer learnt stay fixed)")

    def report(logs: dict) -> None:
        log(f"decoder step {logs['step']} loss {logs['loss']:.4f} batch PSNR {logs['batch_psnr']:.2f} dB")

    metrics = finetune_decoder(vae_dir.parent, decoder_images, recipe.decoder_steps, batch_size=recipe.vae_batch_size,
                               seed=recipe.seed, pool_size=recipe.vae_pool_size, log_every=500, callback=report)
    log(f"decoder: {metrics['psnr']} dB held-out PSNR after {metrics['steps']} steps ({metrics['seconds'] / 60:.1f} min)")


class StopAfter:
    """A stop event that fires once a time budget is spent, a step is reached (checked at logged steps) or a STOP
    file appears in the work folder."""

    def __init__(self, minutes: float | None, stop_file: Path, at_step: int | None = None):
        import threading
        self.event = threading.Event()
        self.deadline = time.time() + minutes * 60 if minutes else None
        self.stop_file = stop_file
        self.at_step = at_step

    def check(self, step: int | None = None) -> None:
        if ((self.deadline is not None and time.time() > self.deadline) or self.stop_file.exists()
                or (self.at_step is not None and step is not None and step >= self.at_step)):
            self.event.set()


def export(model, config: dict, tokenizer_dir: Path, vae_dir: Path, out: Path, recipe: Recipe, result,
           init_from: Path | None = None, lineage: dict | None = None) -> None:
    """Write the whole model folder the studio loads next to `out` (generation_config.json included), then swap it
    into place. `lineage`: the record of what this run continued (by default `init_from`'s recipe.json)."""
    from ..weights import save_transformer

    model.config.extra.update({k: v for k, v in config.items() if k in ("architectures", "model_type",
                                                                           "bos_token_id", "eos_token_id",
                                                                           "max_input_image_size")})
    record = {"recipe": asdict(recipe), "mixed_precision": mixed_precision(recipe.precision), "trained_steps": result.step,
              "stopped_early": result.stopped}
    if lineage is not None:
        record["continued_from"] = lineage
    elif init_from is not None:  # the lineage: what this run continued, as that folder's own record says
        record["continued_from"] = read_lineage(init_from)
    with atomic_folder(out) as folder:
        for item in tokenizer_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, folder / item.name)
        shutil.copytree(vae_dir, folder / "vae")
        save_transformer(model, folder)
        (folder / "generation_config.json").write_text(json.dumps(generation_config(recipe), indent=2) + "\n")
        (folder / "prompt_guide.json").write_text(json.dumps(PROMPT_GUIDE, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        (folder / "recipe.json").write_text(json.dumps(record, indent=2))
    log(f"wrote {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MB)")


def generation_config(recipe: Recipe) -> dict:
    """The defaults the folder states: the recipe's sampling, the negative prompt the model was trained on, and
    inputs brought to the native size the model was trained at."""
    return {"negative_prompt": recipe.negative_prompt, **recipe.generation, "max_input_image_size": recipe.image_size}


def read_lineage(folder: Path) -> dict | str:
    """What a model folder was made by: its recipe.json, or the folder's name when it has none."""
    earlier = folder / "recipe.json"
    return json.loads(earlier.read_text()) if earlier.is_file() else str(folder)


def expand_depth(model, num_layers: int):
    """Deepen a trained model in place to `num_layers` decoder layers without changing what it computes.

    Block expansion: each new layer is a copy of the layer it follows, with its attention output and
    feed-forward down projections zeroed, so it adds nothing to the residual stream until training moves
    those two projections away from zero. The zeroed projections get gradients from the first step (they
    see the copied layer's activations), the rest of the copy from the step after. The new layers
    are spread evenly: growing 6 layers to 8 puts one after layer 3 and one after layer 6 (1-based).
    """
    import copy
    from collections import Counter

    from torch import nn

    layers = model.llm.layers
    old = len(layers)
    if num_layers < old:
        raise ValueError(f"cannot expand a {old}-layer model to {num_layers} layers; give at least {old}")
    extra = num_layers - old
    if extra == 0:
        return model
    # The existing layer each copy follows: evenly spaced from the last one back (with more new layers than old
    # ones, every layer gets copies and the later ones one more).
    copies = Counter(old - 1 - (k * old) // extra for k in range(extra))
    grown = []
    for i, layer in enumerate(layers):
        grown.append(layer)
        for _ in range(copies[i]):
            new = copy.deepcopy(layer)
            with torch.no_grad():
                new.self_attn.o_proj.weight.zero_()
                new.mlp.down_proj.weight.zero_()
            grown.append(new)
    model.llm.layers = nn.ModuleList(grown)
    model.config.num_hidden_layers = num_layers
    return model


def build(recipe: Recipe, out: Path, work: Path, init_from: Path | None = None,
          max_minutes: float | None = None, stop_at_step: int | None = None, lineage: dict | None = None) -> Path:
    """Every stage in order, each resumed from `work`; the model folder lands at `out`."""
    work.mkdir(parents=True, exist_ok=True)
    if init_from:
        seed_stages_from(init_from, work)
    tokenizer_dir = train_tokenizer_stage(recipe, work)
    vae_dir = train_vae_stage(recipe, work)
    model, config, result = train_transformer_stage(recipe, work, tokenizer_dir, vae_dir, init_from, max_minutes,
                                                    stop_at_step)
    if result.stopped:
        log("decoder fine-tuning skipped: the transformer stage was stopped early (a rerun continues both)")
    else:
        decoder_stage(recipe, vae_dir)
    export(model, config, tokenizer_dir, vae_dir, out, recipe, result, init_from, lineage)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/omnigen-mini")
    parser.add_argument("--work", default="runs/omnigen-mini", help="resumable intermediate state")
    parser.add_argument("--steps", type=int, help=f"transformer steps (default {Recipe.steps})")
    parser.add_argument("--max-minutes", type=float, help="stop the transformer stage after this long and export")
    parser.add_argument("--learning-rate", type=float,
                        help=f"peak learning rate of the cosine schedule (default {Recipe.learning_rate}); a lower one "
                             "suits a continuation with --init-from, which starts its own schedule at step 0")
    parser.add_argument("--init-from", type=Path,
                        help="continue from an exported model folder: its tokenizer and VAE are taken as finished "
                             "stages (unless the work folder has its own) and the transformer starts from its weights")
    parser.add_argument("--decoder-steps", type=int,
                        help=f"steps of VAE-decoder fine-tuning after the transformer (default {Recipe.decoder_steps}); "
                             "0 skips it")
    parser.add_argument("--layers", type=int,
                        help=f"decoder layers (default {Recipe.num_hidden_layers}); with --init-from a deeper value "
                             "adds layers to the trained model by block expansion (copies whose output projections "
                             "start at zero)")
    parser.add_argument("--precision", choices=PRECISIONS, default=Recipe.precision,
                        help="the transformer's matmul precision: auto = bf16 on a GPU that has it and on a CPU with "
                             "AMX or AVX-512 bf16 (1.4-1.8x faster there), else fp32")
    parser.add_argument("--pool-per-family", type=int,
                        help=f"training examples per task family on average (default {Recipe.pool_per_family})")
    parser.add_argument("--stop-at-step", type=int,
                        help="stop the transformer stage once it reaches this step (a multiple of 25) and export; the "
                             "learning-rate schedule still runs to --steps, so a later run with the same --work resumes it")
    parser.add_argument("--fill", choices=FILLS, default=Recipe.fill,
                        help="how caption and count targets draw what their words leave out (default: the convention)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-only", action="store_true", help="only render the training pool, then exit")
    parser.add_argument("--threads", type=int, help="torch threads (1 is faster on a busy 2-core machine)")
    args = parser.parse_args(argv)
    recipe = Recipe(seed=args.seed, precision=args.precision, fill=args.fill)
    if args.steps:
        recipe.steps = args.steps
    if args.learning_rate:
        recipe.learning_rate = args.learning_rate
    if args.layers:
        recipe.num_hidden_layers = args.layers
    if args.pool_per_family:
        recipe.pool_per_family = args.pool_per_family
    if args.decoder_steps is not None:
        recipe.decoder_steps = args.decoder_steps
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.pool_only:
        work.mkdir(parents=True, exist_ok=True)
        load_or_build_pool(recipe, work)
        return 0
    build(recipe, Path(args.out), work, args.init_from, args.max_minutes, args.stop_at_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
