"""Time this pipeline against diffusers' OmniGen transformer driven as diffusers.OmniGenPipeline drives it.

    python benchmarks/bench_pipeline.py [--hidden 512 --layers 8 --size 256 --steps 30]

Both sides get the same random mid-size weights, the same token sequences (from omnigen.processor; diffusers'
own processor needs torchvision, which does not import beside torch's CPU build) and the same VAE, and sample
with Euler over uniform times at the guidance in GUIDANCE. The reference runs every guidance branch in one
batch each step with no cache, as diffusers' pipeline does.
Each (implementation, case) runs in a fresh process, so peak memory is measured alone (RSS above the
process's level before sampling, polled every 2 ms, after an untimed one-step warm-up).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDANCE = (2.5, 1.6)  # text and image guidance of both sides
sys.path.insert(0, str(ROOT))

CASES = {
    "text only": dict(images=[]),
    "input = output size": dict(images=[1]),
    "input 2x output side": dict(images=[2]),
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak resident memory above the level at entry, polled in a thread."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()
        return self

    def poll(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def used(self) -> int:
        return self.peak - self.base


def build_model_dir(path: Path, hidden: int, layers: int) -> None:
    import torch
    from diffusers import AutoencoderKL

    from omnigen.mini.tokenizer import train_tokenizer
    from omnigen.model import OmniGen, OmniGenConfig
    from omnigen.weights import save_transformer

    corpus = ["a photo of a red circle on a table", "make the cat wear a hat", "remove the background",
              "(((deformed))), blurry, over saturation, bad anatomy, disfigured, poorly drawn face, mutation"]
    train_tokenizer(corpus * 8, path, vocab_size=400)
    torch.manual_seed(0)
    config = OmniGenConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                           intermediate_size=hidden * 8 // 3 // 64 * 64, vocab_size=512, pad_token_id=3,
                           pos_embed_max_size=64, native_image_size=256)
    model = OmniGen.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    save_transformer(model, path)
    AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=32,
                  layers_per_block=1).save_pretrained(path / "vae", safe_serialization=True)


def inputs_for(case: str, size: int):
    from PIL import Image

    factors = CASES[case]["images"]
    images = [Image.new("RGB", (size * f, size * f), (200, 40, 40)) for f in factors]
    tags = " ".join(f"<img><|image_{i + 1}|></img>" for i in range(len(images)))
    return f"{tags} make the red circle wear a blue hat and sit on a wooden table".strip(), images


def run_ours(pipe, prompt, images, size, steps):
    pipe(prompt, images or None, height=size, width=size, num_inference_steps=steps, seed=0,
         max_input_image_size=2 * size, output_type="pt", guidance_scale=GUIDANCE[0], img_guidance_scale=GUIDANCE[1],
         sampler="euler", schedule="uniform")


def run_diffusers(pipe, twin, prompt, images, size, steps):
    """The loop of diffusers.OmniGenPipeline: all branches batched, no cache, Euler over the same schedule."""
    import torch

    from omnigen import vae as vae_io
    from omnigen.processor import collate
    from omnigen.sampler import combine_guidance, get_schedule
    from omnigen.settings import LATENT_PIXELS, image_tokens

    request = pipe.processor(prompt, images or None, height=size, width=size, max_input_image_size=2 * size)[0]
    rows = [request.cond, request.uncond] + ([request.img_cond] if request.img_cond is not None else [])
    batch = collate(rows, image_tokens(size, size), 3)
    latents_in = [vae_io.encode(pipe.vae, im, sample=False) for im in batch["input_images"]]
    mask = batch["attention_mask"].float()
    side = size // LATENT_PIXELS
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    schedule = get_schedule(steps)
    with torch.inference_mode():
        for t, t_next in zip(schedule[:-1], schedule[1:]):
            x = latents.repeat(len(rows), 1, 1, 1)
            v = twin(x, torch.full((len(rows),), t), batch["input_ids"], latents_in, batch["input_image_sizes"],
                     mask, batch["position_ids"]).sample
            latents = latents + (t_next - t) * combine_guidance(v, len(rows), *GUIDANCE)
        vae_io.decode(pipe.vae, latents)


def measure(impl: str, case: str, model_dir: str, size: int, steps: int) -> dict:
    import torch

    from omnigen import OmniGenPipeline
    from omnigen.layouts import official_config_to_diffusers, official_to_diffusers

    torch.manual_seed(0)
    pipe = OmniGenPipeline.from_pretrained(model_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    prompt, images = inputs_for(case, size)
    if impl == "ours":
        go = lambda n=steps: run_ours(pipe, prompt, images, size, n)  # noqa: E731
    else:
        from diffusers import OmniGenTransformer2DModel
        cfg = official_config_to_diffusers(pipe.transformer.config)
        cfg.pop("_class_name"), cfg.pop("native_image_size")
        half = pipe.transformer.config.hidden_size // pipe.transformer.config.num_attention_heads // 2
        cfg["rope_scaling"] = {"short_factor": [1.0] * half, "long_factor": [1.0] * half}
        twin = OmniGenTransformer2DModel(**cfg).eval()
        twin.load_state_dict(official_to_diffusers(pipe.transformer.state_dict(), pipe.transformer.config))
        del pipe.transformer
        go = lambda n=steps: run_diffusers(pipe, twin, prompt, images, size, n)  # noqa: E731
    # One untimed step first: it pages in the weights (safetensors are memory-mapped, so the first forward
    # would count them as generation memory) and settles the allocator and thread pools on both sides.
    go(1)
    with PeakMemory() as mem:
        start = time.perf_counter()
        go()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": mem.used / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.model_dir, args.size, args.steps)))
        return
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        build_model_dir(Path(tmp), args.hidden, args.layers)
        print(f"hidden {args.hidden}, {args.layers} layers, {args.size}x{args.size} output, {args.steps} steps, CPU")
        print(f"{'case':24} {'diffusers s':>11} {'ours s':>8} {'speed-up':>9} {'diffusers MB':>13} {'ours MB':>8}")
        for case in args.cases:
            result = {}
            for impl in ("diffusers", "ours"):  # interleaved per case so machine noise hits both alike
                out = subprocess.run([sys.executable, __file__, "--worker", impl, case, "--model-dir", tmp,
                                      "--size", str(args.size), "--steps", str(args.steps)],
                                     capture_output=True, text=True, check=True)
                result[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            d, o = result["diffusers"], result["ours"]
            print(f"{case:24} {d['seconds']:11.2f} {o['seconds']:8.2f} {d['seconds'] / o['seconds']:8.2f}x "
                  f"{d['peak_mb']:13.0f} {o['peak_mb']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
