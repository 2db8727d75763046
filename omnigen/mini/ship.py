"""Shipping a better embedded model: the targets, the rule that says a candidate beats the shipped model, and the
swap that replaces it and records why.

    python -m omnigen.mini.ship --candidate runs/continuation/candidate [--out assets/omnigen-mini] [--per-family 50]

A candidate ships when, at `per_family` samples per row (50: a 20-sample read is too noisy to decide on), it
- meets every target the shipped model is held to (OLD_TARGETS), and
- reads at least the shipped model's rate on every row of what people type and upload (NEW_ROWS), and more
  on their sum.
The shipped model's own evaluation is kept in its recipe.json ("evaluation"), so it is read, not re-run, when it
was made with the same settings. Each replacement appends to the folder's "shipments" in recipe.json (step,
the rows, the exact arguments) and rewrites the table of shipped steps in docs/omnigen-mini.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_folder, atomic_write_text

# The rows the shipped model is held to, with their targets (docs/omnigen-mini.md).
OLD_TARGETS = {
    "text_to_image": 0.90, "edit": 0.80, "subject": 0.70, "tryon": 0.70, "pose": 0.80, "pose_extract": 0.80,
    "depth": 0.80, "depth_extract": 0.80, "edges": 0.80, "edges_extract": 0.80, "segment": 0.80, "fewshot": 0.60,
}
# What people type and upload, with the targets the model is working towards.
NEW_TARGETS = {"caption": 0.90, "count": 0.80, "upload_edit": 0.70, "caption (held-out phrasings)": 0.80}
NEW_ROWS = tuple(NEW_TARGETS)
# The sampling of every shipping decision (the evaluation's fixed sampling: Euler, 30 uniform steps).
DECISION = {"steps": 30, "guidance_scale": 2.5, "img_guidance_scale": 1.6, "seed": 0}

TABLE_START, TABLE_END = "<!-- shipped-steps:start -->", "<!-- shipped-steps:end -->"


def evaluate_folder(folder: Path, per_family: int, log=None, families: Sequence[str] | None = None) -> dict[str, float]:
    """{row label: pass rate} of a model folder at the decision's sampling."""
    from .. import OmniGenPipeline
    from .eval import evaluate
    from .tasks import FAMILIES

    import torch

    # fp32 on whichever device there is: a decision reads the same on a GPU as here (noise is drawn on the CPU).
    pipe = OmniGenPipeline.from_pretrained(folder, dtype=torch.float32)
    rows = evaluate(pipe, families or FAMILIES, per_family, DECISION["seed"], DECISION["steps"],
                    DECISION["guidance_scale"], DECISION["img_guidance_scale"], log=log)
    return {row["task"]: row["pass_rate"] for row in rows}


def decide(candidate: dict[str, float], shipped: dict[str, float]) -> tuple[bool, list[str]]:
    """Whether the candidate beats the shipped model, and the reasons it does not (empty when it does)."""
    reasons = [f"{row} {candidate.get(row, 0):.0%} is under its target {target:.0%}"
               for row, target in OLD_TARGETS.items() if candidate.get(row, 0) < target]
    reasons += [f"{row} {candidate.get(row, 0):.0%} is under the shipped model's {shipped.get(row, 0):.0%}"
                for row in NEW_ROWS if candidate.get(row, 0) < shipped.get(row, 0)]
    gain = sum(candidate.get(row, 0) for row in NEW_ROWS) - sum(shipped.get(row, 0) for row in NEW_ROWS)
    if gain <= 0:
        reasons.append(f"the new rows gain nothing over the shipped model ({gain:+.0%} in sum)")
    return not reasons, reasons


def shipped_evaluation(folder: Path, per_family: int, log=None) -> dict[str, float]:
    """The shipped model's rows at the decision's settings: read from its recipe.json, else measured and kept."""
    record_path = folder / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    kept = record.get("evaluation")
    if kept and kept.get("settings") == {**DECISION, "per_family": per_family}:
        return kept["rows"]
    rows = evaluate_folder(folder, per_family, log)
    record["evaluation"] = {"settings": {**DECISION, "per_family": per_family}, "rows": rows}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return rows


