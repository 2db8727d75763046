"""`accelerate launch --num_processes 2 --cpu` (gloo) on `python -m omnigen train`, LoRA and --full, on the tiny
model: each process trains on its own examples, the gradients are averaged (two processes of one example each
end where one process accumulating both ends), and one adapter or checkpoint comes out."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio_support import free_port  # noqa: E402
from test_train_cli import write_jsonl  # noqa: E402 - four rows: three text-to-image, one edit

REPO = Path(__file__).resolve().parent.parent
STEPS = 3
TOLERANCE = 1e-5  # on every trained weight after STEPS steps (measured: equal to the last bit)
pytestmark = pytest.mark.slow


def run(launcher: list[str], model: Path, data: Path, out: Path, *flags: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = ["--model", str(model), "--data", str(data), "--out", str(out), "--steps", str(STEPS), "--lr", "1e-2",
            "--batch-size", "1", "--resolution", "32", "--checkpoint-every", "0", "--threads", "1", *flags]
    done = subprocess.run([*launcher, str(REPO / "tests" / "multiprocess_train.py"), "train", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def two_processes() -> list[str]:
    """Two processes joined by gloo on the CPU. `--cpu --num_processes 2` would start one process (accelerate's
    CPU launcher needs mpirun for more); the torchrun launcher behind --multi_gpu starts two, and the trainer
    asks for the CPU when the machine has no GPU (the test hides any with CUDA_VISIBLE_DEVICES)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


def seen(out: Path, rank: int) -> list[dict]:
    return json.loads((out / f"seen-rank{rank}.json").read_text())


def losses(out: Path) -> list[float]:
    with open(out / "loss.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_two_processes_train_on_their_own_examples_and_average_gradients(kind, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "data")
    flags = ["--full"] if kind == "full" else ["--rank", "4", "--targets", "attention+mlp"]
    both, alone = tmp_path / "two-processes", tmp_path / "one-process"
    run(two_processes(), tiny_model_dir, data, both, *flags)
    # The same global batch in one process: its two micro-batches accumulated before each update.
    run([sys.executable], tiny_model_dir, data, alone, *flags, "--grad-accumulation", "2")

    rank0, rank1, single = seen(both, 0), seen(both, 1), seen(alone, 0)
    assert [b["micro_batch"] for b in rank0] == [0, 2, 4] and [b["micro_batch"] for b in rank1] == [1, 3, 5]
    for step in range(STEPS):  # each step, the two processes trained on different examples
        assert rank0[step]["examples"] != rank1[step]["examples"]
    assert sorted(rank0[0]["examples"] + rank1[0]["examples"] + rank0[1]["examples"] + rank1[1]["examples"]) == [
        0, 1, 2, 3]  # the first epoch: every example once
    assert single == sorted(rank0 + rank1, key=lambda b: b["micro_batch"])  # the one process saw the same, in turn

    if kind == "lora":
        weights = "adapter/adapter_model.safetensors"
        assert sorted(p.name for p in (both / "adapter").iterdir()) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]
    else:
        weights = f"checkpoints/step-{STEPS:06d}/model.safetensors"
        assert not (both / "adapter").exists()
    checkpoints = sorted(p.name for p in (both / "checkpoints").iterdir())
    assert checkpoints == [f"step-{STEPS:06d}"]  # one checkpoint (no leftover scratch folder), with both RNG states
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= {p.name for p in (both / "checkpoints" / checkpoints[0]).iterdir()}
    assert len(losses(both)) == STEPS  # one loss log, written by the main process
    assert losses(both) == pytest.approx(losses(alone), abs=1e-6)

    trained, reference = load_file(str(both / weights)), load_file(str(alone / weights))
    difference = largest_difference(trained, reference)
    moved = largest_difference(trained, load_file(str(tiny_model_dir / "model.safetensors"))) if kind == "full" \
        else max(t.abs().max().item() for k, t in trained.items() if "lora_B" in k)
    print(f"{kind}: largest difference two processes vs one {difference:.3g}; largest change by training {moved:.3g}")
    assert moved > 1e-3 and difference <= TOLERANCE
