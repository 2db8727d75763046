"""OmniGen-v1 at its real size (random weights, benchmarks/make_v1_folder.py): loading and generating.

    # loads: each stored dtype x each target, in a child process under a memory cap; beside the official-style
    # load (the whole fp32 state dict in memory, then cast)
    python benchmarks/bench_v1.py loads /tmp/omnigen-v1-fp32 /tmp/omnigen-v1-bf16 /tmp/omnigen-v1-fp8
    # generation: dtype x offload x quantisation, text-to-image and an edit, beside diffusers' OmniGenPipeline
    python benchmarks/bench_v1.py generate /tmp/omnigen-v1-bf16                 # CPU: 128 and 256 px, 2 steps
    python benchmarks/bench_v1.py generate /tmp/omnigen-v1-fp32 --gpu           # GPU: 1024 px, 50 steps

Every measurement runs in its own child process (a fresh peak, and a load that does not fit fails alone).
Peak memory is the child's peak RSS (VmHWM) on a CPU and torch.cuda.max_memory_allocated on a GPU. On a
shared machine wrap a run in `flock /tmp/omnigen-heavy.lock ...`: never two real-size jobs at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 2**30
T2I_PROMPT = "a photo of a cat sitting on a wooden table next to a window"
EDIT_PROMPT = "<img><|image_1|></img> make the sky blue"


# ------------------------------------------------------------------ in the child process

def status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def model_bytes(module) -> int:
    """Bytes the module's parameters and buffers hold (quantized tensors: their data and scales)."""
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        parts = [getattr(t, name) for name in ("qdata", "scale") if hasattr(t, name)]
        total += sum(p.numel() * p.element_size() for p in parts) if parts else t.numel() * t.element_size()
    return total


def load_job(spec: dict, torch):
    """Load what `spec` names; returns (the object to generate with or None, transformer)."""
    from omnigen.pipeline import pick_dtype

    folder, kind = Path(spec["folder"]), spec["kind"]
    device = torch.device(spec.get("device", "cpu"))
    dtype = pick_dtype(spec["dtype"], device)
    if kind == "transformer":
        from omnigen.weights import load_transformer
        return None, load_transformer(folder, dtype=dtype, device=device, quantize=spec.get("quantize"))
    if kind == "official-style":  # the official loader's way: the whole file in memory, then cast
        from safetensors.torch import load_file

        from omnigen.model import OmniGen
        from omnigen.weights import load_config
        state = load_file(str(folder / "model.safetensors"))
        with torch.device("meta"):
            model = OmniGen.from_config(load_config(folder))
        model.load_state_dict(state, assign=True)
        return None, model.to(dtype)
    if kind == "ours":
        from omnigen.pipeline import OmniGenPipeline
        pipe = OmniGenPipeline.from_pretrained(folder, device=device, dtype=dtype, offload=spec.get("offload"),
                                               quantize=spec.get("quantize"))
        pipe.set_progress_bar_config(disable=True)
        return pipe, pipe.transformer
    if kind == "diffusers":
        pipe = diffusers_pipeline(folder, dtype, device, torch)
        if spec.get("offload") == "model":
            pipe.enable_model_cpu_offload()
        elif spec.get("offload") == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe, pipe.transformer
    raise ValueError(f"unknown job kind {kind!r}")


def diffusers_pipeline(folder: Path, dtype, device, torch):
    """diffusers' OmniGenPipeline on the same weights: its transformer built on the meta device and given our
    tensors renamed to its layout one by one (no converted copy on disk, no second copy in memory)."""
    import inspect

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenPipeline, OmniGenTransformer2DModel
    from transformers import AutoTokenizer, PretrainedConfig

    from omnigen.weights import load_config, official_config_to_diffusers, official_to_diffusers, open_checkpoint
    config = load_config(folder)
    accepted = inspect.signature(OmniGenTransformer2DModel.__init__).parameters
    kwargs = {k: v for k, v in official_config_to_diffusers(config).items() if k in accepted}
    with torch.device("meta"):
        transformer = OmniGenTransformer2DModel(**kwargs)
    with open_checkpoint(folder) as checkpoint:
        for key in checkpoint.sources:
            tensor = checkpoint.read(key).to(dtype)
            transformer.load_state_dict(official_to_diffusers({key: tensor}, config), strict=False, assign=True)
    left = [n for n, p in transformer.named_parameters() if p.is_meta]
    assert not left, f"diffusers parameters not filled: {left[:4]}"
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), config=PretrainedConfig())
    return OmniGenPipeline(transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                           tokenizer=tokenizer)


