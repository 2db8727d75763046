"""Command line: `python -m omnigen generate ...` (and `train`, see omnigen/training)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate an image from a prompt and optional input images")
    p.add_argument("--model", default=None, help="model folder or Hugging Face repo id (default: the embedded model)")
    p.add_argument("--prompt", required=True, help="text with <img><|image_k|></img> where image k goes")
    p.add_argument("--image", action="append", default=[], help="input image k, in order (repeat the flag)")
    p.add_argument("--out", default="out.png", help="output PNG; with several images: out-0.png, out-1.png, ...")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--steps", type=int, default=50, dest="num_inference_steps")
    p.add_argument("--guidance-scale", type=float, default=2.5)
    p.add_argument("--img-guidance-scale", type=float, default=1.6)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-images", type=int, default=1, dest="num_images_per_prompt")
    p.add_argument("--use-input-image-size-as-output", nargs="?", const=True, default=False, type=int,
                   help="take the output size from input image 1, or from image K when given")
    p.add_argument("--max-input-image-size", type=int, default=1024)
    p.add_argument("--cfg-mode", choices=["batched", "separate"], default="batched")
    p.add_argument("--no-kv-cache", action="store_false", dest="use_kv_cache")
    p.add_argument("--offload", choices=["model", "sequential"])
    p.add_argument("--offload-kv-cache", action="store_true")
    p.add_argument("--time-shift", type=float, default=1.0)
    p.add_argument("--lora", action="append", default=[], help="adapter folder, optionally PATH:SCALE")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"])
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from .pipeline import OmniGenPipeline
    from .png import save_png

    pipe = OmniGenPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    for spec in args.lora:
        path, _, scale = spec.rpartition(":") if spec.rpartition(":")[2].replace(".", "", 1).isdigit() else (spec, "", "1")
        pipe.load_lora(path, scale=float(scale))
    kwargs = {k: getattr(args, k) for k in (
        "height", "width", "num_inference_steps", "guidance_scale", "img_guidance_scale", "seed",
        "num_images_per_prompt", "use_input_image_size_as_output", "max_input_image_size", "cfg_mode",
        "use_kv_cache", "offload", "offload_kv_cache", "time_shift")}
    if args.negative_prompt is not None:
        kwargs["negative_prompt"] = args.negative_prompt
    out = pipe(args.prompt, args.image or None, **kwargs)
    target = Path(args.out)
    for i, (image, settings) in enumerate(zip(out.images, out.settings)):
        path = target if len(out.images) == 1 else target.with_name(f"{target.stem}-{i}{target.suffix or '.png'}")
        save_png(image, path, settings)
        print(f"{path}  {json.dumps({'seed': settings['seed'], 'size': [settings['width'], settings['height']]})}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnigen", description="OmniGen from the command line")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(subparsers)
    try:
        from .training.cli import add_train_parser
    except ImportError:
        add_train_parser = None
    if add_train_parser is not None:
        add_train_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
