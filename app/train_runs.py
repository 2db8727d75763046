"""The Train tab's runs, apart from the page's layout: run folders, the worker that trains on the studio's
pipeline, and what the page shows of a run (progress, loss, ETA). The page's settings: app/train_settings.py."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from omnigen.errors import is_out_of_memory
from omnigen.training import DatasetError, RowsDataset, TrainConfig, latest_checkpoint

from . import train_data
from .engine import Studio
from .i18n import text
from .jobs import Training, run_in_worker
from .train_settings import adapter_name, page_config

log = logging.getLogger("omnigen.studio")
RUNS = "lora-runs"
DISABLE_ENV = "OMNIGEN_DISABLE_TRAINING"


def training_disabled() -> bool:
    """OMNIGEN_DISABLE_TRAINING=1 turns training off, =0 on; unset, it is off on a Hugging Face Space (SPACE_ID
    is set there), where visitors share the model and ZeroGPU grants seconds, not the minutes a training takes."""
    value = os.environ.get(DISABLE_ENV, "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


@dataclass
class TrainingView:
    """What the page knows of a run, updated event by event (see omnigen.training.train for the events)."""

    total: int
    name: str
    step: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eta_s: float | None = None
    elapsed_s: float = 0.0
    samples: list[tuple[str, str]] = field(default_factory=list)  # (picture, its validation prompt)
    sample_step: int | None = None
    adapter: str | None = None
    adapter_step: int | None = None
    finished: bool = False
    stopped: bool = False
    stopping: bool = False

    def apply(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":
            self.step, self.eta_s, self.elapsed_s = int(event["step"]), event.get("eta_s"), event["elapsed_s"]
            self.losses.append((self.step, float(event["loss"])))
        elif kind == "checkpoint" and event.get("adapter"):
            self.adapter, self.adapter_step = event["adapter"], int(event["step"])
        elif kind == "samples":
            self.samples = list(zip(event["paths"], event["prompts"]))
            self.sample_step = int(event["step"])
        elif kind == "done":
            self.step, self.finished, self.stopped = int(event["step"]), True, bool(event["stopped"])
            self.adapter = event.get("adapter") or self.adapter
            self.adapter_step = self.step if event.get("adapter") else self.adapter_step


def loss_frame(losses: list[tuple[int, float]]) -> pd.DataFrame:
    """The loss plot's data: one row per logged step."""
    return pd.DataFrame({"step": [s for s, _ in losses], "loss": [v for _, v in losses]}).astype(
        {"step": "int64", "loss": "float64"})


