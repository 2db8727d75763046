"""`python -m omnigen train`: train a LoRA adapter (or, with --full, every weight) from the command line, with a
progress bar and the loss.

    python -m omnigen train --data data.jsonl --images ROOT --out adapters/NAME --steps 500 --rank 8
    python -m omnigen generate --lora adapters/NAME/adapter --prompt "..."
    python -m omnigen train --full --data data.jsonl --out runs/NAME --steps 2000 --lr 1e-5 --mixed-precision bf16

`--data` is a JSONL file in the official format or a folder of images with same-named .txt instructions.
On several GPUs: `accelerate launch -m omnigen train ...` (docs/training.md: DDP and FSDP configs); each
process trains on its own share of every step's examples and the gradients are averaged. Ctrl-C stops after the current step with a
checkpoint (a second Ctrl-C stops at once); `--resume` continues from it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import MISSING, fields, replace

from ..settings import value_type
from .checkpoints import latest_checkpoint, saved_lora_settings
from .config import LoraSettings, TrainConfig, config_fields, flag_of


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a LoRA adapter (or --full: every weight) on a JSONL file or a "
                                            "folder of images + .txt",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="base model folder or Hugging Face repo id (default: the embedded "
                                                 "model, or OMNIGEN_MODEL)")
    p.add_argument("--data", required=True, help="a .jsonl file, or a folder of images with same-named .txt files")
    p.add_argument("--images", default=None, help="folder the JSONL's image paths start from (default: its folder)")
    p.add_argument("--out", required=True, help=setting_help(TrainConfig, "out_dir"))
    p.add_argument("--full", action="store_true", help="fine-tune every weight of the transformer instead of a LoRA "
                   "adapter; each checkpoint is then a model folder that OmniGenPipeline.from_pretrained loads")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    lora = p.add_argument_group("LoRA (with --resume: the run's own, unless given)")
    for spec in config_fields(LoraSettings):
        if spec.metadata["cli"]:
            add_setting_flag(lora, spec, default=None)
    run = p.add_argument_group("training settings (omnigen.training.TrainConfig)")
    for spec in config_fields(TrainConfig):
        if spec.metadata["cli"]:
            add_setting_flag(run, spec, default=spec.default if spec.default is not MISSING else [])
    p.set_defaults(func=run_train)


def setting_help(owner: type, name: str) -> str:
    return next(spec for spec in fields(owner) if spec.name == name).metadata["help"]


def add_setting_flag(group, spec, default) -> None:
    """One flag of a training setting: its help, type, choices and default, from the field."""
    meta = spec.metadata
    shown = getattr(LoraSettings(), spec.name) if default is None and spec.name in LORA_NAMES else default
    text = meta["help"] if shown is None or shown is False or shown == [] else f"{meta['help']} (default: {shown})"
    if spec.type == "bool":
        group.add_argument(flag_of(spec), action="store_true", dest=spec.name, help=meta["help"])
    elif spec.type == "list[str]":
        group.add_argument(flag_of(spec), action="append", default=None, dest=spec.name, help=text)
    else:
        group.add_argument(flag_of(spec), type=value_type(spec), choices=meta["choices"], default=default,
                           dest=spec.name, help=text)


LORA_NAMES = {spec.name for spec in fields(LoraSettings)}


def lora_from_args(args) -> LoraSettings:
    """The LoRA flags given, the rest from the run being resumed (or the defaults)."""
    checkpoint = latest_checkpoint(args.out) if args.resume else None
    base = (saved_lora_settings(checkpoint) if checkpoint is not None else None) or LoraSettings()
    given = {spec.name: getattr(args, spec.name) for spec in config_fields(LoraSettings) if spec.metadata["cli"]}
    return replace(base, **{k: v for k, v in given.items() if v is not None}, name=LoraSettings.name,
                   base_model=None)


def lora_flags_given(args) -> list[str]:
    return [flag_of(spec) for spec in config_fields(LoraSettings)
            if spec.metadata["cli"] and getattr(args, spec.name) is not None]


def config_from_args(args) -> TrainConfig:
    settings = {spec.name: getattr(args, spec.name) for spec in config_fields(TrainConfig) if spec.metadata["cli"]}
    settings["validation_prompts"] = list(settings["validation_prompts"] or [])
    return TrainConfig(out_dir=args.out, **settings, lora=None if args.full else lora_from_args(args))


class ProgressReport:
    """Training events -> a tqdm bar with the loss, and a line per checkpoint and per set of samples."""

    def __init__(self, total_steps: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr,
                        disable=not is_main_process())
        self.started = False

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "step":
            if not self.started:  # a resumed run starts where its checkpoint was
                self.bar.n = self.bar.last_print_n = event["step"] - 1
                self.started = True
            self.bar.update(event["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
        elif kind == "checkpoint":
            self.bar.write(f"step {event['step']}: checkpoint {event['path']}"
                           + (f", adapter {event['adapter']}" if event.get("adapter") else ""))
        elif kind == "samples":
            self.bar.write(f"step {event['step']}: samples {', '.join(event['paths'])}")
        elif kind == "latents":
            how = "read back" if event["loaded_from"] else "encoded"
            self.bar.write(f"{event['count']} image latents at {event['size']} px {how} in {event['seconds']:.1f} s")

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event):
    """The first Ctrl-C asks the trainer to stop after the current step; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def is_main_process() -> bool:
    """Under `accelerate launch` every process runs this command; only the first one reports."""
    return int(os.environ.get("RANK", "0")) == 0


