"""`python app.py [--model DIR_OR_REPO] [--device] [--dtype] [--offload model|sequential] [--host] [--port] [--share]
[--no-train]`

Loads one OmniGenPipeline (the embedded model, or $OMNIGEN_MODEL, or --model) and serves the studio: the
Generate tab and the LoRA Train tab (app/train_tab.py). On Hugging Face Spaces the defaults are right as
they are: Spaces sets GRADIO_SERVER_NAME/PORT, OMNIGEN_MODEL picks the model, and the Train tab is off
there unless OMNIGEN_DISABLE_TRAINING=0 (visitors must not tie up a shared model with training).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="OmniGen Studio: generate and edit images "
                                "from prompts of interleaved text and pictures, in the browser")
    p.add_argument("--model", default=None,
                   help="model folder or Hugging Face repo id (default: $OMNIGEN_MODEL or the embedded model)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps, cpu (default: the best available)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CUDA, float32 elsewhere")
    p.add_argument("--quantize", default=None, choices=["none", "int8", "fp8"],
                   help="keep the model's weights quantized in memory (needs torchao)")
    p.add_argument("--base", default=None, help="with --model FILE.safetensors: the folder or Hub repo id that "
                   "lends the tokenizer and vae/")
    p.add_argument("--offload", choices=["model", "sequential"], default=None,
                   help="the page's default offload (saves GPU memory, slower)")
    p.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--concurrency", type=int, default=1,
                   help="GPU jobs (generate, train) that may run at once; more need more memory (default 1)")
    p.add_argument("--queue-size", type=int, default=64, help="jobs that may wait in the queue (default 64)")
    p.add_argument("--max-file-size", default="20mb", help="largest upload accepted (default 20mb)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1 for a small model on the CPU, else torch's choice)")
    p.add_argument("--no-train", action="store_true",
                   help="leave out the LoRA Train tab (also: OMNIGEN_DISABLE_TRAINING=1), e.g. on a shared host")
    p.add_argument("--output-dir", default=str(Path(tempfile.gettempdir()) / "omnigen-studio"),
                   help="where results are written; the only folder the page serves files from")
    p.add_argument("--history-limit", type=int, default=200, metavar="N",
                   help="runs kept in each browser's history (in the output folder); older ones are deleted with "
                        "their pictures (default 200; 0: keep all)")
    p.add_argument("--allow-server-adapters", action="store_true",
                   help="let the page load LoRA adapters from folders on this server (off by default; always off "
                        "on a Hugging Face Space)")
    add_limit_arguments(p)
    args = p.parse_args(argv)
    args.limits = host_limits(args)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.history_limit < 0:
        p.error("--history-limit must be 0 (keep all) or more")
    if args.model is None:  # resolved here so that --help does not wait for torch to import
        from omnigen.pipeline import default_model

        args.model = default_model()
    return args


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per field of omnigen.settings.Limits; 0 lifts a limit."""
    from dataclasses import fields

    from omnigen.settings import Limits

    group = p.add_argument_group("what one request may ask (defaults: none but the model's own, prompts of at "
                                 "most 20,000 characters, grids of at most 100 cells; on a Hugging Face Space: "
                                 "Limits.for_space())")
    for spec in fields(Limits):
        group.add_argument("--" + spec.name.replace("_", "-"), type=int, default=None, metavar="N",
                           help=spec.metadata["help"] + " (0: no limit)")


def host_limits(args: argparse.Namespace):
    """This server's limits: a Space's safe defaults or none, with the flags given on top."""
    from dataclasses import fields, replace

    from omnigen.settings import Limits

    base = Limits.for_space() if os.environ.get("SPACE_ID") else Limits()
    given = {spec.name: getattr(args, spec.name) for spec in fields(Limits) if getattr(args, spec.name) is not None}
    return replace(base, **{name: value or None for name, value in given.items()})


def load_studio(args: argparse.Namespace):
    from omnigen.pipeline import OmniGenPipeline

    from .engine import Studio

    pipe = OmniGenPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize,
                                           base=args.base)
    return Studio(pipe, args.output_dir, concurrency_limit=args.concurrency, default_offload=args.offload,
                  threads=args.threads, limits=args.limits, allow_server_adapters=args.allow_server_adapters,
                  history_limit=args.history_limit)


def studio_tabs(args: argparse.Namespace, extra_tabs: Sequence = ()) -> list:
    """The tab builders after Generate: the Train tab unless switched off, then `extra_tabs`."""
    from .train_tab import build_train_tab, training_disabled

    train = [] if args.no_train or training_disabled() else [build_train_tab]
    return train + [builder for builder in extra_tabs if builder is not build_train_tab]


def main(argv: Sequence[str] | None = None, extra_tabs: Sequence = ()) -> None:
    """Parse flags, load the model, launch. `extra_tabs`: more tab builders, see app.ui.build_app."""
    args = parse_args(argv)
    try:
        studio = load_studio(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: could not load the model {args.model!r}: {error}", file=sys.stderr)
        if not os.environ.get("OMNIGEN_MODEL") and not Path(args.model).exists():
            print("hint: pass --model DIR_OR_REPO or set OMNIGEN_MODEL (e.g. Shitao/OmniGen-v1); the embedded "
                  "model is made by `python -m omnigen.mini.recipe --out assets/omnigen-mini`", file=sys.stderr)
        sys.exit(2)
    from .ui import build_app, launch_options

    demo = build_app(studio, studio_tabs(args, extra_tabs))
    demo.queue(max_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port,
                **launch_options(studio, max_file_size=args.max_file_size, share=args.share))


if __name__ == "__main__":
    main()
