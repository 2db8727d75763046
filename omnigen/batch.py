"""Batch jobs: many prompts (each with its pictures and settings) or one instruction over a folder of pictures,
written to one folder, resumable, and shared out over processes by `accelerate launch`.

    jobs = read_jobs("jobs.jsonl")                       # one JSON object a line: {"prompt", "images", settings...}
    jobs = folder_jobs("photos/", "make the background white")
    run_batch(pipe, jobs, "out/", pipe.default_settings)  # out/NAME.png (settings inside) and out/results.jsonl

A job line: {"prompt": "<img><|image_1|></img> make it blue", "images": ["a.png"], "seed": 3, "name": "a-blue",
"num_inference_steps": 30, ...}: any generation setting by name; pictures are relative to the jobs file's folder.
Every line is read and checked before anything runs; a bad one is refused with its line number.

Each job has its own seed (its "seed", else the batch's seed plus its position), so which process runs it does not
change its picture. A job is done when its PNG exists and carries the job's digest: a rerun skips it, and a killed
run loses at most the picture in progress (every file is written under a temporary name, then renamed). Under
`accelerate launch -m omnigen batch ...` process k of n runs the jobs k, k+n, k+2n, ...; each process appends what
it generated to out/log/process-K.jsonl, and the first writes results.jsonl once all have finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .png import read_settings, save_png
from .settings import GenerationSettings, parse_value, setting_names

RESULTS = "results.jsonl"
LOG_FOLDER = "log"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
JOB_KEYS = ("prompt", "images", "name")
NAME = re.compile(r"[\w][\w.-]{0,100}")


class BatchError(ValueError):
    """A jobs file, folder or output folder that cannot be run; the message names the line and what to fix."""


@dataclass(frozen=True)
class BatchJob:
    """One picture to make: its prompt, input pictures (files), the settings it changes and its output's name."""

    index: int  # position in the batch, from 0: decides the default seed and which process runs it
    name: str  # the output is NAME.png
    prompt: str
    images: tuple[str, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was given, for messages: "line 3 of jobs.jsonl"

    def settings(self, base: GenerationSettings) -> GenerationSettings:
        """The job's settings: `base` with its changes; its own seed, else base's (0 when none) plus its index."""
        seed = self.changes.get("seed", (base.seed or 0) + self.index)
        return base.replace(**{**self.changes, "seed": seed, "num_images_per_prompt": 1})

    def digest(self, base: GenerationSettings) -> str:
        """What decides the job's picture (prompt, pictures' bytes, settings), as a short hash: an output that
        carries another digest is stale and made again."""
        h = hashlib.sha256(self.prompt.encode())
        for path in self.images:
            h.update(hashlib.sha256(Path(path).read_bytes()).digest())
        h.update(json.dumps(self.settings(base).to_kwargs(only_reproducing=True), sort_keys=True).encode())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- reading jobs


def read_jobs(path: str | os.PathLike, max_jobs: int | None = None) -> list[BatchJob]:
    """Every job of a JSONL file, checked: a line that is not a JSON object, lacks a prompt, names a missing
    picture or gives a bad setting is refused with its line number. Blank lines are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BatchError(f"the jobs file {str(path)!r} does not exist") from None
    except UnicodeDecodeError:
        raise BatchError(f"the jobs file {path.name} is not UTF-8 text: write one JSON object a line") from None
    jobs = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            jobs.append(parse_job(line, len(jobs), path.parent, f"line {number} of {path.name}"))
    return checked(jobs, path.name, max_jobs)


def parse_job(line: str, index: int, root: Path, source: str) -> BatchJob:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise BatchError(f"{source} is not JSON ({error.msg} at column {error.colno}): write one object a line, "
                         'e.g. {"prompt": "a red circle", "seed": 1}') from None
    if not isinstance(data, dict):
        raise BatchError(f"{source} is not a JSON object: write {{\"prompt\": ...}}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BatchError(f"{source} has no prompt: give \"prompt\" as text")
    images = data.get("images", [])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BatchError(f"{source}: \"images\" must be a list of file names")
    files = tuple(str(picture_file(root, name, source)) for name in images)
    name = data.get("name", f"{index + 1:04d}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BatchError(f"{source}: the name {name!r} is not a plain file name (letters, digits, '.', '-', '_')")
    return BatchJob(index, name, prompt, files, job_changes(data, source), source)


def picture_file(root: Path, name: str, source: str) -> Path:
    path = (root / os.path.expanduser(name)).resolve()
    if not path.is_file():
        raise BatchError(f"{source} names the picture {name!r}, which does not exist (pictures are found relative "
                         f"to the jobs file's folder, {str(root)!r})")
    return path


def job_changes(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The settings a job line gives, each checked; an unknown key is refused with the known ones."""
    unknown = sorted(set(data) - set(JOB_KEYS) - set(setting_names()))
    if unknown:
        raise BatchError(f"{source}: unknown key(s) {', '.join(unknown)}; a job has {', '.join(JOB_KEYS)} and any "
                         "generation setting")
    changes = {}
    for name in set(data) & set(setting_names()):
        try:
            changes[name] = parse_value(name, data[name])
        except ValueError as error:
            raise BatchError(f"{source}: {error}") from None
    if changes.get("num_images_per_prompt", 1) != 1:
        raise BatchError(f"{source}: a job makes one picture; write one line per picture (with its own seed)")
    return changes


def folder_jobs(folder: str | os.PathLike, instruction: str, max_jobs: int | None = None) -> list[BatchJob]:
    """One job per picture of `folder` (sorted by name): `instruction` applied to it, the output at its size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BatchError(f"{str(folder)!r} is not a folder of pictures")
    if not (instruction or "").strip():
        raise BatchError("give the instruction to apply to every picture, e.g. \"make the background white\"")
    pictures = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
    if not pictures:
        raise BatchError(f"{str(folder)!r} holds no pictures ({', '.join(PICTURE_SUFFIXES)})")
    prompt = f"<img><|image_1|></img> {instruction.strip()}"
    jobs = [BatchJob(i, safe_name(p.stem), prompt, (str(p.resolve()),), {"use_input_image_size_as_output": 1},
                     f"picture {p.name}") for i, p in enumerate(pictures)]
    return checked(jobs, str(folder), max_jobs)


def safe_name(stem: str) -> str:
    return re.sub(r"[^\w.-]", "_", stem)[:100] or "picture"


def checked(jobs: list[BatchJob], what: str, max_jobs: int | None) -> list[BatchJob]:
    if not jobs:
        raise BatchError(f"{what} holds no jobs")
    if max_jobs and len(jobs) > max_jobs:
        raise BatchError(f"{what} holds {len(jobs)} jobs, over the limit of {max_jobs} (max_batch_jobs); split it")
    seen: dict[str, str] = {}
    for job in jobs:
        if job.name in seen:
            raise BatchError(f"{job.source} and {seen[job.name]} both write {job.name}.png: give each a "
                             "different \"name\"")
        seen[job.name] = job.source
    return jobs


# ----------------------------------------------------------------------------- running


def output_path(out: Path, job: BatchJob) -> Path:
    return out / f"{job.name}.png"


def is_done(out: Path, job: BatchJob, digest: str) -> bool:
    """The job's PNG is there and was made for this very job."""
    path = output_path(out, job)
    try:
        return path.is_file() and (read_settings(path) or {}).get("batch_job") == digest
    except (OSError, ValueError):
        return False  # a damaged file is made again


def run_batch(pipe, jobs: Sequence[BatchJob], out: str | os.PathLike, base: GenerationSettings | None = None,
              rank: int = 0, world: int = 1, on_job: Callable[[BatchJob, str | None], None] | None = None,
              ) -> list[BatchJob]:
    """Make this process's share of `jobs` (index % world == rank) that is not done yet; returns the jobs it made.
    A job that fails is logged with its reason and the others go on. `on_job(job, error)` follows each one."""
    out = Path(out)
    base = pipe.settings(base)
    (out / LOG_FOLDER).mkdir(parents=True, exist_ok=True)
    log = out / LOG_FOLDER / f"process-{rank}.jsonl"
    run = secrets.token_hex(4)
    made = []
    for job in jobs[rank::world]:
        digest = job.digest(base)
        if is_done(out, job, digest):
            continue
        error, started = None, time.perf_counter()
        try:
            make_picture(pipe, job, base, digest, out)
            made.append(job)
        except (ValueError, FileNotFoundError, RuntimeError, MemoryError) as failure:
            from .errors import user_message

            error = user_message(failure, job.settings(base), len(job.images), pipe.offload)
        entry = {"run": run, "index": job.index, "name": job.name, "seconds": round(time.perf_counter() - started, 3),
                 "error": error}
        with open(log, "a", encoding="utf-8") as file:  # one whole line per job: a killed run loses no line
            file.write(json.dumps(entry) + "\n")
        if on_job is not None:
            on_job(job, error)
    return made


def make_picture(pipe, job: BatchJob, base: GenerationSettings, digest: str, out: Path) -> Path:
    from PIL import Image

    pictures = []
    for path in job.images:
        with Image.open(path) as picture:
            pictures.append(picture.convert("RGB"))
    result = pipe(job.prompt, pictures or None, job.settings(base), progress=False)
    record = {**result.settings[0], "batch_job": digest}
    return save_png(result.images[0], output_path(out, job), record)


def write_results(out: str | os.PathLike, jobs: Sequence[BatchJob], base: GenerationSettings) -> Path:
    """results.jsonl: one line per job, in the batch's order, from what is on disk (the same whichever process
    made which picture): its file and seed when done, else the last error logged for it."""
    out = Path(out)
    errors = logged_errors(out)
    lines = []
    for job in jobs:
        if is_done(out, job, job.digest(base)):
            lines.append(result_line(job, base, output_path(out, job).name))
        else:
            lines.append(result_line(job, base, None, errors.get(job.index, "not made yet: run the batch again")))
    return atomic_write_text(out / RESULTS, "".join(lines))


def result_line(job: BatchJob, base: GenerationSettings, file: str | None, error: str | None = None) -> str:
    """One line of results.jsonl: the job, and its file and seed, or why it has none."""
    entry: dict[str, Any] = {"index": job.index, "name": job.name, "source": job.source, "prompt": job.prompt}
    if file:
        entry.update(file=file, seed=job.settings(base).seed)
    else:
        entry.update(file=None, error=error)
    return json.dumps(entry, ensure_ascii=False) + "\n"


def logged_errors(out: Path) -> dict[int, str]:
    errors: dict[int, str] = {}
    for log in sorted((out / LOG_FOLDER).glob("process-*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("error"):
                errors[entry["index"]] = entry["error"]
            else:
                errors.pop(entry.get("index"), None)
    return errors


def count_done(out: str | os.PathLike, jobs: Sequence[BatchJob], base: GenerationSettings) -> int:
    return sum(is_done(Path(out), job, job.digest(base)) for job in jobs)


# ----------------------------------------------------------------------------- several processes


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among those `accelerate launch` (or torchrun) started: one process when alone."""

    rank: int = 0
    world: int = 1
    device: Any = None  # the device accelerate gives this process; None: the caller's choice
    wait: Callable[[], None] = lambda: None  # returns once every process has reached it


def process_group() -> ProcessGroup:
    """Join the other processes of a launch (WORLD_SIZE > 1) through accelerate: over NCCL on GPUs, over gloo on
    the CPU (Accelerator(cpu=True)'s setting, asked for when there is no GPU). Alone, nothing is imported."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return ProcessGroup()
    import torch
    from accelerate import PartialState

    has_gpu = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    state = PartialState(cpu=not has_gpu)
    if state.num_processes != world:
        raise RuntimeError(f"launched as {world} processes, but accelerate joined {state.num_processes}: each would "
                           "make every job; launch with --multi_gpu (on CPUs too) and --num_processes N")
    device = state.device if has_gpu else None  # on the CPU: plain "cpu", as one process records it
    return ProcessGroup(state.process_index, state.num_processes, device, state.wait_for_everyone)
