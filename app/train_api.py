"""LoRA training as named API endpoints, for gradio_client and plain HTTP: the Train tab's runs without a page.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    run = client.predict([handle_file("dataset.zip")], name="rectangle", steps=200, api_name="/train_start")
    status, samples = client.predict(run["token"], api_name="/train_status")   # poll: step, loss, ETA, state
    client.predict(run["token"], api_name="/train_stop")                      # ends after its current step
    adapter_zip = client.predict(run["token"], api_name="/train_adapter")     # the adapter folder, zipped

/train_start takes the dataset files (a .zip; a .jsonl with its images; or images with same-named .txt
instructions: whatever the Train tab's upload takes, app/train_data.py) and the Train tab's settings: the
same names, defaults and checks, both made from the training settings type (app/train_settings.py). It
answers at once, with {"run", "name", "token", "total"}, once the data and settings are checked and the
model is held; the run
then trains in the background (app/train_runs.worker_events, the Train tab's worker) and the caller polls.

Who may do what: the token /train_start returns is the run's key. /train_stop and /train_adapter act only for
the caller who shows it (the server keeps only its SHA-256); /train_status with it tells everything about that
run, and without it only whether the server is training (and what), never the samples or the adapter. The
Train tab's Stop does not stop an API run, nor the API a run started from a page; the server's operator stops
either by stopping the server.

One training runs on the server at a time (LiveState.claim_training), and while it runs it holds the
model alone: a generation asked for meanwhile is refused with a message saying so. /train_start waits
in the GPU queue behind running generations. These endpoints exist exactly when the Train tab does
(built by build_train_tab; off on Spaces, see app/train_runs.training_disabled).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import threading
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.files import atomic_save
from omnigen.training import DatasetError, TrainConfig

from . import train_data
from .engine import GPU_QUEUE, Studio
from .jobs import PipelineBusy, Training
from .train_runs import (TrainingView, prepare_run, progress_text, training_disabled, training_message,
                         training_purpose, worker_events)
from .train_settings import SETTINGS, page_defaults, setting_widget

KEPT_RUNS = 32  # finished API runs whose status and adapter stay reachable by token


@dataclass
class ApiRun:
    """One training started through the API: its key (hashed), what it has done, and how it ended."""

    token_hash: str
    training: Training
    view: TrainingView
    out_dir: Path
    failed: str | None = None  # the sentence a failed run ended with
    done: threading.Event = field(default_factory=threading.Event)

    def state(self) -> str:
        if self.failed is not None:
            return "failed"
        if self.view.finished:
            return "stopped" if self.view.stopped else "finished"
        return "stopping" if self.training.stop.is_set() else "running"

    def status(self) -> dict[str, Any]:
        view = self.view
        return {"run": self.out_dir.name, "name": view.name, "state": self.state(), "step": view.step,
                "total": view.total, "loss": view.losses[-1][1] if view.losses else None, "eta_s": view.eta_s,
                "elapsed_s": view.elapsed_s, "samples": [path for path, _ in view.samples],
                "sample_prompts": [prompt for _, prompt in view.samples], "sample_step": view.sample_step,
                "adapter_step": view.adapter_step, "message": self.failed or progress_text(view)}


def token_hash(token: str | None) -> str:
    return hashlib.sha256((token or "").strip().encode("utf-8")).hexdigest()


class ApiRuns:
    """The studio's API runs by token (the current one and the last few finished), owned by the app built."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._lock = threading.Lock()
        self._runs: dict[str, ApiRun] = {}

    def find(self, token: str | None) -> ApiRun | None:
        wanted = token_hash(token)
        with self._lock:
            return next((run for key, run in self._runs.items() if hmac.compare_digest(key, wanted)), None)

    def start(self, files: list[str] | None, settings: dict[str, Any]) -> dict[str, Any]:
        """Check the upload and the settings, claim the training and the model, then train in the background."""
        studio = self.studio
        if training_disabled():
            raise gr.Error("Training is switched off on this server (OMNIGEN_DISABLE_TRAINING, or a Space).")
        if studio.live.training is not None:  # before unpacking anything
            raise gr.Error(f"A training ({studio.live.training.name!r}) is already running; one runs at a time.")
        folder = train_data.dataset_folder(studio.output_dir, "api")
        try:
            rows = train_data.rows_from_upload([getattr(f, "name", f) for f in files or []], folder)
        except DatasetError as error:
            raise gr.Error(train_data.problems_message(error)) from None
        dataset, config = prepare_run(studio, rows, settings, resume=False)
        token = secrets.token_urlsafe(24)
        hold = ExitStack()
        try:
            training = studio.live.claim_training(f"api:{token_hash(token)}", config.lora.name)
            hold.callback(studio.live.release_training, training)
            hold.enter_context(studio.live.use.exclusively(training_purpose(config)))
        except PipelineBusy as error:
            hold.close()
            raise gr.Error(str(error)) from None
        run = ApiRun(token_hash(token), training, TrainingView(config.steps, config.lora.name), Path(config.out_dir))
        with self._lock:
            self._runs[run.token_hash] = run
            self._forget_old()
        events = worker_events(studio, dataset, config, training)
        threading.Thread(target=self._follow, args=(run, events, hold), name="omnigen-api-train",
                         daemon=True).start()
        return {"run": run.out_dir.name, "name": config.lora.name, "token": token, "total": config.steps}

    def _follow(self, run: ApiRun, events, hold: ExitStack) -> None:
        """The run's events into its view, in a thread of its own; the model and the training are given back
        when the worker has ended, however it ended."""
        try:
            for event in events:
                if event["type"] == "failed":
                    run.failed = event["message"]
                else:
                    run.view.apply(event)
        except BaseException as error:  # noqa: BLE001 - a caller polling the status reads the sentence
            run.failed = training_message(error)
        finally:
            events.close()
            hold.close()
            run.done.set()

    def _forget_old(self) -> None:
        finished = [key for key, run in self._runs.items() if run.done.is_set()]
        for key in finished[: max(0, len(self._runs) - KEPT_RUNS)]:
            del self._runs[key]

    def status(self, token: str | None) -> dict[str, Any]:
        if (token or "").strip():
            run = self.find(token)
            if run is None:
                raise gr.Error("No training started through this server's API has that token: pass the token "
                               "/train_start returned.")
            return run.status()
        training = self.studio.live.training
        if training is None:
            return {"state": "idle", "message": "Nothing is training."}
        return {"state": "busy", "name": training.name,
                "message": f"A training ({training.name!r}) is running; pass its token for its progress."}

    def stop(self, token: str | None) -> dict[str, Any]:
        run = self.find(token) if (token or "").strip() else None
        if run is None:
            training = self.studio.live.training
            if training is None:
                raise gr.Error("Nothing is training, so there is nothing to stop.")
            raise gr.Error(f"The running training ({training.name!r}) can be stopped only with the token its "
                           "/train_start returned (a page's training, only from that page).")
        if not run.done.is_set():
            run.training.stop.set()
        return run.status()

    def adapter_zip(self, token: str | None) -> str:
        run = self.find(token) if (token or "").strip() else None
        if run is None:
            raise gr.Error("Pass the token /train_start returned: the adapter goes only to the run's caller.")
        folder, step = run.out_dir / "adapter", run.view.adapter_step
        if run.view.adapter is None or step is None or not (folder / "adapter_config.json").is_file():
            raise gr.Error(f"No adapter yet: the run writes one at its first checkpoint (every "
                           f"{TrainConfig.checkpoint_every} steps), when it is stopped, and at its end.")
        target = run.out_dir / f"adapter-{run.view.name}-step-{step:06d}.zip"

        def write(path: Path) -> None:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
                for file in sorted(p for p in folder.iterdir() if p.is_file()):
                    zipped.write(file, f"{run.view.name}/{file.name}")

        return str(atomic_save(target, write))


