"""Command line: `omnigen generate ...` (and `omnigen train ...`, see omnigen/training/cli.py).

The generation flags are made from omnigen.settings.GenerationSettings: one flag per setting, with its
help, range and choices; a flag not given takes the model folder's default, as in Python and the studio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .settings import GenerationSettings, setting_fields, value_type


def flag_of(spec) -> str:
    return spec.metadata["flag"] or "--" + spec.name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per generation setting; every default is None so that the model's defaults apply."""
    library = GenerationSettings()
    group = parser.add_argument_group("generation settings (default: the model folder's, else the library's)")
    for spec in setting_fields():
        meta, kind = spec.metadata, value_type(spec)
        default = getattr(library, spec.name)
        text = f"{meta['help']} (library default: {default!r})" if not meta["model_default"] else meta["help"]
        if spec.name == "negative_prompt":
            text = meta["help"]  # its default is long; `omnigen generate --show-settings` prints it
        if kind is bool:
            action = "store_false" if default else "store_true"
            group.add_argument(flag_of(spec), action=action, default=None, dest=spec.name, help=text)
        elif spec.name == "use_input_image_size_as_output":
            group.add_argument(flag_of(spec), nargs="?", const=1, type=int, default=None, dest=spec.name,
                               metavar="K", help="take the output size from input image 1, or from image K")
        else:
            group.add_argument(flag_of(spec), type=kind, default=None, dest=spec.name, choices=meta["choices"],
                               help=text)


def settings_from_args(args: argparse.Namespace, defaults: GenerationSettings) -> GenerationSettings:
    given = {spec.name: getattr(args, spec.name) for spec in setting_fields()
             if getattr(args, spec.name, None) is not None}
    return defaults.replace(**given)


def add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate an image from a prompt and optional input images")
    p.add_argument("--model", default=None, help="model folder or Hugging Face repo id (default: the embedded model)")
    p.add_argument("--prompt", help="text with <img><|image_k|></img> where image k goes")
    p.add_argument("--image", action="append", default=[], help="input image k, in order (repeat the flag)")
    p.add_argument("--out", default="out.png", help="output PNG; with several images: out-0.png, out-1.png, ...")
    p.add_argument("--offload", choices=["model", "sequential"], help="keep the model in CPU memory and move "
                   "each part ('model') or layer ('sequential') to the GPU only while it runs")
    p.add_argument("--lora", action="append", default=[], help="adapter folder, optionally PATH:SCALE")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--quantize", default=None, choices=["none", "int8", "fp8"],
                   help="keep the decoder's weights quantized in memory (needs torchao); --dtype is the compute dtype")
    p.add_argument("--base", default=None, help="with --model FILE.safetensors: the folder or Hub repo id that "
                   "lends the tokenizer and vae/ (e.g. Shitao/OmniGen-v1)")
    p.add_argument("--show-settings", action="store_true", help="print the settings this model uses and exit")
    add_settings_arguments(p)
    p.set_defaults(func=run_generate)


def lora_spec(spec: str) -> tuple[str, float]:
    """PATH or PATH:SCALE (a Windows drive letter or a folder name with ':' stays part of the path)."""
    path, _, scale = spec.rpartition(":")
    try:
        return (path, float(scale)) if path else (spec, 1.0)
    except ValueError:
        return spec, 1.0


def run_generate(args) -> int:
    from .pipeline import OmniGenPipeline

    if not args.prompt and not args.show_settings:
        raise ValueError("--prompt is required: the text of the request, with <img><|image_k|></img> per image")
    target = Path(args.out)
    check_output_path(target)  # before the model loads: a wrong --out must not cost a whole generation
    pipe = OmniGenPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, offload=args.offload,
                                           quantize=args.quantize, base=args.base)
    settings = pipe.settings(settings_from_args(args, pipe.default_settings))
    if args.show_settings:
        print(json.dumps(settings.as_dict(), indent=2))
        return 0
    for spec in args.lora:
        path, scale = lora_spec(spec)
        pipe.load_lora(path, scale=scale)
    out = pipe(args.prompt, args.image or None, settings)
    for i, record in enumerate(out.settings):
        path = target if len(out.images) == 1 else target.with_name(f"{target.stem}-{i}{target.suffix or '.png'}")
        try:
            out.save(path, i)
        except OSError as error:
            raise ValueError(f"--out: could not write {str(path)!r} ({error.strerror or error})") from None
        print(f"{path}  {json.dumps({'seed': record['seed'], 'size': [record['width'], record['height']]})}")
    return 0


def check_output_path(target: Path) -> None:
    """Refuse an --out that cannot be written (a file where its folder should be, no write permission)."""
    folder = target.parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out: {str(target)!r} cannot be written: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"--out: {str(target)!r} cannot be written: no permission to write in "
                                 f"{str(parent)!r}")
            break
    if target.is_dir():
        raise ValueError(f"--out: {str(target)!r} is a folder; give a file name such as {str(target / 'out.png')!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omnigen", description="OmniGen from the command line")
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
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the user reads a sentence; OMNIGEN_DEBUG=1 shows the trace
        if os.environ.get("OMNIGEN_DEBUG"):
            raise
        from .errors import user_message

        print(f"error: {user_message(error, log_unexpected=False)}", file=sys.stderr)
        return 2 if isinstance(error, (ValueError, FileNotFoundError)) else 1




if __name__ == "__main__":
    sys.exit(main())
