"""How long one generation at the native size takes with the embedded model, for text-to-image and for an edit
with one input image, in two settings: 30 steps with the settings in PINNED (whatever a folder states as its
defaults, so that the figure means the same thing from one model to the next; the budget: under 1 s on 2 CPU
cores), and the settings the folder states in its generation_config.json, printed beside the time (what a user
gets by default; the budget: under 0.5 s on 2 CPU cores).

    python benchmarks/bench_mini.py [--model DIR ...] [--runs 7] [--threads 2]

With several --model folders the runs are interleaved, so a busy machine slows them alike and their ratio
stays meaningful. The first run of each is a warm-up and is not counted; the median of the rest is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_S = 1.0
DEFAULTS_BUDGET_S = 0.5
# What is timed: 30 Euler steps over uniform times, guided everywhere at 2.5 / 1.6, no step cache.
PINNED = dict(sampler="euler", schedule="uniform", time_shift=1.0, guidance_scale=2.5, img_guidance_scale=1.6,
              guidance_start=0.0, guidance_end=1.0, cache_threshold=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=[str(ROOT / "assets" / "omnigen-mini")])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch

    from omnigen import OmniGenPipeline
    from omnigen.mini.tasks import generate

    torch.set_num_threads(args.threads)
    pipes = {m: OmniGenPipeline.from_pretrained(m) for m in args.model}
    edit = generate("edit", 1, 0, "eval")[0]
    cases = {
        "text-to-image": dict(prompt="a large red circle at the top left and a small blue square at the bottom "
                                     "right on a white background"),
        "edit, one input image": dict(prompt=edit.instruction, input_images=[list(edit.input_images)]),
    }
    modes = {"pinned": dict(num_inference_steps=args.steps, **PINNED), "defaults": {}}
    times = {(m, c, mode): [] for m in pipes for c in cases for mode in modes}
    for run in range(args.runs + 1):
        for case, kwargs in cases.items():
            for mode, settings in modes.items():
                for model, pipe in pipes.items():
                    size = pipe.native_size
                    started = time.perf_counter()
                    pipe(**kwargs, height=size, width=size, seed=run, progress=False, **settings)
                    if run:
                        times[(model, case, mode)].append(time.perf_counter() - started)
    print(f"at the native size, {args.threads} threads, median of {args.runs}")
    for model, pipe in pipes.items():
        layers = pipe.transformer.config.num_hidden_layers
        d = pipe.default_settings
        stated = (f"{d.sampler}, {d.schedule} spacing, {d.num_inference_steps} steps, guidance {d.guidance_scale} / "
                  f"{d.img_guidance_scale}")
        print(f"  {model} ({layers} layers, {pipe.native_size} px)")
        for mode, label in (("pinned", f"{args.steps} steps, {PINNED} (budget {BUDGET_S:.1f} s)"),
                            ("defaults", f"the folder's defaults: {stated} (budget {DEFAULTS_BUDGET_S:.1f} s)")):
            cells = "  ".join(f"{case}: {statistics.median(times[(model, case, mode)]):.3f} s" for case in cases)
            print(f"    {label}\n      {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
