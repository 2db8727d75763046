"""Seconds per training step of the embedded model's transformer, fp32 against bf16 mixed precision.

    python benchmarks/bench_train.py [--steps 30] [--rounds 2] [--threads 2] [--init scratch|shipped]

It trains the recipe's transformer (8 layers, batch 32, the recipe's data mix) on a small pool rendered for the
run, in both precisions, interleaved round by round so a busy machine slows them alike. "scratch" starts from
the recipe's initialisation (the rebuild's case, learning rate 5e-4), "shipped" from assets/omnigen-mini (a
continuation, 1e-4). It prints the median seconds per step (the first three steps of each run are not counted),
the ratio, and each run's mean loss over its first and last ten steps, so a precision that learns worse shows.
On a CPU with AMX, bf16 runs the linear layers 5-9x faster; attention stays in fp32 there (omnigen/layers.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", choices=("scratch", "shipped"), default="scratch")
    parser.add_argument("--pool-per-family", type=int, default=40)
    args = parser.parse_args()

    import torch

    from omnigen.mini.recipe import Recipe, mixed_precision, sample_pool
    from omnigen.model import OmniGen
    from omnigen.processor import OmniGenProcessor
    from omnigen.training import TrainConfig, train
    from omnigen.vae import load_vae
    from omnigen.weights import load_transformer

    torch.set_num_threads(args.threads)
    shipped = ROOT / "assets" / "omnigen-mini"
    recipe = Recipe(pool_per_family=args.pool_per_family)
    examples = sample_pool(recipe)
    vae = load_vae(shipped)
    processor = OmniGenProcessor.from_pretrained(shipped, max_input_image_size=recipe.image_size)
    config = json.loads((shipped / "config.json").read_text())  # the recipe's shape, freshly initialised
    print(f"{len(examples)} examples, batch {recipe.batch_size}, {args.threads} threads, "
          f"--precision auto here: {mixed_precision('auto')}, "
          f"init: {args.init}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    seconds: dict[str, list[float]] = {"no": [], "bf16": []}
    try:
        for round_ in range(args.rounds):
            for precision in seconds:
                out = work / f"{precision}-{round_}"
                if (work / "latent-cache").exists():  # encoded once, in the first run
                    shutil.copytree(work / "latent-cache", out / "latent-cache")
                torch.manual_seed(recipe.seed)
                model = (load_transformer(shipped) if args.init == "shipped"
                         else OmniGen.from_config(config)).requires_grad_(True)
                train_config = TrainConfig(
                    out_dir=str(out), steps=args.steps, batch_size=recipe.batch_size,
                    learning_rate=1e-4 if args.init == "shipped" else recipe.learning_rate, warmup_steps=5,
                    lr_schedule="constant", weight_decay=0.01, condition_dropout=recipe.condition_dropout,
                    image_condition_dropout=recipe.image_condition_dropout, edit_weighting=recipe.edit_weighting,
                    timestep_location=recipe.timestep_location, checkpoint_every=0, log_every=1, seed=recipe.seed,
                    encode_latents_once=True, group_by_length=recipe.group_by_length, mixed_precision=precision)
                stamps: list[float] = []
                result = train(model, vae, processor, examples, train_config,
                               callback=lambda e: stamps.append(time.perf_counter()) if e["type"] == "step" else None)
                if not (work / "latent-cache").exists():
                    shutil.copytree(out / "latent-cache", work / "latent-cache")
                steps = [b - a for a, b in zip(stamps, stamps[1:])][3:]
                seconds[precision] += steps
                losses = [loss for _, loss in result.losses]
                print(f"round {round_} {precision:>4}: {statistics.median(steps):.3f} s/step; loss first ten "
                      f"{statistics.mean(losses[:10]):.4f}, last ten {statistics.mean(losses[-10:]):.4f}", flush=True)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fp32, bf16 = (statistics.median(seconds[p]) for p in ("no", "bf16"))
    print(f"median s/step: fp32 {fp32:.3f}, bf16 {bf16:.3f}; bf16 is {fp32 / bf16:.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
