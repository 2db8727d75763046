"""Samplers, schedules, guidance intervals and the step cache: distance to the converged result against the
model evaluations and seconds they cost.

    OMP_NUM_THREADS=1 python benchmarks/bench_samplers.py [--plot docs/samplers-pareto.png] [--json out.json]
        [--per-family 1] [--mid-layers 4] [--quick]
    OMP_NUM_THREADS=1 python benchmarks/bench_samplers.py --judge "sampler=euler,num_inference_steps=50" \
        "sampler=heun,num_inference_steps=8" [--judge-per-family 20]

For each configuration the same prompts and seeds are sampled and compared with the converged result (Euler at
500 steps, same seed and guidance): the RMSE of the final latents and the PSNR of the decoded pixels. Two
models: (a) the embedded omnigen-mini on one prompt per row of its evaluation set (every task family, input
images included), one pipeline call per row; (b) a random model in the OmniGen-v1 layout (hidden 1024, a few
layers, tests/conftest.py's builder) on a text prompt and prompts with one and two input images. "calls" is the
number of model evaluations each image gets (each runs its 1-3 guidance branches), "rows" the branch forwards
per image, "s/img" the sampling seconds per image (one thread). With --judge the embedded model's evaluation
set is generated and judged instead, once per given configuration (settings as name=value pairs).
"""

from __future__ import annotations

import argparse
import json
import re
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = (4, 6, 8, 10, 15, 20, 30, 50)
SAMPLERS = ("euler", "heun", "midpoint", "dpmpp_2m")
REFERENCE = {"sampler": "euler", "num_inference_steps": 500}
# What a configuration does not state is the library's default, not the model folder's (which may state a sampler).
BASE = {"sampler": "euler", "schedule": "uniform", "time_shift": 1.0, "guidance_start": 0.0, "guidance_end": 1.0,
        "cache_threshold": 0.0}


def config(sampler: str, steps: int, **extra) -> dict:
    return {"sampler": sampler, "num_inference_steps": steps, **extra}


def label(c: dict) -> str:
    parts = [f"{c.get('sampler', 'euler')}-{c.get('num_inference_steps', 50)}"]
    if c.get("schedule", "uniform") != "uniform":
        parts.append(c["schedule"])
    if c.get("time_shift", 1.0) != 1.0:
        parts.append(f"shift {c['time_shift']:g}")
    if (c.get("guidance_start", 0.0), c.get("guidance_end", 1.0)) != (0.0, 1.0):
        parts.append(f"guide t in [{c.get('guidance_start', 0.0):g}, {c.get('guidance_end', 1.0):g}]")
    if c.get("cache_threshold", 0.0):
        parts.append(f"cache {c['cache_threshold']:g}")
    return ", ".join(parts)


def grid(model: str, quick: bool) -> list[dict]:
    """Every sampler at the step counts, then spacings, guidance intervals and the step cache on a subset. The
    two-call samplers stop at 20 steps on the embedded model: past that they are closer to the converged
    result than the 500-step Euler reference is to the exact one."""
    if quick:
        return [config(s, n) for s in SAMPLERS for n in (4, 8)] + [config("euler", 8, guidance_end=0.5),
                                                                    config("euler", 20, cache_threshold=0.1)]
    if model == "embedded":
        configs = [config(s, n) for s in SAMPLERS for n in (STEPS if s in ("euler", "dpmpp_2m") else STEPS[:6])]
        configs += [config(s, n, schedule=spacing) for spacing in ("cosine", "sigmoid")
                    for s, n in (("euler", 8), ("euler", 15), ("midpoint", 4), ("midpoint", 6), ("midpoint", 8),
                                 ("heun", 6), ("dpmpp_2m", 8), ("dpmpp_2m", 15))]
        configs += [config("euler", 25)] + [config("midpoint", 6, time_shift=shift) for shift in (0.5, 3.0)]
        fast = ("midpoint", 6, "cosine")
    else:
        configs = [config(s, n) for s in SAMPLERS for n in ((4, 8, 15) if s in ("euler", "dpmpp_2m") else (4, 8))]
        configs += [config("euler", 25), config("euler", 50), config("midpoint", 6, schedule="cosine")]
        fast = ("midpoint", 6, "cosine")
    for start, end in ((0.0, 0.5), (0.0, 0.75), (0.25, 1.0)) if model == "embedded" else ((0.0, 0.5), (0.25, 1.0)):
        configs += [config("euler", 50, guidance_start=start, guidance_end=end),
                    config(fast[0], fast[1], schedule=fast[2], guidance_start=start, guidance_end=end)]
    for threshold in ((0.05, 0.1, 0.2) if model == "embedded" else (0.1,)):
        configs += [config("euler", 50, cache_threshold=threshold), config("dpmpp_2m", 20, cache_threshold=threshold),
                    config(fast[0], fast[1], schedule=fast[2], cache_threshold=threshold)]
        if model == "embedded":
            configs.append(config("euler", 20, cache_threshold=threshold))
    return configs