def ship(candidate: Path, out: Path, rows: dict[str, float], per_family: int, arguments: dict,
         card: Path | None = None) -> None:
    """Replace `out` by `candidate` (whole, atomically), keeping the shipments so far and adding this one."""
    previous = json.loads((out / "recipe.json").read_text()) if (out / "recipe.json").is_file() else {}
    record = json.loads((candidate / "recipe.json").read_text())
    # The model the card's "before" column measured: the first shipment names it, later ones keep its name.
    shipments = previous.get("shipments", [])
    base = shipments[0]["base"] if shipments and "base" in shipments[0] else model_digest(previous)
    shipment = {"trained_steps": record.get("trained_steps"), "steps_since_before": steps_since(record, base),
                "base": base, "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows, "arguments": arguments}
    record["shipments"] = shipments + [shipment]
    record["evaluation"] = {"settings": {**DECISION, "per_family": per_family}, "rows": rows}
    with atomic_folder(out) as folder:
        for item in candidate.iterdir():
            if item.is_dir():
                shutil.copytree(item, folder / item.name)
            elif item.name != "recipe.json":
                shutil.copy2(item, folder / item.name)
        (folder / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
    if card is not None:
        write_card_table(card, previous.get("evaluation", {}).get("rows"), record["shipments"])


def model_digest(record: dict) -> str:
    """A name for one trained model in a lineage: its recipe and how far it trained."""
    identity = json.dumps({"recipe": record.get("recipe"), "trained_steps": record.get("trained_steps")},
                          sort_keys=True)
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


def steps_since(record: dict, base: str) -> int | None:
    """The steps trained after the model named `base`, summed down `record`'s lineage (None if it is not in it)."""
    steps, level = 0, record
    while level:
        if model_digest(level) == base:
            return steps
        steps += level.get("trained_steps") or 0
        level = level.get("continued_from")
    return None


def _column(shipment: dict) -> str:
    since = shipment.get("steps_since_before")
    return f"+{since:,} steps" if since is not None else f"{shipment['trained_steps']:,} steps"


def card_table(before: dict[str, float] | None, shipments: list[dict]) -> str:
    """The model card's table: the rows before the first shipment and after each one (headed by the steps trained
    since the model before it)."""
    rows = list(OLD_TARGETS) + ["restore"] + list(NEW_ROWS)
    header = "| row | target | " + " | ".join(["before"] * bool(before) +
                                              [_column(s) for s in shipments]) + " |"
    lines = [header, "|" + "---|" * (2 + bool(before) + len(shipments))]
    for row in rows:
        target = {**OLD_TARGETS, **NEW_TARGETS}.get(row)
        cells = ([before] if before else []) + [s["rows"] for s in shipments]
        lines.append(f"| {row} | {f'{target:.0%}' if target else '—'} | "
                     + " | ".join(f"{c[row]:.0%}" if row in c else "—" for c in cells) + " |")
    return "\n".join(lines)


def write_card_table(card: Path, before: dict[str, float] | None, shipments: list[dict]) -> None:
    """Rewrite the table between the card's markers (the first shipment keeps its 'before' column)."""
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_START, 1)
    old, tail = rest.split(TABLE_END, 1)
    kept_before = _before_column(old) or before
    atomic_write_text(card, f"{head}{TABLE_START}\n{card_table(kept_before, shipments)}\n{TABLE_END}{tail}")


def _before_column(table: str) -> dict[str, float] | None:
    """The 'before' column of a table written by card_table, read back."""
    lines = [line for line in table.strip().splitlines() if line.startswith("|")]
    if not lines or "| before |" not in lines[0]:
        return None
    before = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[2].endswith("%"):
            before[cells[0]] = float(cells[2][:-1]) / 100
    return before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnigen.mini.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", type=Path, required=True, help="an exported model folder")
    parser.add_argument("--out", type=Path, default=Path("assets/omnigen-mini"), help="the shipped model folder")
    parser.add_argument("--per-family", type=int, default=50)
    parser.add_argument("--card", type=Path, default=Path("docs/omnigen-mini.md"))
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    shipped = shipped_evaluation(args.out, args.per_family, log)
    candidate = evaluate_folder(args.candidate, args.per_family, log)
    ok, reasons = decide(candidate, shipped)
    print(json.dumps({"candidate": candidate, "shipped": shipped, "ships": ok, "reasons": reasons}, indent=2))
    if ok:
        ship(args.candidate, args.out, candidate, args.per_family, {"candidate": str(args.candidate)}, args.card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