def build_train_api(studio: Studio) -> None:
    """/train_start, /train_status, /train_stop, /train_adapter. /train_start's parameters are the Train tab's
    settings, made here from the same training settings type (app/train_settings.py) with the same defaults."""
    runs = ApiRuns(studio)
    defaults = page_defaults(studio.defaults().max_input_image_size)
    with gr.Column(visible=False):
        dataset = gr.File(label="dataset", file_count="multiple")
        inputs = [setting_widget(name, defaults[name], page=False) for name in SETTINGS]
        token = gr.Textbox(label="token")
        answer = gr.JSON(label="run")
        status = gr.JSON(label="status")
        samples = gr.File(label="samples", file_count="multiple")
        adapter = gr.File(label="adapter")
        triggers = [gr.Button() for _ in range(4)]

    def train_start(dataset, *values):
        return runs.start(dataset, dict(zip(SETTINGS, values)))

    def train_status(token: str = ""):
        report = runs.status(token)
        return report, report.get("samples") or None

    def train_stop(token: str = ""):
        return runs.stop(token)

    def train_adapter(token: str = ""):
        return runs.adapter_zip(token)

    train_start.__doc__ = ("Start a LoRA training on an uploaded dataset with the Train tab's settings; returns "
                           "{run, name, token, total} at once while it trains in the background.")
    train_start.__signature__ = inspect.Signature(
        [inspect.Parameter("dataset", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=list[str])]
        + [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name])
           for name in SETTINGS])
    train_status.__doc__ = "The run's state, step, total, loss, ETA and latest validation samples (token: its key)."
    train_stop.__doc__ = "Stop the run after its current step; it keeps a checkpoint and its adapter."
    train_adapter.__doc__ = "The run's latest adapter folder as a .zip (load it with OmniGenPipeline.load_lora)."

    gpu = dict(concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit)
    triggers[0].click(train_start, [dataset, *inputs], answer, api_name="train_start", **gpu)
    quick = dict(concurrency_limit=None)
    triggers[1].click(train_status, token, [status, samples], api_name="train_status", **quick)
    triggers[2].click(train_stop, token, status, api_name="train_stop", **quick)
    triggers[3].click(train_adapter, token, adapter, api_name="train_adapter", **quick)
