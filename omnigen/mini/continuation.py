"""A continuation of the embedded model that survives interruption and ships each improvement.

    python -m omnigen.mini.continuation --work runs/continuation --init-from assets/omnigen-mini \\
        --steps 16000 --learning-rate 1e-4 [--segment-minutes 10] [recipe flags...]

It trains in segments of `--segment-minutes`. After each one the transformer's checkpoint is exported as a
candidate folder (work/candidate) and a small fixed evaluation subset (`--probe-per-family` prompts of every row,
the first prompts of the full evaluation's sets) is logged to work/progress.jsonl and printed, so a falling row
shows within minutes. When the probe reads every old row within `--probe-slack` of its target and the new rows
above the shipped model's, the candidate is judged at 50 per row (omnigen.mini.ship) and replaces the shipped
model if it beats it. A kill loses at most the steps since the last checkpoint: rerun the same command and it
resumes from work/transformer. `touch work/FINISH` ends the run after the current segment and its probe;
`touch work/STOP` also cuts the segment short.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..files import atomic_write_text
from . import recipe as recipe_module
from . import ship
from .tasks import SUB_TASKS


def probe_promising(probe: dict[str, float], shipped: dict[str, float], slack: float) -> bool:
    """Whether a probe read justifies the full 50-per-row judgement."""
    # Rates are counts over the probe's size: compare them with a margin far below one sample (0.7 >= 0.8 - 0.1
    # is False in floating point).
    old_ok = all(probe.get(row, 0) >= target - slack - 1e-9 for row, target in ship.OLD_TARGETS.items())
    new_gain = sum(probe.get(r, 0) for r in ship.NEW_ROWS) > sum(shipped.get(r, 0) for r in ship.NEW_ROWS)
    return old_ok and new_gain


def run(args: argparse.Namespace, recipe: recipe_module.Recipe) -> int:
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    log = recipe_module.log
    lineage_path = work / "lineage.json"  # what the run continued, fixed at its start (the shipped folder changes)
    if not lineage_path.is_file():
        atomic_write_text(lineage_path, json.dumps(recipe_module.read_lineage(Path(args.init_from)), indent=2))
    lineage = json.loads(lineage_path.read_text())
    shipped = ship.shipped_evaluation(out, args.ship_per_family, log)
    log("shipped model: " + ", ".join(f"{r} {shipped[r]:.0%}" for r in ship.NEW_ROWS))
    candidate = work / "candidate"
    while True:
        recipe_module.build(recipe, candidate, work, Path(args.init_from), args.segment_minutes, lineage=lineage)
        step = json.loads((candidate / "recipe.json").read_text())["trained_steps"]
        started = time.time()
        probe = ship.evaluate_folder(candidate, args.probe_per_family)
        entry = {"step": step, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started),
                 "per_family": args.probe_per_family, "rows": probe}
        with open(work / "progress.jsonl", "a", encoding="utf-8") as progress:
            progress.write(json.dumps(entry) + "\n")
        log(f"probe at step {step} ({entry['seconds']} s): "
            + ", ".join(f"{row} {rate:.0%}" for row, rate in probe.items()))
        if probe_promising(probe, shipped, args.probe_slack):
            rows = ship.evaluate_folder(candidate, args.ship_per_family, log)
            ok, reasons = ship.decide(rows, shipped)
            log(f"step {step} at {args.ship_per_family} per row: " + ("ships" if ok else "; ".join(reasons)))
            with open(work / "decisions.jsonl", "a", encoding="utf-8") as decisions:
                decisions.write(json.dumps({"step": step, "rows": rows, "ships": ok, "reasons": reasons}) + "\n")
            if ok:
                ship.ship(candidate, out, rows, args.ship_per_family, {**vars(args), "step": step}, Path(args.card))
                shipped = rows
                log(f"shipped step {step} to {out}")
        if step >= recipe.steps or (work / "FINISH").exists():
            (work / "FINISH").unlink(missing_ok=True)
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnigen.mini.continuation", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="the run's folder; rerun with the same one to resume")
    parser.add_argument("--init-from", required=True, help="the model folder the run starts from")
    parser.add_argument("--out", default="assets/omnigen-mini", help="the shipped model folder, replaced when beaten")
    parser.add_argument("--card", default="docs/omnigen-mini.md", help="the model card whose table of shipped steps "
                                                                     "is rewritten at each shipment")
    parser.add_argument("--steps", type=int, required=True, help="where the cosine learning-rate schedule ends")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--segment-minutes", type=float, default=10.0)
    parser.add_argument("--probe-per-family", type=int, default=10)
    parser.add_argument("--probe-slack", type=float, default=0.1,
                        help="how far under its target an old row may read in the probe and still be judged in full")
    parser.add_argument("--ship-per-family", type=int, default=50)
    parser.add_argument("--pool-per-family", type=int, default=2000)
    parser.add_argument("--precision", choices=recipe_module.PRECISIONS, default="auto")
    parser.add_argument("--fill", choices=recipe_module.FILLS, default=recipe_module.Recipe.fill)
    parser.add_argument("--family-weights", type=json.loads, default=None,
                        help='JSON object of family weights that replace the recipe\'s (e.g. \'{"edit": 6}\')')
    parser.add_argument("--task-weights", type=json.loads, default=None,
                        help='JSON object of sub-task weights per family, merged over the recipe\'s '
                             '(e.g. \'{"edit": {"recolour": 5}}\')')
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # The architecture is the one continued (a deeper recipe would grow it by block expansion).
    shape = json.loads((Path(args.init_from) / "config.json").read_text())
    recipe = recipe_module.Recipe(steps=args.steps, learning_rate=args.learning_rate, decoder_steps=0,
                                  pool_per_family=args.pool_per_family, precision=args.precision, fill=args.fill,
                                  hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_hidden_layers"],
                                  num_attention_heads=shape["num_attention_heads"],
                                  intermediate_size=shape["intermediate_size"])
    if args.family_weights:
        unknown = set(args.family_weights) - set(recipe.family_weights)
        if unknown:
            parser.error(f"unknown task families in --family-weights: {sorted(unknown)}")
        recipe.family_weights.update(args.family_weights)
    for family, weights in (args.task_weights or {}).items():
        if family not in SUB_TASKS:
            parser.error(f"--task-weights: {family!r} has no sub-tasks to weight; only {list(SUB_TASKS)} have")
        unknown = set(weights) - set(SUB_TASKS[family])
        if unknown:
            parser.error(f"--task-weights: unknown {family} sub-tasks {sorted(unknown)}; "
                         f"choose among {list(SUB_TASKS[family])}")
        recipe.task_weights.setdefault(family, {}).update(weights)
    return run(args, recipe)


if __name__ == "__main__":
    sys.exit(main())
