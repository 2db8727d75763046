"""How fast the studio starts and how fast a preset runs end to end through its API.

    python benchmarks/bench_studio.py [--model DIR] [--preset edit] [--runs 3] [--steps 50]
    python benchmarks/bench_studio.py --stand-in   # no embedded model yet: a random one of the recipe's size

Startup: `python app.py --model DIR` in a fresh process, timed from spawn until the page answers; a
second fresh process reports the phases (imports, pipeline load, building the page). Preset run: the
preset's first example (assets/examples) sent to /generate with gradio_client, images uploaded, with
the preset's recommended guidance and the sampling in PINNED (50 Euler steps by default, whatever the model
folder states), timed from the call to the returned PNG.
Targets on the embedded model, 2 CPU cores: startup < 10 s, preset run < 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STARTUP_TARGET_S, RUN_TARGET_S = 10.0, 3.0
# The sampling of each preset run (the steps come from --steps): the same whatever a folder states.
PINNED = dict(sampler="euler", schedule="uniform", time_shift=1.0, guidance_start=0.0, guidance_end=1.0,
              cache_threshold=0.0)

PHASES = r"""
import json, sys, time
start = time.perf_counter()
t = {}
import gradio
t["import gradio"] = time.perf_counter() - start
from omnigen.pipeline import OmniGenPipeline
t["import omnigen + torch"] = time.perf_counter() - start - sum(t.values())
pipe = OmniGenPipeline.from_pretrained(sys.argv[1], device="cpu")
t["load pipeline"] = time.perf_counter() - start - sum(t.values())
from app.engine import Studio
from app.ui import build_app
import tempfile
build_app(Studio(pipe, tempfile.mkdtemp()))
t["build the page"] = time.perf_counter() - start - sum(t.values())
print(json.dumps(t))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_phases(model: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PHASES, model], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc): the part of startup that a busy machine
    does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(model: str, port: int, output_dir: str) -> tuple[subprocess.Popen, float, float]:
    """Spawn the studio; (process, seconds until it serves its page, CPU seconds it used until then)."""
    import httpx

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port), "--output-dir",
                                output_dir], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the studio exited during startup:\n{process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return process, time.perf_counter() - started, process_cpu_seconds(process.pid)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def preset_call(preset: str, steps: int) -> tuple[str, dict]:
    """The preset's first example as /generate arguments (prompt, image_k files, settings)."""
    from gradio_client import handle_file

    from omnigen.presets import PRESETS, example_settings, examples_for

    examples = examples_for(preset)
    if examples:
        example = examples[0]
        prompt, images, settings = example.prompt, list(example.images), example_settings(example)
    else:  # no examples yet: the template, with a plain picture per image it needs
        from PIL import Image

        prompt, settings = PRESETS[preset].template, dict(PRESETS[preset].settings)
        images = []
        for k in range(PRESETS[preset].num_images):
            path = Path(tempfile.mkdtemp()) / f"image-{k + 1}.png"
            Image.new("RGB", (64, 64), "white").save(path)
            images.append(str(path))
    kwargs = {f"image_{k}": handle_file(path) for k, path in enumerate(images, start=1)}
    size_source = settings.get("use_input_image_size_as_output", False)
    kwargs["use_input_image_size_as_output"] = int(size_source) if size_source is not False else 0
    for key in ("guidance_scale", "img_guidance_scale"):
        if key in settings:
            kwargs[key] = settings[key]
    return prompt, {**kwargs, **PINNED, "num_inference_steps": steps}


def time_preset_runs(url: str, preset: str, runs: int, steps: int) -> list[float]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    prompt, kwargs = preset_call(preset, steps)
    times = []
    for seed in range(runs + 1):  # the first call warms up (first-touch allocations, lazy imports)
        started = time.perf_counter()
        gallery, settings = client.predict(prompt, seed=seed, api_name="/generate", **kwargs)
        assert Path(gallery[0]["image"]).is_file()
        times.append(time.perf_counter() - started)
    print(f"  {preset}: {settings[0]['num_inference_steps']} steps, {settings[0]['width']}x{settings[0]['height']}, "
          f"{settings[0]['num_input_images']} input image(s)")
    return times[1:]


def stand_in_model() -> str:
    """A random model folder of the embedded model's size (omnigen/mini/recipe.py), for numbers before it exists."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tiny_model_dir

    from omnigen.mini.recipe import Recipe

    recipe = Recipe()
    folder = Path(tempfile.mkdtemp()) / "stand-in-omnigen-mini"
    build_tiny_model_dir(folder, hidden=recipe.hidden_size, layers=recipe.num_hidden_layers)
    return str(folder)


def main() -> None:
    from omnigen.pipeline import default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    parser.add_argument("--stand-in", action="store_true", help="a random model of the embedded model's size")
    parser.add_argument("--preset", default="edit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="Euler steps of each run (default: 50)")
    args = parser.parse_args()
    model = stand_in_model() if args.stand_in else (args.model or default_model())
    if not Path(model).exists():
        sys.exit(f"no model at {model}; pass --model DIR or --stand-in")
    print(f"model {model} · {os.cpu_count()} CPU cores · load average {os.getloadavg()[0]:.1f}")

    cpu_before = child_cpu_seconds()
    phases = startup_phases(model)
    print("startup phases (fresh process): " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
          + f" (CPU {child_cpu_seconds() - cpu_before:.1f} s)")
    port = free_port()
    server, startup, startup_cpu = start_server(model, port, tempfile.mkdtemp())
    try:
        print(f"startup: python app.py -> page served in {startup:.2f} s, {startup_cpu:.1f} s of CPU "
              f"(target < {STARTUP_TARGET_S:.0f} s)")
        cpu = process_cpu_seconds(server.pid)
        runs = time_preset_runs(f"http://127.0.0.1:{port}/", args.preset, args.runs, args.steps)
        cpu = (process_cpu_seconds(server.pid) - cpu) / (args.runs + 1)
        print(f"preset run through the API: median {statistics.median(runs):.2f} s, "
              f"runs {', '.join(f'{t:.2f}' for t in runs)} s, {cpu:.1f} s of server CPU per run "
              f"(target < {RUN_TARGET_S:.0f} s)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