def duration(seconds: float | None, lang: str = "en") -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 60:
        return text("duration_min_s", lang=lang, minutes=seconds // 60, seconds=f"{seconds % 60:02d}")
    return text("duration_s", lang=lang, seconds=seconds)


def progress_text(view: TrainingView, lang: str = "en") -> str:
    """One line for the status box: where the run is, its loss, how long it has run and has left."""
    loss = text("train_loss_part", lang=lang, loss=f"{view.losses[-1][1]:.4f}") if view.losses else ""
    elapsed = duration(view.elapsed_s, lang)
    if view.finished:
        how = (text("train_stopped_at", lang=lang, step=view.step, total=view.total) if view.stopped
               else text("train_done", lang=lang, step=view.step))
        kept = (text("train_adapter_ready", lang=lang, step=view.adapter_step) if view.adapter
                else text("train_no_adapter", lang=lang))
        return text("train_finished_line", lang=lang, how=how, loss=loss, elapsed=elapsed, kept=kept)
    percent = 100 * view.step // max(view.total, 1)
    eta = text("train_eta_part", lang=lang, eta=duration(view.eta_s, lang)) if view.eta_s is not None else ""
    stopping = text("train_stopping_part", lang=lang) if view.stopping else ""
    return text("train_status_progress", lang=lang, name=view.name, step=view.step, total=view.total,
                percent=percent, loss=loss, elapsed=elapsed, eta=eta, stopping=stopping)


def precision_for(pipe) -> str:
    """Train in the precision the pipeline computes in (its frozen base is not copied to fp32)."""
    return {"bfloat16": "bf16", "float16": "fp16"}.get(str(pipe.dtype).replace("torch.", ""), "no")


RUN_FOLDER = re.compile(r"^(?P<name>.+)-\d{8}-\d{6}$")


def new_run_folder(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def newest_run_folder(output_dir: Path, name: str) -> Path | None:
    """The newest run of adapter `name` that has a checkpoint to resume from, or None."""
    runs = sorted(p for p in (Path(output_dir) / RUNS).glob(f"{name}-*")
                  if (m := RUN_FOLDER.match(p.name)) and m["name"] == name and latest_checkpoint(p) is not None)
    return runs[-1] if runs else None


def reached_step(run: Path) -> int:
    """The step of a run's latest complete checkpoint."""
    state = json.loads((latest_checkpoint(run) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state["step"])


def run_of_adapter(studio: Studio, adapter: str | None) -> tuple[Path, str]:
    """(adapter folder, its name) for a path the page shows; only adapters of this studio's runs."""
    runs = (studio.output_dir / RUNS).resolve()
    path = Path(adapter or "").resolve()
    match = RUN_FOLDER.match(path.parent.name)
    if not adapter or path.parent.parent != runs or path.name != "adapter" or not match or not path.is_dir():
        raise ValueError("No trained adapter yet: train one (or load the example and press Start) first.")
    return path, match["name"]


def training_message(error: BaseException) -> str:
    """A sentence for the page, never a stack trace."""
    if isinstance(error, DatasetError):
        return train_data.problems_message(error)
    if is_out_of_memory(error):
        return "Out of memory while training: lower Batch size or Resolution, or the rank."
    if isinstance(error, (ValueError, FileNotFoundError, FloatingPointError)):
        return str(error)
    if isinstance(error, RuntimeError) and "out of GPU memory" in str(error):
        return str(error)
    log.error("training failed", exc_info=error)
    return f"The training failed ({type(error).__name__}). The server log has the details; try other settings."


def training_purpose(config: TrainConfig) -> str:
    """What holds the pipeline while this run trains, as PipelineBusy messages say it."""
    return f"training the LoRA {config.lora.name!r}"


def training_events(studio: Studio, dataset: RowsDataset, config: TrainConfig, run: Training):
    """Run train_lora on the studio's pipeline in a worker thread, holding the pipeline alone, and yield its
    events; a failure comes as {"type": "failed", "message"}. Closing the generator stops the run (after its
    current step, with a checkpoint) and waits for the worker, so the model is free when it returns."""
    with studio.live.use.exclusively(training_purpose(config)):
        yield from worker_events(studio, dataset, config, run)


def worker_events(studio: Studio, dataset: RowsDataset, config: TrainConfig, run: Training):
    """training_events for a caller that already holds the pipeline alone (studio.live.use.exclusively), e.g.
    one that must know at once whether it got the model and then follows the run from another thread."""
    from omnigen.training import train_lora

    def work(emit, stop) -> None:
        train_lora(studio.pipe, dataset, config, callback=emit, stop=stop)

    return run_in_worker(work, run.stop, lambda error: {"type": "failed", "message": training_message(error)},
                         "omnigen-train")


def prepare_run(studio: Studio, rows: list, settings: dict[str, Any], resume: bool) -> tuple[RowsDataset, TrainConfig]:
    """The checked dataset and config of a Start or Resume press; a gr.Error that says what to fix."""
    try:
        name = adapter_name(settings["name"])
        out_dir = newest_run_folder(studio.output_dir, name) if resume else new_run_folder(studio.output_dir, name)
        if out_dir is None:
            raise ValueError(f"There is no run of {name!r} to resume (runs are kept in the output folder's {RUNS}/); "
                             "press Start for a new one, or type the name of an earlier run.")
        config = page_config(settings, out_dir, resume, precision_for(studio.pipe))
        if resume and reached_step(out_dir) >= config.steps:
            raise ValueError(f"The run {out_dir.name} already reached step {reached_step(out_dir)}; set Steps above "
                             "that to train further.")
        dataset = RowsDataset(rows or [], name="the training rows").validate()
    except DatasetError as error:
        raise gr.Error(train_data.problems_message(error, studio.output_dir), duration=None,
                       title="Training data problems") from None
    except ValueError as error:
        raise gr.Error(training_message(error)) from None
    return dataset, config


def earlier_losses(out_dir: Path, up_to: int) -> list[tuple[int, float]]:
    """A resumed run's plot starts with the losses logged up to its checkpoint."""
    from omnigen.training import read_loss_log

    path = out_dir / "loss.csv"
    return [(r["step"], r["loss"]) for r in read_loss_log(path) if r["step"] <= up_to] if path.is_file() else []


def event_update(view: TrainingView, event: dict, outputs: tuple, lang: str = "en") -> dict:
    status, plot, samples, adapter_box, use_button = outputs
    update: dict = {status: progress_text(view, lang)}
    if event["type"] == "step":
        update[plot] = loss_frame(view.losses)
    elif event["type"] == "samples":
        update[samples] = gr.Gallery(value=list(view.samples),
                                     label=text("train_samples_at", lang=lang, step=view.sample_step))
    if event["type"] in ("checkpoint", "done") and view.adapter:
        update[adapter_box] = view.adapter
        update[use_button] = gr.Button(interactive=True)
    return update

