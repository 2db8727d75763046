"""Evaluate a model on X2I-mini: generate for a fixed, seeded set of prompts per task family and judge.

    python -m omnigen.mini.eval --model assets/omnigen-mini [--per-family 20] [--steps 30]
        [--guidance 2.5] [--img-guidance 1.6] [--seed 0] [--families edit depth ...] [--json out.json]
        [--ceiling]
    python -m omnigen.mini.eval --model assets/omnigen-mini --first-prompts [--seeds 8]

Prints one row per task family (plus the held-out rows of text_to_image, edit and caption): how many samples,
how many the judge passed; with --ceiling also how many true outputs the judge still passes after the
model's VAE has encoded and decoded them, the most a transformer could reach through that VAE. The
evaluation set comes from the "eval" split (the training distribution, its own seed stream) and the
"heldout" split (colour-shape pairs never trained on).

--first-prompts instead draws the few words a new user types first ("a red circle", "two blue squares", ...)
at the model folder's own default settings, as the studio draws them, for seeds 0 to --seeds - 1, and
prints how many pictures of each pass the judge (which checks only what the words say).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write
from .judge import judge
from .tasks import FAMILIES, HELDOUT_PAIRS, Sample, generate
from .tasks.natural import named_sample
from .world import DEFAULT_SIZE

# The families with a held-out row, and its label in the table.
HELDOUT_ROWS = {
    "text_to_image": "text_to_image (held-out pairs)",
    "edit": "edit (into held-out pairs)",
    "caption": "caption (held-out phrasings)",
}


# What a new user types first: colours and shapes, and nothing of size, place or background (pairs the model has
# drawn from text; HELDOUT_PAIRS have their own rows).
FIRST_PROMPTS: dict[str, tuple[tuple[str, str], ...]] = {
    "a red circle": (("red", "circle"),),
    "two blue squares": (("blue", "square"),) * 2,
    "a green triangle": (("green", "triangle"),),
    "a yellow square": (("yellow", "square"),),
    "three purple circles": (("purple", "circle"),) * 3,
    "a blue square and a red circle": (("blue", "square"), ("red", "circle")),
    "two blue squares and a red circle": (("blue", "square"),) * 2 + (("red", "circle"),),
    "an orange triangle": (("orange", "triangle"),),
}


def first_prompt_samples(size: int = DEFAULT_SIZE) -> list[Sample]:
    """FIRST_PROMPTS as judgeable samples: what each states, and the picture the convention draws for it."""
    return [named_sample(prompt, pairs, size) for prompt, pairs in FIRST_PROMPTS.items()]


def first_prompts(pipe, seeds: int = 8, size: int = DEFAULT_SIZE) -> dict[str, int]:
    """For each of FIRST_PROMPTS, how many of seeds 0..seeds-1 the judge passes, drawn at the pipe's defaults."""
    return {s.instruction: sum(judge(s, pipe(s.instruction, seed=seed, progress=False).images[0]).passed
                               for seed in range(seeds))
            for s in first_prompt_samples(size)}


