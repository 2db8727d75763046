"""Memory and time of training, measured: full fine-tuning under FSDP, and gradient checkpointing.

    # a few steps of full fine-tuning under FSDP on every GPU (benchmarks/gpu_fsdp.sh builds the folder and data)
    accelerate launch --use_fsdp --num_processes N ... benchmarks/bench_fsdp.py train MODEL DATA OUT --steps 4
    # gradient checkpointing on and off on a small model: kept activations, peak memory, time per step, gradients
    python benchmarks/bench_fsdp.py checkpointing [--model FOLDER] [--size 256] [--batch 2]

`train` prints, per process, the peak GPU memory (torch.cuda.max_memory_allocated) and the seconds per step
after the first (which gathers and warms up). `checkpointing` prints the bytes the autograd graph keeps for
backward (every tensor saved for backward, counted once per storage: what checkpointing removes), the peak
memory where a GPU can measure it, the seconds per step, and the largest difference between the two runs'
gradients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_train(args) -> None:
    from omnigen.training import TrainConfig
    from omnigen.training.cli import train_full

    times: list[float] = []

    def on_event(event: dict) -> None:
        if event["type"] == "step":
            times.append(time.perf_counter())

    config = TrainConfig(out_dir=args.out, steps=args.steps, batch_size=1, learning_rate=1e-5,
                         mixed_precision=args.precision, gradient_checkpointing=True, resolution=args.resolution,
                         checkpoint_every=0, condition_dropout=0.0, image_condition_dropout=0.0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train_full(args.model, args.data, config, callback=on_event)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")
    per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else float("nan")
    print(f"rank {rank}/{world}: peak GPU memory {peak:.2f} GB, {per_step:.2f} s/step after the first "
          f"({len(times)} steps, {time.perf_counter() - started:.0f} s with loading and the final checkpoint)",
          flush=True)


def kept_bytes(run) -> int:
    """Bytes of the tensors autograd keeps for backward while `run()` builds its graph (each storage once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = run()
    loss.backward()
    return sum(storages.values())


def run_checkpointing(args) -> None:
    from omnigen import OmniGenPipeline

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = OmniGenPipeline.from_pretrained(args.model, device=device, dtype=torch.float32)
    model = pipe.transformer.train().requires_grad_(True)
    latent = args.size // 8
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, model.config.in_channels, latent, latent, generator=generator).to(device)
    t = torch.rand(args.batch, generator=generator).to(device)
    ids = torch.randint(10, 200, (args.batch, 24), generator=generator).to(device)

    def step() -> torch.Tensor:
        velocity, _ = model(x, t, input_ids=ids)
        return velocity.float().pow(2).mean()

    results = {}
    for enabled in (False, True):
        model.enable_gradient_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        kept = kept_bytes(step)
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            step().backward()
        seconds = (time.perf_counter() - started) / args.repeats
        peak = f", peak {torch.cuda.max_memory_allocated() / 1e6:.1f} MB" if device == "cuda" else ""
        results[enabled] = (kept, seconds, grads)
        print(f"gradient checkpointing {'on ' if enabled else 'off'}: kept for backward {kept / 1e6:.1f} MB{peak}, "
              f"{seconds * 1000:.0f} ms/step ({args.batch} x {args.size}px on {device})")
    off, on = results[False][2], results[True][2]
    print(f"largest gradient difference on vs off: {max((off[n] - on[n]).abs().max().item() for n in off):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="a few steps of full fine-tuning (under FSDP when so launched)")
    train.add_argument("model")
    train.add_argument("data")
    train.add_argument("out")
    train.add_argument("--steps", type=int, default=4)
    train.add_argument("--resolution", type=int, default=512)
    train.add_argument("--precision", default="bf16", choices=["no", "bf16", "fp16"])
    check = commands.add_parser("checkpointing", help="gradient checkpointing on and off on a small model")
    check.add_argument("--model", default=str(ROOT / "assets" / "omnigen-mini"))
    check.add_argument("--size", type=int, default=256)
    check.add_argument("--batch", type=int, default=2)
    check.add_argument("--repeats", type=int, default=3)
    check.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    run_train(args) if args.command == "train" else run_checkpointing(args)


if __name__ == "__main__":
    main()
