"""`python -m omnigen train` end to end on a tiny model folder: progress and loss printed, adapter written and
loadable, a bad dataset refused with its line number and a non-zero exit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from omnigen import OmniGenPipeline

REPO = Path(__file__).resolve().parent.parent
COLOURS = {"red": (230, 30, 30), "blue": (20, 40, 200), "green": (60, 190, 70), "yellow": (240, 220, 30)}
pytestmark = pytest.mark.slow


def write_jsonl(root: Path, missing: str | None = None) -> Path:
    """Four rows, three text-to-image and one edit; `missing` names a colour whose image is not written."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rgb in COLOURS.items():
        picture = Image.new("RGB", (64, 64), (255, 255, 255))
        picture.paste(rgb, (16, 16, 48, 48))
        if name != missing:
            picture.save(root / f"{name}.png")
        rows.append({"instruction": f"a {name} square", "output_image": f"{name}.png"})
    rows[3] = {"instruction": "<img><|image_1|></img> make the square yellow", "input_images": ["red.png"],
               "output_image": "yellow.png"}
    path = root / "data.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "omnigen", "train", "--threads", "1", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


def test_train_command_prints_the_loss_and_writes_the_adapter(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "data")
    out = tmp_path / "adapters" / "squares"
    done = run_cli("--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--steps", "3",
                   "--batch-size", "2", "--rank", "4", "--targets", "attention+mlp", "--checkpoint-every", "2",
                   "--validation-prompt", "a red square", "--sample-steps", "2")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "3/3" in output and "loss=" in output  # the progress bar with the loss
    assert "done at step 3/3" in done.stdout and "loss " in done.stdout
    assert f"step 2: checkpoint {out / 'checkpoints' / 'step-000002'}" in output
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "samples" / "step-000003-0.png").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["target_modules"] == [
        "down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    assert pipe.load_lora(out / "adapter") == "adapter"

    again = run_cli("--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--steps", "4",
                    "--resume", "--checkpoint-every", "0")
    assert again.returncode == 0, again.stderr
    assert "done at step 4/4" in again.stdout


def test_a_bad_dataset_exits_non_zero_naming_the_line(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "data", missing="blue")
    done = run_cli("--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "run"),
                   "--steps", "2")
    assert done.returncode != 0
    assert f"{data}:2: output image 'blue.png' not found" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