def run_generation(kind: str, pipe, task: str, size: int, steps: int, torch) -> dict:
    """One image; seconds per image and per step (steps after the first: the first also fills the KV cache)."""
    import numpy as np
    from PIL import Image

    images = None
    if task == "edit":
        pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        images = [Image.fromarray(pixels)]
    prompt = EDIT_PROMPT if task == "edit" else T2I_PROMPT
    stamps = []
    start = time.perf_counter()
    if kind == "ours":
        pipe(prompt, images, height=size, width=size, num_inference_steps=steps, seed=0,
             callback=lambda *a: stamps.append(time.perf_counter()))
    else:
        def on_step(p, i, t, kwargs):
            stamps.append(time.perf_counter())
            return kwargs
        pipe(prompt, images, height=size, width=size, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step)
    total = time.perf_counter() - start
    later = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    return {"task": task, "size": size, "steps": steps, "s_per_image": total,
            "s_first_step": stamps[0] - start if stamps else float("nan"), "s_per_step": later}


def child(spec: dict) -> dict:
    if spec.get("cap_gb"):
        cap = int(spec["cap_gb"] * GiB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    cuda = spec.get("device", "cpu").startswith("cuda")
    result = {"rss_before_gb": status_gb("VmRSS")}
    try:
        start = time.perf_counter()
        pipe, transformer = load_job(spec, torch)
        result["load_s"] = time.perf_counter() - start
        result["model_gb"] = model_bytes(transformer) / 1e9
        result["load_peak_gb"] = (torch.cuda.max_memory_allocated() / 1e9 if cuda else status_gb("VmHWM"))
        result["runs"] = []
        for task, size, steps in spec.get("runs", []):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            run = run_generation(spec["kind"], pipe, task, size, steps, torch)
            run["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else status_gb("VmHWM")
            result["runs"].append(run)
        result["ok"] = True
    except MemoryError:
        result.update(ok=False, error=f"out of memory under the {spec.get('cap_gb')} GiB cap")
    except RuntimeError as err:
        oom = "memory" in str(err).lower() or "allocate" in str(err).lower()
        result.update(ok=False, error=(f"out of memory under the {spec.get('cap_gb')} GiB cap" if oom
                                       else f"{type(err).__name__}: {str(err)[:300]}"))
    result["peak_gb"] = status_gb("VmHWM")
    return result


# ------------------------------------------------------------------ in the parent

def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GiB
    return float("inf")


def run_child(spec: dict, timeout: float) -> dict:
    """One job in a fresh process; its RESULT line, or what went wrong."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"took over {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (done.stderr or "").strip().splitlines()[-3:]
    return {"ok": False, "error": f"exit {done.returncode}: {' | '.join(tail)[:300]}"}


def stored_dtype(folder: Path) -> str:
    from omnigen.weights import open_checkpoint
    with open_checkpoint(folder) as checkpoint:
        dtype = checkpoint.stored_dtype("llm.layers.0.mlp.down_proj.weight")
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16",
            "torch.float8_e4m3fn": "fp8"}.get(str(dtype), str(dtype))


def cap_for(want_gb: float) -> float:
    """A memory cap that leaves 2 GiB of the available memory free."""
    return round(min(want_gb, available_gb() - 2), 1)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "")
    features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni") if f in flags.split()]
    return f"{info.get('Model name', '?').strip()}, {os.cpu_count()} cores, {', '.join(features) or 'no avx512'}"


def bench_loads(args) -> list[str]:
    targets = [t.split("+") for t in args.targets]
    lines = ["| stored | loaded as | load s | peak RSS GB | model in memory GB | peak / model | fits 1.25x |",
             "|---|---|---|---|---|---|---|"]
    for folder in args.folders:
        stored = stored_dtype(folder)
        jobs = [("transformer", t[0], t[1] if len(t) > 1 else None) for t in targets]
        if args.official and stored == "fp32":
            jobs.append(("official-style", "bf16", None))
        for kind, dtype, quantize in jobs:
            spec = {"kind": kind, "folder": str(folder), "dtype": dtype, "quantize": quantize,
                    "cap_gb": cap_for(args.cap_gb), "threads": args.threads}
            r = run_child(spec, args.timeout)
            name = f"{dtype}" + (f" + {quantize}" if quantize else "") + (" (official-style)" if kind != "transformer"
                                                                          else "")
            if r.get("ok"):
                ratio = r["load_peak_gb"] / r["model_gb"]
                line = (f"| {stored} | {name} | {r['load_s']:.1f} | {r['load_peak_gb']:.2f} | {r['model_gb']:.2f} | "
                        f"{ratio:.2f} | {'yes' if ratio <= 1.25 else 'no'} |")
            else:
                line = (f"| {stored} | {name} | - | >{spec['cap_gb']} (peak {r.get('peak_gb', float('nan')):.2f}) "
                        f"| - | - | no: {r['error']} |")
            print(line, flush=True)
            lines.append(line)
    return lines


def generation_plan(args) -> tuple[list[dict], list[tuple]]:
    gpu = args.gpu
    sizes, steps = args.sizes or ([1024] if gpu else [128, 256]), args.steps or (50 if gpu else 2)
    runs = [("t2i", s, steps) for s in sizes] + [("edit", sizes[0], steps)]
    device = "cuda" if gpu else "cpu"
    jobs = []
    for entry in args.configs:  # kind:dtype[:offload][:quantize]
        kind, dtype, *rest = entry.split(":")
        offload = next((x for x in rest if x in ("model", "sequential")), None)
        quantize = next((x for x in rest if x in ("int8", "fp8")), None)
        if offload and not gpu:
            print(f"skipped {entry}: offload moves weights to the GPU; on a CPU-only machine it changes nothing")
            continue
        job_runs = runs if not (quantize == "fp8" and not gpu) else runs[:1]  # fp8 dequantises slowly on a CPU
        jobs.append({"kind": kind, "folder": str(args.folder), "dtype": dtype, "offload": offload,
                     "quantize": quantize, "device": device, "runs": job_runs, "threads": args.threads,
                     "cap_gb": None if gpu else cap_for(args.cap_gb)})
    return jobs, runs


def bench_generate(args) -> list[str]:
    jobs, _ = generation_plan(args)
    peak_name = "peak GPU GB" if args.gpu else "peak RSS GB"
    lines = [f"| pipeline | dtype | offload | quantize | load s | task | size | steps | s/image | first step s | "
             f"s/step after | {peak_name} |", "|---" * 12 + "|"]
    started = time.perf_counter()
    for spec in jobs:
        left = args.budget_s - (time.perf_counter() - started)
        if left < 60:
            print(f"skipped {spec['kind']} {spec['dtype']} {spec['quantize']}: out of the {args.budget_s:.0f} s budget")
            continue
        r = run_child(spec, min(args.timeout, left))
        head = (f"| {spec['kind']} | {spec['dtype']} | {spec['offload'] or 'none'} | {spec['quantize'] or 'none'} "
                f"| {r.get('load_s', float('nan')):.1f} |")
        if not r.get("ok") and not r.get("runs"):
            lines.append(head + f" failed: {r['error']} |" + " |" * 6)
            print(lines[-1], flush=True)
            continue
        for run in r["runs"]:
            lines.append(head + f" {run['task']} | {run['size']} | {run['steps']} | {run['s_per_image']:.1f} | "
                         f"{run['s_first_step']:.1f} | {run['s_per_step']:.1f} | {run['peak_gb']:.2f} |")
            print(lines[-1], flush=True)
        if not r.get("ok"):
            lines.append(head + f" stopped: {r['error']} |" + " |" * 6)
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        print("RESULT " + json.dumps(child(json.loads(argv[1]))), flush=True)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    lo = sub.add_parser("loads", help="load time and peak memory: each folder's stored dtype x each target")
    lo.add_argument("folders", nargs="+", type=Path)
    lo.add_argument("--targets", nargs="+", default=["fp32", "bf16", "fp16", "bf16+int8", "bf16+fp8"],
                    help="DTYPE or DTYPE+QUANTIZE")
    lo.add_argument("--official", action="store_true", help="also the official-style load of each fp32 folder")
    ge = sub.add_parser("generate", help="seconds per step and per image, and peak memory")
    ge.add_argument("folder", type=Path)
    ge.add_argument("--configs", nargs="+", default=["ours:bf16", "ours:bf16:int8", "ours:bf16:fp8",
                                                     "diffusers:bf16"],
                    help="PIPELINE:DTYPE[:OFFLOAD][:QUANTIZE], PIPELINE ours or diffusers")
    ge.add_argument("--gpu", action="store_true", help="GPU settings: 1024x1024, 50 steps, on cuda")
    ge.add_argument("--sizes", nargs="+", type=int, default=None, help="default: 128 256 on a CPU, 1024 on a GPU")
    ge.add_argument("--steps", type=int, default=None, help="default: 2 on a CPU, 50 on a GPU")
    ge.add_argument("--budget-s", type=float, default=1200, help="stop starting new jobs after this many seconds")
    for sp in (lo, ge):
        sp.add_argument("--cap-gb", type=float, default=20.0, help="address-space cap of each child (GiB)")
        sp.add_argument("--timeout", type=float, default=900)
        sp.add_argument("--threads", type=int, default=None)
        sp.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    header = [f"machine: {cpu_name()}; {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GiB:.0f} GiB"]
    print(header[0], flush=True)
    lines = bench_loads(args) if args.command == "loads" else bench_generate(args)
    if args.out:
        args.out.write_text("\n".join(header + [""] + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