# ----------------------------------------------------------------------------- the two models and their prompts


def embedded_case(per_family: int):
    from omnigen import OmniGenPipeline
    from omnigen.mini.eval import evaluation_set

    pipe = OmniGenPipeline.from_pretrained(device="cpu")
    calls = [dict(prompt=[s.instruction for s in samples], input_images=[list(s.input_images) for s in samples],
                  height=64, width=64, seed=i) for i, (_, samples) in enumerate(evaluation_set(per_family=per_family))]
    return pipe, calls


def mid_case(layers: int, folder: Path):
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model_dir

    from omnigen import OmniGenPipeline

    folder = folder / f"hidden-1024-x{layers}"
    if not (folder / "model.safetensors").is_file():
        build_tiny_model_dir(folder, hidden=1024, layers=layers)
    pipe = OmniGenPipeline.from_pretrained(folder, device="cpu")
    noise = np.random.RandomState(0)
    pictures = [Image.fromarray((noise.rand(64, 64, 3) * 255).astype("uint8")) for _ in range(2)]
    calls = [dict(prompt="a red circle at the top left and a blue square on a white background", input_images=None),
             dict(prompt="<img><|image_1|></img> make the red circle green", input_images=[pictures[0]]),
             dict(prompt="put the object from <img><|image_1|></img> on <img><|image_2|></img>",
                  input_images=pictures)]
    return pipe, [dict(c, height=64, width=64, seed=i) for i, c in enumerate(calls)]


# ----------------------------------------------------------------------------- measuring


def sample(pipe, calls: list[dict], settings: dict) -> tuple[list, float, dict]:
    """Final latents of every call's images, sampling seconds and the sampler's counts (denoise's stats)."""
    import torch

    import omnigen.pipeline as pipeline_module

    stats: dict = {}
    plain = pipeline_module.denoise
    pipeline_module.denoise = lambda *a, **k: plain(*a, **k, stats=stats)
    latents, seconds = [], 0.0
    try:
        for call in calls:
            started = time.perf_counter()
            out = pipe(**call, **{**BASE, **settings}, output_type="latent", progress=False)
            seconds += time.perf_counter() - started
            latents += out.images
    finally:
        pipeline_module.denoise = plain
    stats["calls"] = len(calls)
    return [torch.as_tensor(x) for x in latents], seconds, stats


def distances(pipe, latents: list, reference: list, reference_pixels: list) -> tuple[float, float]:
    """RMSE of the latents and mean PSNR (dB) of the decoded pixels against the converged result."""
    import torch

    squared = sum(((a - b) ** 2).sum().item() for a, b in zip(latents, reference))
    rmse = math.sqrt(squared / sum(a.numel() for a in latents))
    pixels = pipe.decode(torch.stack(latents).to(pipe.device)).float().cpu()
    psnr = []
    for a, b in zip(pixels, reference_pixels):
        mse = ((a - b) ** 2).mean().item()
        psnr.append(100.0 if mse == 0 else min(100.0, 10 * math.log10(1.0 / mse)))
    return rmse, sum(psnr) / len(psnr)


