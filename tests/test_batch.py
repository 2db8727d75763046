"""Batch jobs (omnigen/batch.py, `omnigen batch`): every line checked before anything runs, per-job seeds,
deterministic names, a killed run resumed without making any picture twice, and two processes under
`accelerate launch` that each make only their own share and write the very files one process writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from omnigen.batch import BatchError, folder_jobs, read_jobs
from omnigen.settings import GenerationSettings
from studio_support import free_port

REPO = Path(__file__).resolve().parent.parent
STEPS = 2
PROMPTS = ["a red circle at the top left", "a blue square in the center", "a green triangle", "a yellow circle"]


def write_jobs(folder: Path, count: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "jobs.jsonl"
    lines = [json.dumps({"prompt": PROMPTS[i % 4]} | ({"seed": 100 + i} if i % 5 == 0 else {})) for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def batch_command(jobs: Path, out: Path) -> list[str]:
    return ["-m", "omnigen", "batch", str(jobs), "--out", str(out), "--steps", str(STEPS)]


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def pictures(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def logged(out: Path) -> dict[int, list[dict]]:
    """What each process says it generated: {rank: [entries]}."""
    return {int(p.stem.split("-")[1]): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((out / "log").glob("process-*.jsonl"))}


# ----------------------------------------------------------------------------- reading jobs


def test_jobs_are_read_with_their_settings_names_and_own_seeds(tmp_path):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "scene.png")
    (tmp_path / "jobs.jsonl").write_text(
        '{"prompt": "a red circle", "seed": 7, "num_inference_steps": 3}\n\n'
        '{"prompt": "<img><|image_1|></img> make it blue", "images": ["scene.png"], "name": "blue"}\n')
    first, second = read_jobs(tmp_path / "jobs.jsonl")
    base = GenerationSettings(seed=40)
    assert (first.name, first.settings(base).seed, first.settings(base).num_inference_steps) == ("0001", 7, 3)
    assert (second.name, second.settings(base).seed) == ("blue", 41)  # the batch's seed plus its position
    assert second.images == (str((tmp_path / "scene.png").resolve()),)
    assert second.source == "line 3 of jobs.jsonl"


@pytest.mark.parametrize("line, message", [
    ("{not json", r"line 2 of jobs.jsonl is not JSON"),
    ('["a list"]', r"line 2 of jobs.jsonl is not a JSON object"),
    ('{"images": []}', r"line 2 of jobs.jsonl has no prompt"),
    ('{"prompt": "x", "images": ["gone.png"]}', r"line 2 of jobs.jsonl names the picture 'gone.png', which does not"),
    ('{"prompt": "x", "width": 100}', r"line 2 of jobs.jsonl: width 100 is not a multiple of 16"),
    ('{"prompt": "x", "colour": "red"}', r"line 2 of jobs.jsonl: unknown key\(s\) colour"),
    ('{"prompt": "x", "name": "../up"}', r"line 2 of jobs.jsonl: the name '../up' is not a plain file name"),
    ('{"prompt": "x", "name": "0001"}', r"line 2 of jobs.jsonl and line 1 of jobs.jsonl both write 0001.png"),
    ('{"prompt": "x", "num_images_per_prompt": 2}', r"line 2 of jobs.jsonl: a job makes one picture"),
])
def test_a_bad_line_is_refused_by_its_number(tmp_path, line, message):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "a red circle"}\n' + line + "\n")
    with pytest.raises(BatchError, match=message):
        read_jobs(path)


def test_a_folder_of_pictures_with_one_instruction(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (Image.new("RGB", (32, 48), "white").save(tmp_path / name) if name != "notes.txt"
         else (tmp_path / name).write_text("not a picture"))
    jobs = folder_jobs(tmp_path, "make the background white")
    assert [(j.name, j.prompt) for j in jobs] == [("a", "<img><|image_1|></img> make the background white"),
                                                  ("b", "<img><|image_1|></img> make the background white")]
    assert jobs[0].settings(GenerationSettings()).use_input_image_size_as_output == 1
    with pytest.raises(BatchError, match="give the instruction"):
        folder_jobs(tmp_path, " ")
    with pytest.raises(BatchError, match=r"holds 2 jobs, over the limit of 1 \(max_batch_jobs\)"):
        folder_jobs(tmp_path, "x", max_jobs=1)


def test_the_command_refuses_a_bad_line_before_loading_the_model_and_writes_nothing(tmp_path, capsys):
    from omnigen.cli import main

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "a red circle"}\n{"prompt": "x", "images": ["missing.png"]}\n')
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert "error: Line 2 of jobs.jsonl names the picture 'missing.png', which does not exist" in said
    assert "Traceback" not in said and not out.exists()


# ----------------------------------------------------------------------------- running, resuming, sharing


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """20 jobs in one process without a stop: the reference every other run must equal."""
    root = tmp_path_factory.mktemp("batch")
    jobs = write_jobs(root)
    run([sys.executable, *batch_command(jobs, root / "out")])
    return jobs, root / "out"


@pytest.mark.slow
def test_one_run_writes_every_picture_with_its_settings_and_the_results(uninterrupted):
    from omnigen.png import read_settings

    jobs, out = uninterrupted
    assert sorted(pictures(out)) == [f"{i:04d}.png" for i in range(1, 21)]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["file"] for r in results] == [f"{i:04d}.png" for i in range(1, 21)]
    assert [r["seed"] for r in results[:6]] == [100, 1, 2, 3, 4, 105]  # its own seed, else its position
    record = read_settings(out / "0002.png")
    assert record["prompt"] == PROMPTS[1] and record["seed"] == 1 and record["num_inference_steps"] == STEPS
    assert len(logged(out)[0]) == 20


@pytest.mark.slow
def test_a_killed_run_resumes_and_makes_no_picture_twice(uninterrupted, tmp_path):
    jobs, reference = uninterrupted
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, *batch_command(jobs, out)], cwd=REPO, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list(out.glob("*.png"))) < 5 and time.time() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    before = pictures(out)
    assert 5 <= len(before) < 20, f"killed after {len(before)} pictures"
    assert not (out / "results.jsonl").exists() and not list(out.glob(".*.tmp"))  # nothing half-written is left
    first_run = {e["index"] for e in logged(out)[0]}
    run([sys.executable, *batch_command(jobs, out)])
    second_run = {e["index"] for e in logged(out)[0]} - first_run
    assert pictures(out) == pictures(reference)  # the same 20 files, byte for byte
    assert {f"{i + 1:04d}.png" for i in second_run} == set(pictures(reference)) - set(before)  # only the missing
    assert (out / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()


def two_processes() -> list[str]:
    """Two processes joined over gloo on the CPU: accelerate's --multi_gpu launcher (torchrun) starts them and the
    batch asks accelerate for the CPU (Accelerator(cpu=True)'s setting) when there is no GPU. `--cpu` would start
    one process; `--use_fsdp` processes that each believe they are alone."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


@pytest.mark.slow
def test_two_processes_each_make_their_own_share_and_the_same_files(uninterrupted, tmp_path):
    jobs, reference = uninterrupted
    out = tmp_path / "out"
    run([*two_processes(), *batch_command(jobs, out)], timeout=400)
    assert pictures(out) == pictures(reference)
    assert (out / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()
    shares = {rank: [e["index"] for e in entries] for rank, entries in logged(out).items()}
    assert shares == {0: list(range(0, 20, 2)), 1: list(range(1, 20, 2))}  # each only its own, none twice


@pytest.mark.parametrize("space, setting, enabled", [
    (None, None, True), ("someone/studio", None, False), ("someone/studio", "1", True), (None, "0", False)])
def test_the_studios_batch_tab_is_off_on_a_space_unless_the_host_turns_it_on(monkeypatch, space, setting, enabled):
    from app.batch_tab import ENABLE_ENV, batch_enabled

    for name, value in (("SPACE_ID", space), (ENABLE_ENV, setting)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert batch_enabled() is enabled