def evaluation_rows(families: Sequence[str] = FAMILIES) -> list[tuple[str, str, str]]:
    """The rows evaluated for a choice of families, in table order."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; choose from {list(FAMILIES)}")
    rows = [(family, family, "eval") for family in FAMILIES if family in families]
    rows += [(label, family, "heldout") for family, label in HELDOUT_ROWS.items() if family in families]
    return rows


def evaluation_set(
    families: Sequence[str] = FAMILIES, per_family: int = 20, seed: int = 0, size: int = DEFAULT_SIZE
) -> list[tuple[str, list[Sample]]]:
    """(row label, samples) for every row; the same arguments always give the same samples."""
    if per_family < 1:
        raise ValueError(f"per_family must be at least 1, got {per_family}")
    rows = evaluation_rows(families)
    return [(label, generate(family, per_family, seed, split, size)) for label, family, split in rows]


# The evaluation's sampling, fixed whatever a model folder states as its defaults: plain Euler over uniform
# steps with full guidance and no step cache, so tables stay comparable across models and over time.
EVAL_SAMPLING = dict(sampler="euler", schedule="uniform", time_shift=1.0, guidance_start=0.0, guidance_end=1.0,
                     cache_threshold=0.0)


def evaluate(
    pipe,
    families: Sequence[str] = FAMILIES,
    per_family: int = 20,
    seed: int = 0,
    steps: int = 30,
    guidance_scale: float = 2.5,
    img_guidance_scale: float = 1.6,
    batch_size: int = 8,
    size: int = DEFAULT_SIZE,
    records: list | None = None,
    log=None,
    sampling: dict | None = None,
) -> list[dict]:
    """Generate every prompt of the evaluation set with `pipe` and judge it; one dict per row.

    `pipe` is called like OmniGenPipeline, with up to `batch_size` prompts of one row at a time.
    When `records` is a list, one dict per sample (instruction, passed, score, details) is appended.
    `sampling`: the sampler settings, EVAL_SAMPLING by default (not the model folder's defaults).
    """
    sampling = dict(EVAL_SAMPLING if sampling is None else sampling)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows = []
    for label, samples in evaluation_set(families, per_family, seed, size):
        started = time.perf_counter()
        verdicts = []
        for first in range(0, len(samples), batch_size):
            batch = samples[first : first + batch_size]
            images = _generate(pipe, batch, size, steps, guidance_scale, img_guidance_scale, seed + first, sampling)
            verdicts += [judge(sample, image) for sample, image in zip(batch, images)]
        passed = sum(v.passed for v in verdicts)
        rows.append(
            {
                "task": label,
                "family": samples[0].family,
                "split": samples[0].spec["split"],
                "samples": len(samples),
                "passed": passed,
                "pass_rate": passed / len(samples),
                "mean_score": sum(v.score for v in verdicts) / len(samples),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        if records is not None:
            records += [
                {"task": label, "sub_task": s.task, "instruction": s.instruction, "passed": v.passed, "score": v.score,
                 "details": v.details}
                for s, v in zip(samples, verdicts)
            ]
        if log:
            log(f"{label}: {passed}/{len(samples)} passed ({rows[-1]['seconds']} s)")
    return rows


def vae_ceiling(
    vae, families: Sequence[str] = FAMILIES, per_family: int = 20, seed: int = 0, size: int = DEFAULT_SIZE,
    batch_size: int = 32,
) -> dict[str, float]:
    """Per row, the share of the evaluation set's true outputs that the judge passes after a VAE round trip.

    A transformer that predicted every latent perfectly would score this, so a row's pass rate is read
    against it: well below it, the transformer falls short; near it, the VAE (or the judge) sets the limit.
    """
    import torch

    from .. import vae as vae_io
    from ..images import image_to_tensor

    ceilings = {}
    for label, samples in evaluation_set(families, per_family, seed, size):
        passed = 0
        for first in range(0, len(samples), batch_size):
            batch = samples[first : first + batch_size]
            with torch.no_grad():
                pixels = torch.stack([image_to_tensor(s.output_image) for s in batch])
                round_trip = vae_io.to_pil(vae_io.decode(vae, vae_io.encode(vae, pixels, sample=False)))
            passed += sum(judge(s, image).passed for s, image in zip(batch, round_trip))
        ceilings[label] = passed / len(samples)
    return ceilings


def _generate(
    pipe, batch: list[Sample], size: int, steps: int, guidance_scale: float, img_guidance_scale: float, seed: int,
    sampling: dict,
) -> list:
    output = pipe(
        prompt=[s.instruction for s in batch],
        input_images=[list(s.input_images) for s in batch],
        height=size,
        width=size,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        img_guidance_scale=img_guidance_scale,
        seed=seed,
        progress=False,
        **sampling,
    )
    images = list(output.images)
    if len(images) != len(batch):
        raise RuntimeError(f"the pipeline returned {len(images)} images for {len(batch)} prompts")
    return images


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table: task family, samples, passed, pass rate (and the VAE ceiling when every row has
    one); a total line at the end."""
    width = max([len("task family"), *(len(r["task"]) for r in rows)])
    ceiling = bool(rows) and all("vae_ceiling" in r for r in rows)
    extra = f"  {'VAE ceiling':>11}" if ceiling else ""
    rule = "-" * (width + 30 + len(extra))
    lines = [f"{'task family':<{width}}  {'samples':>7}  {'passed':>6}  {'pass rate':>9}{extra}", rule]
    for r in rows:
        extra = f"  {100 * r['vae_ceiling']:>10.1f}%" if ceiling else ""
        lines.append(f"{r['task']:<{width}}  {r['samples']:>7}  {r['passed']:>6}  {100 * r['pass_rate']:>8.1f}%{extra}")
    if rows:
        total, passed = sum(r["samples"] for r in rows), sum(r["passed"] for r in rows)
        extra = (f"  {100 * sum(r['vae_ceiling'] * r['samples'] for r in rows) / total:>10.1f}%"
                 if ceiling else "")
        lines.append(rule)
        lines.append(f"{'all rows':<{width}}  {total:>7}  {passed:>6}  {100 * passed / total:>8.1f}%{extra}")
    return "\n".join(lines)


def _write_json_atomically(path: Path, content: dict) -> None:
    with atomic_write(path, "w", encoding="utf-8") as out:
        json.dump(content, out, indent=2, default=str)
        out.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnigen.mini.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder (e.g. assets/omnigen-mini)")
    parser.add_argument("--per-family", type=int, default=20, help="samples per row (default 20)")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps (default 30)")
    parser.add_argument("--guidance", type=float, default=2.5, help="text guidance scale (default 2.5)")
    parser.add_argument("--img-guidance", type=float, default=1.6, help="image guidance scale (default 1.6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation set and of sampling (default 0)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES, metavar="FAMILY",
                        help=f"task families to evaluate (default all: {' '.join(FAMILIES)})")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per pipeline call (default 8)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"image size (default {DEFAULT_SIZE})")
    parser.add_argument("--json", type=Path, help="also write the rows and every sample's verdict here")
    parser.add_argument("--ceiling", action="store_true",
                        help="add a column: the judge on the VAE's round trip of the true outputs")
    parser.add_argument("--first-prompts", action="store_true",
                        help="instead judge the few words a new user types first, at the folder's own defaults")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per prompt with --first-prompts (default 8)")
    args = parser.parse_args(argv)
    if not Path(args.model).is_dir():
        parser.error(f"model folder {args.model} does not exist; give a folder with config.json, "
                     "model.safetensors, the tokenizer files and vae/")

    from omnigen import OmniGenPipeline

    pipe = OmniGenPipeline.from_pretrained(args.model)
    if args.first_prompts:
        if args.seeds < 1:
            parser.error(f"--seeds must be at least 1, got {args.seeds}")
        passed = first_prompts(pipe, args.seeds, args.size)
        print("| prompt | passed |\n|---|---|")
        print("\n".join(f"| {prompt} | {n}/{args.seeds} |" for prompt, n in passed.items()))
        print(f"| all | {sum(passed.values())}/{args.seeds * len(passed)} |")
        return 0
    records: list = []
    rows = evaluate(
        pipe, args.families, args.per_family, args.seed, args.steps, args.guidance, args.img_guidance,
        batch_size=args.batch_size, size=args.size, records=records, log=lambda line: print(line, file=sys.stderr),
    )
    if args.ceiling:
        ceilings = vae_ceiling(pipe.vae, args.families, args.per_family, args.seed, args.size)
        for row in rows:
            row["vae_ceiling"] = ceilings[row["task"]]
    print(format_table(rows))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        settings["heldout_pairs"] = [list(p) for p in HELDOUT_PAIRS]
        _write_json_atomically(args.json, {"settings": settings, "rows": rows, "samples": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