def measure(name: str, pipe, calls: list[dict], configs: list[dict], log, saved: Path | None = None) -> list[dict]:
    """One row per configuration; `saved`: a file that keeps the converged reference between runs."""
    import torch

    images = sum(len(c["prompt"]) if isinstance(c["prompt"], list) else 1 for c in calls)
    if saved is not None and saved.is_file():
        reference = list(torch.load(saved, weights_only=True))
        log(f"{name}: converged reference ({label(REFERENCE)}) read from {saved}")
    else:
        reference, seconds, _ = sample(pipe, calls, REFERENCE)
        log(f"{name}: converged reference ({label(REFERENCE)}) {seconds / images:.3f} s/img")
        if saved is not None:
            torch.save(torch.stack(reference), saved)
    reference_pixels = list(pipe.decode(torch.stack(reference).to(pipe.device)).float().cpu())
    rows = []
    for c in configs:
        latents, seconds, stats = sample(pipe, calls, c)
        rmse, psnr = distances(pipe, latents, reference, reference_pixels)
        rows.append(dict(model=name, config=label(c), settings=c, rmse=rmse, psnr=psnr,
                         calls=stats["evaluations"] / stats["calls"], rows=stats["rows"] / images,
                         skipped=stats.get("skipped", 0) / stats["calls"], seconds=seconds / images))
        log(f"{name}: {format_row(rows[-1])}")
    return rows


def format_row(r: dict) -> str:
    return (f"{r['config']:<44} {r['rmse']:>9.5f} {r['psnr']:>7.2f} {r['calls']:>6.1f} {r['rows']:>6.1f} "
            f"{r['seconds']:>7.3f}")


def format_table(rows: list[dict]) -> str:
    head = f"{'configuration':<44} {'RMSE':>9} {'PSNR':>7} {'calls':>6} {'rows':>6} {'s/img':>7}"
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += ["", f"[{model}]", head, "-" * len(head)] + [format_row(r) for r in rows if r["model"] == model]
    return "\n".join(lines[1:])


def pareto(rows: list[dict]) -> list[dict]:
    """The rows no other row beats in both calls and RMSE, per model."""
    return [r for r in rows if not any(o["model"] == r["model"] and o["calls"] <= r["calls"] and o["rmse"] <= r["rmse"]
                                       and (o["calls"], o["rmse"]) != (r["calls"], r["rmse"]) for o in rows)]


def plot(rows: list[dict], path: Path) -> str:
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed in this environment: no plot written"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for sampler in SAMPLERS:
            points = sorted((r["calls"], r["rmse"]) for r in rows if r["model"] == model
                            and r["settings"].get("sampler", "euler") == sampler and len(r["settings"]) == 2)
            if points:
                ax.plot(*zip(*points), marker="o", label=sampler)
        extra = [r for r in rows if r["model"] == model and len(r["settings"]) > 2]
        ax.scatter([r["calls"] for r in extra], [r["rmse"] for r in extra], marker="x", color="grey",
                   label="schedules, guidance intervals, step cache")
        ax.set(xscale="log", yscale="log", xlabel="model evaluations per image", ylabel="latent RMSE to converged",
               title=model)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return f"plot written to {path}"


def rows_from_table(text: str) -> list[dict]:
    """The rows of tables this script printed (e.g. the ones kept in docs/benchmarks.md), to plot a run again
    without repeating it. The sampler and step count are read back from each label; the rest of a label
    (spacing, shift, guidance interval, cache) marks the row as a variant."""
    rows, model = [], None
    for line in text.splitlines():
        if line.startswith("[") and line.rstrip().endswith("]"):
            model = line.strip()[1:-1]
        match = re.fullmatch(r"(\w+)-(\d+)(, .+?)?\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*", line)
        if model and match:
            sampler, steps, rest, rmse, psnr, calls, branch_rows, seconds = match.groups()
            settings = config(sampler, int(steps), **({"variant": rest[2:]} if rest else {}))
            rows.append(dict(model=model, config=line[:44].strip(), settings=settings, rmse=float(rmse),
                             psnr=float(psnr), calls=float(calls), rows=float(branch_rows), seconds=float(seconds)))
    return rows


# ----------------------------------------------------------------------------- the judge