def run_train(args) -> int:
    import torch

    from .lora_training import train_lora

    if args.threads:
        torch.set_num_threads(args.threads)
    lora_flags = lora_flags_given(args)
    if args.full and lora_flags:
        raise ValueError(f"{', '.join(lora_flags)} set(s) a LoRA adapter, which --full does not train; drop one or the "
                         "other")
    config = config_from_args(args)
    config.check()  # a bad setting is reported before the model loads
    report, stop = ProgressReport(config.steps), threading.Event()
    started = time.monotonic()
    try:
        with stop_on_interrupt(stop):
            trainer = train_full if args.full else train_lora
            result = trainer(args.model, args.data, config, callback=report, stop=stop, image_root=args.images)
    finally:
        report.close()
    if not is_main_process():
        return 0
    loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
    state = "stopped" if result.stopped else "done"
    print(f"{state} at step {result.step}/{config.steps} in {time.monotonic() - started:.0f} s, loss {loss}")
    if args.full and result.checkpoint is not None:
        print(f"model: {result.checkpoint}  (a model folder: python -m omnigen generate --model {result.checkpoint})")
    if result.adapter is not None:
        print(f"adapter: {result.adapter}  (python -m omnigen generate --lora {result.adapter} --prompt ...)")
    for path in result.samples:
        print(f"sample: {path}")
    return 0


def train_full(model, data, config: TrainConfig, callback=None, stop: threading.Event | None = None,
               image_root=None):
    """Fine-tune every weight of a model folder or Hub id (None: the default model). The weights load in fp32
    whatever --mixed-precision says: AdamW updates need fp32 masters, autocast computes in bf16/fp16. Under
    FSDP with cpu_ram_efficient_loading only the main process reads them (see load_pipeline_for_training)."""
    from .dataset import open_training_data
    from .lora_training import load_pipeline_for_training, with_model_defaults
    from .trainer import train

    dataset = open_training_data(data, image_root)
    if hasattr(dataset, "validate"):
        dataset.validate()  # before a model is loaded: a bad line costs nothing
    pipe = load_pipeline_for_training(model, config)
    return train(pipe.transformer, pipe.vae, pipe.processor, dataset, with_model_defaults(config, pipe),
                 callback=callback, stop=stop)
