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
from dataclasses import replace

from .checkpoints import latest_checkpoint, saved_lora_settings
from .config import LORA_TARGETS, MIXED_PRECISION, LoraSettings, TrainConfig


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a LoRA adapter (or --full: every weight) on a JSONL file or a "
                                            "folder of images + .txt",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="base model folder or Hugging Face repo id (default: the embedded "
                                                 "model, or OMNIGEN_MODEL)")
    p.add_argument("--data", required=True, help="a .jsonl file, or a folder of images with same-named .txt files")
    p.add_argument("--images", default=None, help="folder the JSONL's image paths start from (default: its folder)")
    p.add_argument("--out", required=True, help="run folder; the adapter goes to OUT/adapter")
    p.add_argument("--full", action="store_true", help="fine-tune every weight of the transformer instead of a LoRA "
                   "adapter; each checkpoint is then a loadable transformer folder (model.safetensors + config.json)")
    lora = p.add_argument_group("LoRA (with --resume: the run's own, unless given)")
    lora.add_argument("--rank", type=int, default=None, help=f"default {LoraSettings.rank}")
    lora.add_argument("--alpha", type=float, default=None, help="default: the rank")
    lora.add_argument("--lora-dropout", type=float, default=None, help=f"default {LoraSettings.dropout}")
    lora.add_argument("--targets", choices=list(LORA_TARGETS), default=None, help=f"default {LoraSettings.targets}")
    run = p.add_argument_group("optimisation")
    run.add_argument("--steps", type=int, default=500)
    run.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3, as in the official LoRA "
                                                           "example)")
    run.add_argument("--batch-size", type=int, default=1, help="examples per step and process")
    run.add_argument("--grad-accumulation", type=int, default=1)
    run.add_argument("--warmup-steps", type=int, default=0)
    run.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    run.add_argument("--resolution", type=int, default=None, help="longest image side in pixels (default: the "
                                                                   "model's max_input_image_size)")
    run.add_argument("--condition-dropout", type=float, default=0.1)
    run.add_argument("--image-condition-dropout", type=float, default=0.1)
    run.add_argument("--edit-weighting", action="store_true", help="weight the changed parts of edits (paper, 2.3)")
    run.add_argument("--timestep-location", type=float, default=0.0,
                     help="t = sigmoid(N(location, 1)); below 0 trains more at high noise, where layout is decided")
    run.add_argument("--mixed-precision", choices=list(MIXED_PRECISION), default="no")
    run.add_argument("--gradient-checkpointing", action="store_true")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    out = p.add_argument_group("checkpoints and samples")
    out.add_argument("--checkpoint-every", type=int, default=100, help="0: only at the end")
    out.add_argument("--keep-checkpoints", type=int, default=0, help="0 keeps all")
    out.add_argument("--resume", action="store_true", help="continue the run in OUT from its latest checkpoint")
    out.add_argument("--validation-prompt", action="append", default=[], help="sampled during training (repeat)")
    out.add_argument("--sample-every", type=int, default=0, help="steps between samples; 0: only at the end")
    out.add_argument("--sample-steps", type=int, default=20, help="inference steps per sample")
    out.add_argument("--sample-guidance-scale", type=float, default=2.5)
    out.add_argument("--log-every", type=int, default=1)
    p.set_defaults(func=run_train)


def lora_from_args(args) -> LoraSettings:
    """The LoRA flags given, the rest from the run being resumed (or the defaults)."""
    checkpoint = latest_checkpoint(args.out) if args.resume else None
    base = (saved_lora_settings(checkpoint) if checkpoint is not None else None) or LoraSettings()
    given = {"rank": args.rank, "alpha": args.alpha, "targets": args.targets, "dropout": args.lora_dropout}
    return replace(base, **{k: v for k, v in given.items() if v is not None}, name=LoraSettings.name, base_model=None)


def config_from_args(args) -> TrainConfig:
    return TrainConfig(
        out_dir=args.out, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule, grad_accumulation=args.grad_accumulation,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        condition_dropout=args.condition_dropout, image_condition_dropout=args.image_condition_dropout,
        edit_weighting=args.edit_weighting, timestep_location=args.timestep_location,
        resolution_stages=[(0, args.resolution)] if args.resolution else None,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        seed=args.seed, resume=args.resume,
        lora=None if args.full else lora_from_args(args),
        validation_prompts=list(args.validation_prompt), sample_every=args.sample_every,
        sample_steps=args.sample_steps, sample_guidance_scale=args.sample_guidance_scale)


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
    lora_flags = [flag for flag, value in (("--rank", args.rank), ("--alpha", args.alpha), ("--targets", args.targets),
                                           ("--lora-dropout", args.lora_dropout)) if value is not None]
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
        print(f"model: {result.checkpoint}  (a transformer folder: omnigen.weights.load_transformer)")
    if result.adapter is not None:
        print(f"adapter: {result.adapter}  (python -m omnigen generate --lora {result.adapter} --prompt ...)")
    for path in result.samples:
        print(f"sample: {path}")
    return 0


def train_full(model, data, config: TrainConfig, callback=None, stop: threading.Event | None = None,
               image_root=None):
    """Fine-tune every weight of a model folder or Hub id (None: the default model). The weights load in fp32
    whatever --mixed-precision says: AdamW updates need fp32 masters, autocast computes in bf16/fp16."""
    import torch

    from ..pipeline import OmniGenPipeline
    from .dataset import open_training_data
    from .trainer import train

    dataset = open_training_data(data, image_root)
    if hasattr(dataset, "validate"):
        dataset.validate()  # before a model is loaded: a bad line costs nothing
    pipe = OmniGenPipeline.from_pretrained(model, device="cpu", dtype=torch.float32)
    if config.resolution_stages is None:
        config.resolution_stages = [(0, pipe.transformer.config.extra.get("max_input_image_size", 1024))]
    return train(pipe.transformer, pipe.vae, pipe.processor, dataset, config, callback=callback, stop=stop)