def parse_settings(text: str) -> dict:
    from omnigen.settings import parse_value

    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    return {name.strip(): parse_value(name.strip(), value.strip()) for name, value in pairs}


def judge_configs(specs: list[str], per_family: int, log) -> list[dict]:
    from omnigen import OmniGenPipeline
    from omnigen.mini.eval import evaluate

    pipe = OmniGenPipeline.from_pretrained(device="cpu")
    results = []
    for spec in specs:
        settings = parse_settings(spec)
        steps = settings.pop("num_inference_steps", 50)
        started = time.perf_counter()
        rows = evaluate(pipe, per_family=per_family, steps=steps, sampling={**BASE, **settings})
        passed, total = sum(r["passed"] for r in rows), sum(r["samples"] for r in rows)
        results.append(dict(config=label({"num_inference_steps": steps, "sampler": "euler", **settings}),
                            passed=passed, samples=total, rows={r["task"]: r["passed"] for r in rows},
                            seconds=time.perf_counter() - started))
        log(f"judge: {results[-1]['config']}: {passed}/{total} ({100 * passed / total:.1f}%) "
            f"in {results[-1]['seconds']:.0f} s")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-family", type=int, default=1, help="embedded model: prompts per eval row (default 1)")
    parser.add_argument("--mid-layers", type=int, default=4, help="layers of the hidden-1024 random model")
    parser.add_argument("--mid-dir", type=Path, default=Path("/tmp/omnigen-bench-mid"),
                        help="where the random model folders are built (reused when there)")
    parser.add_argument("--models", nargs="+", default=["embedded", "mid"], choices=["embedded", "mid"])
    parser.add_argument("--quick", action="store_true", help="a few configurations only, to try the script")
    parser.add_argument("--configs", nargs="+", metavar="SETTINGS",
                        help="measure these configurations (settings as name=value pairs) instead of the grid")
    parser.add_argument("--keep-reference", type=Path, metavar="DIR",
                        help="keep the converged references in this folder and reuse them in later runs")
    parser.add_argument("--plot", type=Path, help="write the Pareto plot (calls vs RMSE) here")
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--judge", nargs="+", metavar="SETTINGS",
                        help="judge the embedded model's eval set with each configuration instead")
    parser.add_argument("--judge-per-family", type=int, default=20)
    parser.add_argument("--replot", type=Path, metavar="FILE",
                        help="with --plot: draw the tables this script printed (kept in FILE) instead of measuring")
    args = parser.parse_args()
    if args.replot:
        rows = rows_from_table(args.replot.read_text(encoding="utf-8"))
        print(f"{len(rows)} rows read; " + plot(rows, args.plot or Path("samplers-pareto.png")))
        return 0

    import torch

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"torch threads: {torch.get_num_threads()}")
    if args.judge:
        results = judge_configs(args.judge, args.judge_per_family, log)
        for r in results:
            print(f"{r['config']:<44} {r['passed']:>4}/{r['samples']} {100 * r['passed'] / r['samples']:6.1f}%  "
                  f"{r['seconds']:.0f} s")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0

    started, rows = time.perf_counter(), []
    for model in args.models:
        pipe, calls = embedded_case(args.per_family) if model == "embedded" else mid_case(args.mid_layers, args.mid_dir)
        pipe.set_progress_bar_config(disable=True)
        layers = pipe.transformer.config.num_hidden_layers
        name = "omnigen-mini" if model == "embedded" else f"random hidden-1024 x{layers} layers"
        configs = [parse_settings(text) for text in args.configs] if args.configs else grid(model, args.quick)
        saved = None
        if args.keep_reference:
            args.keep_reference.mkdir(parents=True, exist_ok=True)
            saved = args.keep_reference / f"{model}-{args.per_family if model == 'embedded' else args.mid_layers}.pt"
        rows += measure(name, pipe, calls, configs, log, saved)
    print(format_table(rows))
    print("\nPareto front (no other configuration has both fewer calls and a smaller RMSE):")
    print("\n".join(format_row(r) for r in pareto(rows)))
    if args.plot:
        print(plot(rows, args.plot))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
