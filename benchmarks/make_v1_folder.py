"""Write a random model folder with OmniGen-v1's exact official layout and size (3,875,318,800 numbers).

    python benchmarks/make_v1_folder.py /tmp/omnigen-v1-random                 # fp32, one 15.5 GB file
    python benchmarks/make_v1_folder.py /tmp/v1-bf16 --dtype bf16 --max-shard-gb 5
    python benchmarks/make_v1_folder.py /tmp/v1-fp8 --dtype fp8                # float8 e4m3, 3.9 GB

The folder is what Shitao/OmniGen-v1 serves, with random numbers: config.json (the real one's fields, rope
factors included: omnigen.weights.OMNIGEN_V1_CONFIG), model.safetensors (or shards and their index), a BPE
tokenizer whose ids fit the 32,064-token vocabulary, and vae/ (an SDXL-config diffusers AutoencoderKL).
Every tensor is made from its own seed, so the fp32, bf16 and fp8 folders hold the same model, and written
one at a time: memory stays at one tensor (the largest, embed_tokens, is 394 MB in fp32).

Never commit such a folder; delete it when done (it is 15.5 GB in fp32).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omnigen.files import atomic_write, atomic_write_text  # noqa: E402
from omnigen.layers import sincos_pos_embed_2d  # noqa: E402
from omnigen.model import OmniGen, OmniGenConfig  # noqa: E402
from omnigen.layouts import OMNIGEN_V1_CONFIG  # noqa: E402
from omnigen.weights import SAFETENSORS_NAMES  # noqa: E402

DEVICE = "cpu"  # where the random numbers are drawn (--device cuda: seconds instead of minutes, other numbers)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}
SDXL_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.13025, force_upcast=True)
CORPUS = [
    "a photo of a cat sitting on a wooden table next to a window, soft morning light",
    "the woman in <img><|image_1|></img> wears a red dress and stands in a garden",
    "remove the car from the street; make the sky blue; turn the picture into a watercolour painting",
    "Generate an image according to the following instructions. Detect the skeleton of the person.",
    "low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly drawn "
    "hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra limbs, "
    "cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra "
    "legs, fused fingers, too many fingers.",
]


def v1_config(layers: int | None = None) -> dict:
    config = dict(OMNIGEN_V1_CONFIG)
    if layers is not None:
        config["num_hidden_layers"] = layers
    return config


def v1_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the checkpoint, from the model built on the meta device."""
    with torch.device("meta"):
        model = OmniGen.from_config(OmniGenConfig.from_dict(config))
    return {k: tuple(v.shape) for k, v in sorted(model.state_dict().items())}


def random_tensor(key: str, shape: tuple[int, ...], config: dict) -> torch.Tensor:
    """fp32 values of a trained-looking scale, the same for a key whatever the stored dtype."""
    if key == "pos_embed":  # a fixed function of the config, stored in the real checkpoint
        return torch.from_numpy(sincos_pos_embed_2d(config["hidden_size"], 192)).float()[None]
    g = torch.Generator(DEVICE).manual_seed(zlib.crc32(key.encode()))
    if key.endswith("norm.weight") or key.endswith("layernorm.weight"):
        return (1 + 0.05 * torch.randn(shape, generator=g, device=DEVICE)).cpu()
    std = 0.02 if key.endswith("weight") else 0.01
    return torch.empty(shape, device=DEVICE).normal_(0, std, generator=g).cpu()


def plan_shards(layout: dict[str, tuple], itemsize: int, max_shard_bytes: int | None) -> list[list[str]]:
    if not max_shard_bytes:
        return [list(layout)]
    shards, current, size = [], [], 0
    for key, shape in layout.items():
        nbytes = itemsize * math.prod(shape)
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(key)
        size += nbytes
    return shards + [current]


def write_safetensors(path: Path, keys: list[str], layout: dict, config: dict, dtype: torch.dtype) -> int:
    """One safetensors file written tensor by tensor (header first: offsets follow from the shapes)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key in keys:
        nbytes = dtype.itemsize * math.prod(layout[key])
        header[key] = {"dtype": SAFETENSORS_NAMES[dtype], "shape": list(layout[key]),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensors start 8-byte aligned
    with atomic_write(path) as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for key in keys:
            tensor = random_tensor(key, layout[key], config).to(dtype).contiguous()
            f.write(memoryview(tensor.view(torch.uint8).reshape(-1).numpy()))
    return 8 + len(text) + offset


def write_tokenizer(out: Path) -> None:
    from omnigen.mini.tokenizer import train_tokenizer

    train_tokenizer(CORPUS * 8, out, vocab_size=2048)
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    assert max(vocab.values()) < OMNIGEN_V1_CONFIG["vocab_size"], "tokenizer ids must fit the embedding table"


def write_vae(out: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**SDXL_VAE).save_pretrained(out / "vae", safe_serialization=True)


def make_folder(out: Path, dtype: str = "fp32", max_shard_gb: float | None = None, layers: int | None = None,
                log=print) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    config = v1_config(layers)
    layout = v1_layout(config)
    torch_dtype = DTYPES[dtype]
    shards = plan_shards(layout, torch_dtype.itemsize, int(max_shard_gb * 1e9) if max_shard_gb else None)
    start = time.perf_counter()
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    total = 0
    for name, keys in zip(names, shards):
        total += write_safetensors(out / name, keys, layout, config, torch_dtype)
        log(f"  {name}: {len(keys)} tensors, {time.perf_counter() - start:.0f} s")
    if len(shards) > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: n for n, keys in zip(names, shards) for k in keys}}
        atomic_write_text(out / "model.safetensors.index.json", json.dumps(index, indent=2))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    write_tokenizer(out)
    write_vae(out)
    numel = sum(math.prod(s) for s in layout.values())
    log(f"{out}: {numel:,} numbers in {dtype} ({total / 1e9:.2f} GB in {len(shards)} file(s)) + tokenizer + "
        f"vae/, {time.perf_counter() - start:.0f} s")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder to write (under /tmp or a scratch disk; never commit it)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="stored dtype (default fp32, as the Hub's)")
    p.add_argument("--max-shard-gb", type=float, default=None,
                   help="split into shards of at most this size plus model.safetensors.index.json "
                        "(default: one model.safetensors, as Shitao/OmniGen-v1 serves it)")
    p.add_argument("--layers", type=int, default=None, help="fewer decoder layers (default 32, the real depth)")
    p.add_argument("--device", default="cpu", help="draw the random numbers here (cuda is much faster)")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    make_folder(args.out, args.dtype, args.max_shard_gb, args.layers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
