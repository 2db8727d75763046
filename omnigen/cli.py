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
            group.add_argument(flag_of(spec), action="store_false" if default else "store_true", default=None,
                               dest=spec.name, help=flag_text(spec, default))
        elif spec.name == "use_input_image_size_as_output":
            group.add_argument(flag_of(spec), nargs="?", const=1, type=int, default=None, dest=spec.name,
                               metavar="K", help="take the output size from input image 1, or from image K")
        else:
            group.add_argument(flag_of(spec), type=kind, default=None, dest=spec.name, choices=meta["choices"],
                               help=text)


def flag_text(spec, default: bool) -> str:
    """A switch's help says what giving it does: a setting that is on by default has a --no- flag with its own
    text (the setting's help describes the setting, which the flag turns off)."""
    return spec.metadata["flag_help"] if default else f"{spec.metadata['help']} (off unless given)"


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
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: CUDA when available, then "
                   "Apple MPS, else the CPU)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="compute dtype (default: bfloat16 on CUDA, or float16 on a GPU without bfloat16; float32 "
                   "elsewhere; auto: float16 on Apple MPS too)")
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


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model a grid or a batch loads, where, and with which adapters."""
    p.add_argument("--model", default=None, help="model folder or Hugging Face repo id (default: the embedded model)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps, cpu (default: the best available)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CUDA, float32 elsewhere")
    p.add_argument("--lora", action="append", default=[], help="adapter folder, optionally PATH:SCALE (repeat the "
                   "flag); a grid's lora:NAME axis varies the strength of the adapter named NAME (its folder's name)")


def add_grid_parser(subparsers) -> None:
    from .grid import axis_names

    p = subparsers.add_parser("grid", help="a comparison grid: one picture per value (or pair of values) of one or "
                              "two axes, and one labelled image of them all")
    p.add_argument("--prompt", default="", help="text with <img><|image_k|></img> where image k goes (not needed "
                   "when an axis is the prompt)")
    p.add_argument("--image", action="append", default=[], help="input image k, in order (repeat the flag)")
    axes = ", ".join(axis_names())
    p.add_argument("--x", required=True, metavar="AXIS=VALUES", help=f"the axis across: {axes}, image_K or "
                   "lora:NAME, then '=' and its values: a list (1,2,3; prompts and files separated by '|') or, for "
                   "numbers, a range START..END:COUNT")
    p.add_argument("--y", default=None, metavar="AXIS=VALUES", help="the axis down (optional), written as --x")
    p.add_argument("--out", default="grid.png", help="the grid image; each cell's PNG goes to OUT-cells/")
    p.add_argument("--max-cells", type=int, default=None, help="refuse a grid of more cells (default: "
                   "omnigen.settings.Limits' max_grid_cells; 0: no limit)")
    add_model_arguments(p)
    add_settings_arguments(p)
    p.set_defaults(func=run_grid_command)


def axis_argument(flag: str, text: str | None):
    from .grid import parse_axis

    if text is None:
        return None
    name, sep, values = text.partition("=")
    if not sep:
        raise ValueError(f"{flag} {text!r}: write AXIS=VALUES, e.g. {flag} seed=0,1,2")
    return parse_axis(name, values)


def run_grid_command(args) -> int:
    from .grid import DEFAULT_MAX_CELLS, grid_description, run_grid, save_grid, with_paths
    from .pipeline import OmniGenPipeline

    x, y = axis_argument("--x", args.x), axis_argument("--y", args.y)  # refused before the model loads
    if not args.prompt.strip() and "prompt" not in (x.name, y and y.name):
        raise ValueError("--prompt is required (unless an axis is the prompt: --x 'prompt=a red circle|a blue square')")
    target = Path(args.out)
    check_output_path(target)
    pipe = OmniGenPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    for spec in args.lora:
        path, scale = lora_spec(spec)
        pipe.load_lora(path, scale=scale)
    settings = pipe.settings(settings_from_args(args, pipe.default_settings))
    report = lambda cell: print(f"{cell.caption}: {cell.error or 'done'}", file=sys.stderr)  # noqa: E731
    limit = DEFAULT_MAX_CELLS if args.max_cells is None else args.max_cells or None
    grid = run_grid(pipe, args.prompt, args.image, settings, x=x, y=y, max_cells=limit, on_cell=report)
    with_paths(grid.cells, target.with_name(f"{target.stem}-cells"))
    save_grid(grid.image, target, grid_description(grid.cells, x, y))
    print(target)
    return 1 if any(cell.error for cell in grid.cells) else 0


def add_batch_parser(subparsers) -> None:
    p = subparsers.add_parser("batch", help="many jobs from a JSONL file (or one instruction over a folder of "
                              "pictures) into one folder; resumable; `accelerate launch -m omnigen batch` shares the "
                              "jobs out over processes")
    p.add_argument("source", help="a JSONL file, one job a line ({\"prompt\": ..., \"images\": [...], any "
                   "setting}), or a folder of pictures (with --instruction)")
    p.add_argument("--out", required=True, help="the output folder: NAME.png per job, results.jsonl, log/")
    p.add_argument("--instruction", default=None, help="with a folder: what to do to every picture, e.g. 'make the "
                   "background white'")
    add_model_arguments(p)
    add_settings_arguments(p)
    p.set_defaults(func=run_batch_command)


def run_batch_command(args) -> int:
    from tqdm.auto import tqdm

    from . import batch
    from .pipeline import OmniGenPipeline

    source = Path(args.source)
    if args.instruction and not source.is_dir():
        raise ValueError("--instruction goes with a folder of pictures; a jobs file gives each job its prompt")
    jobs = (batch.folder_jobs(source, args.instruction) if source.is_dir()
            else batch.read_jobs(source))  # every job checked before the model loads
    out = Path(args.out)
    check_output_path(out / batch.RESULTS)
    group = batch.process_group()
    pipe = OmniGenPipeline.from_pretrained(args.model, device=group.device or args.device, dtype=args.dtype)
    for spec in args.lora:
        path, scale = lora_spec(spec)
        pipe.load_lora(path, scale=scale)
    base = pipe.settings(settings_from_args(args, pipe.default_settings))
    files = [batch.output_path(out, job) for job in jobs]
    bar = tqdm(total=len(jobs), initial=sum(f.is_file() for f in files), unit="job", disable=group.rank != 0)

    failed = []

    def follow(job, error) -> None:
        if error:
            failed.append(job)
            tqdm.write(f"{job.source}: {error}", file=sys.stderr)
        bar.n = sum(f.is_file() for f in files)  # every process's pictures: one bar for the whole batch
        bar.refresh()

    batch.run_batch(pipe, jobs, out, base, group.rank, group.world, on_job=follow)
    group.wait()
    bar.n = sum(f.is_file() for f in files)
    bar.close()
    if group.rank == 0:
        results = batch.write_results(out, jobs, base)
        print(f"{results}: {batch.count_done(out, jobs, base)} of {len(jobs)} done")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omnigen", description="OmniGen from the command line")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_generate_parser(subparsers)
    add_grid_parser(subparsers)
    add_batch_parser(subparsers)
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
