"""The Train tab: teach the loaded model something new with a LoRA adapter, from the page.

    demo = build_app(studio, extra_tabs=[build_train_tab])

The dataset is built from rows added in the page (an instruction, its input pictures, the target), an
upload (see app/train_data.py), or the one-click example: 16 pictures of a rectangle, a shape the embedded
model's world never had, with its recommended settings (omnigen/mini/lora_example.py). Every problem is
listed by row, line or file before anything trains.

A run is omnigen.training.train_lora on the studio's own pipeline, in a worker thread. The Start handler is
a generator that turns the worker's events into a loss plot, a progress line with the ETA, the validation
samples and the adapter's folder; Stop sets the run's stop Event (Gradio does not interrupt a running
function) and the run ends after its current step with a checkpoint and its adapter. Resume continues the
newest run of the adapter's name up to Steps. One training runs at a time, on the whole server.

Generation and training share one pipeline, so they never run at once. Both are events of the GPU_QUEUE
concurrency group: with the default --concurrency 1 a Generate pressed during a training waits in the
queue until the training has ended (and a training waits for running generations). With a higher
concurrency the studio's PipelineUse refuses a generation while a training holds the model, saying so.

Files go under studio.output_dir, the only folder the page serves: `lora-datasets/` (rows' pictures,
uploads, the example) and `lora-runs/<name>-<date>-<time>/` (train_config.json, loss.csv, checkpoints/,
samples/, adapter/). "Use in Generate tab" loads a run's adapter into the shared pipeline under its name at
a strength; the Generate tab's images then use it and list it in their settings ("loras").

Off with `python app.py --no-train` or OMNIGEN_DISABLE_TRAINING=1 (shared hosts such as Spaces).
"""

from __future__ import annotations

import functools
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

from omnigen.training import DatasetError, LoraSettings, RowsDataset, TrainConfig, latest_checkpoint

from . import train_data
from omnigen.errors import is_out_of_memory

from .engine import GPU_QUEUE, Studio
from .jobs import PipelineBusy, Training, run_in_worker

log = logging.getLogger("omnigen.studio")

DISABLE_ENV = "OMNIGEN_DISABLE_TRAINING"
RUNS = "lora-runs"
EXAMPLE_NAME = "rectangle"
# Page settings, in the order their widgets are passed to handlers.
SETTINGS = ("name", "rank", "alpha", "learning_rate", "steps", "batch_size", "resolution", "targets",
            "validation_prompts", "sample_every", "condition_dropout", "sample_guidance")
TARGET_CHOICES = [("attention (qkv, o)", "attention"), ("attention + MLP", "attention+mlp")]

INTRO = """Teach the model a new subject, style or task with a **LoRA adapter**: a few pictures, a few minutes.
**1.** Build the dataset (or load the example). **2.** Pick settings. **3.** Start, watch the loss and the
validation samples; Stop keeps the adapter trained so far, Resume continues it. **4.** Use it in the Generate tab.

*While a training runs it has the model to itself: a Generate pressed meanwhile waits until it has ended
(or is refused with a message when the server runs several jobs at once).*"""


def training_disabled() -> bool:
    """OMNIGEN_DISABLE_TRAINING=1 turns the tab off, =0 on; unset, it is off on a Hugging Face Space (SPACE_ID
    is set there), where visitors share the model and ZeroGPU grants seconds, not the minutes a training takes."""
    value = os.environ.get(DISABLE_ENV, "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


# ----------------------------------------------------------------------------- what the page shows of a run


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


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_text(view: TrainingView) -> str:
    """One line for the status box: where the run is, its loss, how long it has run and has left."""
    loss = f" · loss {view.losses[-1][1]:.4f}" if view.losses else ""
    if view.finished:
        how = f"Stopped at step {view.step} of {view.total}" if view.stopped else f"Done: {view.step} steps"
        kept = (f" The adapter (step {view.adapter_step}) is ready: **Use in Generate tab** below."
                if view.adapter else " No adapter was saved.")
        return f"{how}{loss} · {duration(view.elapsed_s)}.{kept}"
    percent = 100 * view.step // max(view.total, 1)
    eta = f" · about {duration(view.eta_s)} left" if view.eta_s is not None else ""
    stopping = " · stopping after this step..." if view.stopping else ""
    return (f"Training `{view.name}`: step {view.step} of {view.total} ({percent}%){loss} · "
            f"{duration(view.elapsed_s)} so far{eta}{stopping}")


# ----------------------------------------------------------------------------- settings and runs


def adapter_name(text: str | None) -> str:
    """A name safe for a folder and for peft (letters, digits, - and _), from what the user typed."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", (text or "").strip()).strip("_-")[:48]
    if not name:
        raise ValueError("Give the adapter a name (letters, digits, - and _), e.g. 'rectangle'.")
    return name


def validation_prompts(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def page_config(values: dict[str, Any], out_dir: Path, resume: bool, precision: str = "no") -> TrainConfig:
    """The TrainConfig for the page's settings; raises ValueError naming the first setting that cannot work."""
    steps = _whole(values["steps"], "Steps")
    resolution = _whole(values["resolution"], "Resolution")
    if resolution < 16 or resolution % 16:
        raise ValueError(f"Resolution must be a multiple of 16 (at least 16), got {resolution}.")
    alpha = float(values["alpha"] or 0)
    config = TrainConfig(
        out_dir=str(out_dir), steps=steps, batch_size=_whole(values["batch_size"], "Batch size"),
        learning_rate=float(values["learning_rate"] or 0), mixed_precision=precision,
        # One page setting for both dropouts: each keeps one guidance branch (text, image) trained.
        condition_dropout=float(values["condition_dropout"]),
        image_condition_dropout=float(values["condition_dropout"]),
        resolution_stages=[(0, resolution)], encode_latents_once=True, log_every=1,
        checkpoint_every=max(steps // 4, 1), keep_checkpoints=1, resume=resume,
        lora=LoraSettings(rank=_whole(values["rank"], "Rank"), alpha=alpha if alpha > 0 else None,
                          targets=values["targets"], name=adapter_name(values["name"])),
        validation_prompts=validation_prompts(values["validation_prompts"]),
        sample_every=_whole(values["sample_every"] or 0, "Sample every", minimum=0),
        sample_guidance_scale=float(values["sample_guidance"]))
    config.check()
    return config


def _whole(value: Any, label: str, minimum: int = 1) -> int:
    if value is None or float(value) != int(float(value)) or int(float(value)) < minimum:
        raise ValueError(f"{label} must be a whole number of at least {minimum}, got {value!r}.")
    return int(float(value))


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


# ----------------------------------------------------------------------------- the one run of the server


def training_events(studio: Studio, dataset: RowsDataset, config: TrainConfig, run: Training):
    """Run train_lora on the studio's pipeline in a worker thread, holding the pipeline alone, and yield its
    events; a failure comes as {"type": "failed", "message"}. Closing the generator stops the run (after its
    current step, with a checkpoint) and waits for the worker, so the model is free when it returns."""
    from omnigen.training import train_lora

    def work(emit, stop) -> None:
        train_lora(studio.pipe, dataset, config, callback=emit, stop=stop)

    with studio.live.use.exclusively(f"training the LoRA {config.lora.name!r}"):
        yield from run_in_worker(work, run.stop, lambda error: {"type": "failed", "message": training_message(error)},
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


# ----------------------------------------------------------------------------- the tab


def build_train_tab(studio: Studio) -> None:
    """The Train tab (a gr.Tab inside build_app's gr.Tabs)."""
    with gr.Tab("Train (LoRA)", id="train"):
        gr.Markdown(INTRO, elem_id="train-intro")
        rows = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                data = build_dataset_column()
            with gr.Column(scale=2):
                settings, buttons = build_settings_column(studio)
        shown = build_progress_row()
        use = build_use_row()
    wire_dataset(studio, rows, data, settings)
    wire_training(studio, rows, settings, buttons, shown, use)
    wire_use(studio, use, shown)


def build_dataset_column() -> dict[str, Any]:
    data: dict[str, Any] = {}
    gr.Markdown("### 1. Dataset")
    data["example"] = gr.Button("Load example (new shape: rectangle)", elem_id="train-example")
    with gr.Accordion("Add a row: instruction, input picture(s), target", open=True):
        data["instruction"] = gr.Textbox(label="Instruction", lines=2, elem_id="train-instruction",
                                         placeholder="a red rectangle at the top left on a white background",
                                         info="Input picture k goes where you write <img><|image_k|></img>; none for "
                                              "text-to-image.")
        with gr.Row():
            data["inputs"] = gr.File(label="Input picture(s), in order", file_count="multiple", file_types=["image"],
                                     elem_id="train-inputs", height=150)
            data["target"] = gr.Image(type="filepath", label="Target picture", sources=["upload", "clipboard"],
                                      format="png", height=150, elem_id="train-target")
        data["add"] = gr.Button("Add row", elem_id="train-add-row")
    with gr.Accordion("Or upload a dataset: .zip, .jsonl + its images, or images + same-named .txt", open=False):
        data["upload"] = gr.File(label="Dataset files", file_count="multiple", elem_id="train-upload",
                                 file_types=[".zip", ".jsonl", ".txt", "image"], height=120)
        data["load_upload"] = gr.Button("Add the uploaded dataset", elem_id="train-load-upload")
    data["gallery"] = gr.Gallery(label="Training rows (target pictures)", columns=8, height=220, format="png",
                                 interactive=False, allow_preview=False, elem_id="train-rows")
    data["summary"] = gr.Markdown(train_data.rows_summary([]), elem_id="train-rows-info")
    data["selected"] = gr.State(None)
    with gr.Row():
        data["remove"] = gr.Button("Remove selected row", size="sm", elem_id="train-remove-row")
        data["clear"] = gr.Button("Clear all rows", size="sm", elem_id="train-clear-rows")
    return data


def build_settings_column(studio: Studio) -> tuple[dict[str, Any], dict[str, Any]]:
    s: dict[str, Any] = {}
    gr.Markdown("### 2. Settings")
    s["name"] = gr.Textbox("my_adapter", label="Adapter name", elem_id="train-name")
    with gr.Row():
        s["rank"] = gr.Slider(1, 128, 8, step=1, label="Rank", elem_id="train-rank")
        s["alpha"] = gr.Number(0, minimum=0, label="Alpha (0: the rank)", elem_id="train-alpha")
    with gr.Row():
        s["learning_rate"] = gr.Number(1e-4, minimum=0, label="Learning rate", elem_id="train-lr")
        s["steps"] = gr.Number(300, precision=0, minimum=1, label="Steps", elem_id="train-steps")
    with gr.Row():
        s["batch_size"] = gr.Slider(1, 32, 1, step=1, label="Batch size", elem_id="train-batch")
        size = studio.defaults().max_input_image_size
        s["resolution"] = gr.Slider(16, max(2048, size), size, step=16, label="Resolution (longest side)",
                                    elem_id="train-resolution")
    s["targets"] = gr.Radio(TARGET_CHOICES, value="attention", label="Target modules", elem_id="train-targets")
    with gr.Accordion("Validation and regularisation", open=False):
        s["validation_prompts"] = gr.Textbox(label="Validation prompts (one per line, sampled with fixed seeds)",
                                             lines=3, elem_id="train-validation-prompts")
        with gr.Row():
            s["sample_every"] = gr.Number(0, precision=0, minimum=0, label="Sample every N steps (0: at the end)",
                                          elem_id="train-sample-every")
            s["sample_guidance"] = gr.Slider(1.0, 5.0, 2.5, step=0.1, label="Sample guidance",
                                             elem_id="train-sample-guidance")
        s["condition_dropout"] = gr.Slider(0.0, 0.5, 0.1, step=0.05, elem_id="train-dropout",
                                           label="Condition dropout (keeps guidance working; 0 for tiny datasets)")
    buttons: dict[str, Any] = {}
    with gr.Row():
        buttons["start"] = gr.Button("Start", variant="primary", elem_id="train-start")
        buttons["stop"] = gr.Button("Stop", variant="stop", elem_id="train-stop")
        buttons["resume"] = gr.Button("Resume", elem_id="train-resume")
    return s, buttons


def build_progress_row() -> dict[str, Any]:
    shown: dict[str, Any] = {}
    gr.Markdown("### 3. Progress")
    shown["status"] = gr.Markdown("Not training.", elem_id="train-status", min_height=48)
    with gr.Row():
        shown["plot"] = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Training loss", height=260,
                                    x_title="step", y_title="loss", elem_id="train-loss-plot")
        shown["samples"] = gr.Gallery(label="Validation samples", columns=5, height=260, format="png",
                                      interactive=False, elem_id="train-samples")
    return shown


def build_use_row() -> dict[str, Any]:
    use: dict[str, Any] = {}
    gr.Markdown("### 4. Use the adapter")
    with gr.Row():
        use["adapter"] = gr.Textbox(label="Adapter folder", interactive=False, elem_id="train-adapter", scale=3)
        use["strength"] = gr.Slider(-1.0, 2.0, 1.0, step=0.05, label="Strength", elem_id="train-strength", scale=2)
    with gr.Row():
        use["use"] = gr.Button("Use in Generate tab", variant="primary", interactive=False, elem_id="train-use")
        use["unload"] = gr.Button("Unload adapters (base model)", elem_id="train-unload")
    use["loaded"] = gr.Markdown("The Generate tab uses the base model (no adapter loaded).", elem_id="train-loaded")
    return use


# ----------------------------------------------------------------------------- wiring: the dataset


def example_settings(studio: Studio) -> dict[str, Any]:
    """The example's recommended settings (omnigen.mini.lora_example.example_train_config), as page values.
    Samples come every third of the run so the page shows the shape appearing."""
    from omnigen.mini.lora_example import example_train_config
    from omnigen.mini.world import DEFAULT_SIZE

    c = example_train_config("unused")
    return dict(name=EXAMPLE_NAME, rank=c.lora.rank, alpha=c.lora.alpha or 0, learning_rate=c.learning_rate,
                steps=c.steps, batch_size=c.batch_size, resolution=DEFAULT_SIZE, targets=c.lora.targets,
                validation_prompts="\n".join(c.validation_prompts), sample_every=max(c.steps // 3, 1),
                condition_dropout=c.condition_dropout, sample_guidance=c.sample_guidance_scale)


def rows_outputs(rows: list) -> tuple[list, list, str]:
    return rows, train_data.gallery_items(rows), train_data.rows_summary(rows)


def wire_dataset(studio: Studio, rows: gr.State, data: dict, settings: dict) -> None:
    shown = [rows, data["gallery"], data["summary"]]

    def add_row(request: gr.Request, current: list, instruction: str, inputs: list | None, target: str | None):
        inputs = [getattr(f, "name", f) for f in inputs or []]
        try:
            train_data.check_row(instruction, inputs, target)
        except DatasetError as error:
            raise gr.Error("This row cannot train: " + "; ".join(error.problems) + ".") from None
        folder = train_data.dataset_folder(studio.output_dir, "rows", request.session_hash[:16])
        current = list(current or []) + [train_data.stored_row(instruction, inputs, target, folder)]
        return *rows_outputs(current), "", None, None

    def add_upload(current: list, files: list | None):
        folder = train_data.dataset_folder(studio.output_dir, "upload")
        try:
            added = train_data.rows_from_upload([getattr(f, "name", f) for f in files or []], folder)
        except DatasetError as error:
            raise gr.Error(train_data.problems_message(error), duration=None, title="Dataset problems") from None
        gr.Info(f"Added {len(added)} row(s) from the upload.")
        return *rows_outputs(list(current or []) + added), None

    def load_example():
        return *rows_outputs(train_data.example_rows(studio.output_dir)), *example_settings(studio).values()

    # No progress badges: a refused row or upload is a toast, not an "Error" stamped on the widgets.
    quiet = dict(show_progress="hidden", api_visibility="private")
    data["add"].click(add_row, [rows, data["instruction"], data["inputs"], data["target"]],
                      [*shown, data["instruction"], data["inputs"], data["target"]], **quiet)
    data["load_upload"].click(add_upload, [rows, data["upload"]], [*shown, data["upload"]], **quiet)
    data["example"].click(load_example, None, [*shown, *(settings[k] for k in SETTINGS)], **quiet)
    data["gallery"].select(select_row, None, data["selected"], api_visibility="private")
    data["remove"].click(remove_row, [rows, data["selected"]], [*shown, data["selected"]], api_visibility="private")
    data["clear"].click(lambda: (*rows_outputs([]), None), None, [*shown, data["selected"]], api_visibility="private")


def select_row(evt: gr.SelectData) -> int:
    return evt.index


def remove_row(current: list, selected: int | None):
    current = list(current or [])
    if selected is None or not 0 <= int(selected) < len(current):
        raise gr.Error("Click a row's thumbnail first, then Remove.")
    del current[int(selected)]
    return *rows_outputs(current), None


# ----------------------------------------------------------------------------- wiring: training


def wire_training(studio: Studio, rows: gr.State, settings: dict, buttons: dict, shown: dict, use: dict) -> None:
    values = [settings[k] for k in SETTINGS]
    outputs = (shown["status"], shown["plot"], shown["samples"], use["adapter"], use["use"])
    for button, resume in ((buttons["start"], False), (buttons["resume"], True)):
        # Mistakes are refused at once, before the run queues behind generations for the GPU.
        checked = button.click(make_check(studio, resume), [rows, *values], None, concurrency_limit=None,
                               show_progress="hidden", api_visibility="private")
        checked.success(make_train_handler(studio, resume, outputs), [rows, *values], list(outputs),
                        concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit,
                        show_progress="minimal", show_progress_on=[shown["status"]], api_visibility="private")
    def request_stop(request: gr.Request) -> str:
        return studio.live.stop_training(request.session_hash)

    buttons["stop"].click(request_stop, None, shown["status"], queue=False, api_visibility="private")


def make_check(studio: Studio, resume: bool):
    def check(current_rows: list, *values) -> None:
        if studio.live.training is not None:
            raise gr.Error(f"A training ({studio.live.training.name!r}) is already running; one runs at a time.")
        prepare_run(studio, current_rows, dict(zip(SETTINGS, values)), resume)

    return check


def make_train_handler(studio: Studio, resume: bool, outputs: tuple):
    def train(request: gr.Request, current_rows: list, *values):
        dataset, config = prepare_run(studio, current_rows, dict(zip(SETTINGS, values)), resume)
        try:
            run = studio.live.claim_training(request.session_hash, config.lora.name)
        except PipelineBusy as error:
            raise gr.Error(str(error)) from None
        try:
            yield from stream_run(studio, dataset, config, run, outputs)
        finally:
            studio.live.release_training(run)

    return train


def stream_run(studio: Studio, dataset: RowsDataset, config: TrainConfig, run: Training, outputs: tuple):
    """The page updates of one run: a first one at once, then one per event of the worker."""
    status, plot, samples, adapter_box, use_button = outputs
    out_dir = Path(config.out_dir)
    start = reached_step(out_dir) if config.resume else 0
    view = TrainingView(config.steps, config.lora.name, step=start,
                        losses=earlier_losses(out_dir, start) if config.resume else [])
    yield {status: f"{'Resuming' if config.resume else 'Starting'} `{view.name}` at step {start}: preparing "
                   f"{len(dataset)} example(s)...",
           plot: loss_frame(view.losses), samples: gr.Gallery(value=[], label="Validation samples"),
           adapter_box: "", use_button: gr.Button(interactive=False)}
    events = training_events(studio, dataset, config, run)
    try:
        for event in events:
            if event["type"] == "failed":
                raise gr.Error(event["message"])
            view.stopping = run.stop.is_set()
            view.apply(event)
            yield event_update(view, event, outputs)
    except PipelineBusy as error:
        raise gr.Error(str(error)) from None
    finally:
        events.close()  # on a closed page too: stops the worker and waits for it


def event_update(view: TrainingView, event: dict, outputs: tuple) -> dict:
    status, plot, samples, adapter_box, use_button = outputs
    update: dict = {status: progress_text(view)}
    if event["type"] == "step":
        update[plot] = loss_frame(view.losses)
    elif event["type"] == "samples":
        update[samples] = gr.Gallery(value=list(view.samples), label=f"Validation samples at step {view.sample_step}")
    if event["type"] in ("checkpoint", "done") and view.adapter:
        update[adapter_box] = view.adapter
        update[use_button] = gr.Button(interactive=True)
    return update


# ----------------------------------------------------------------------------- wiring: using the adapter


def loaded_text(studio: Studio) -> str:
    from omnigen.lora import lora_scales

    scales = lora_scales(studio.pipe.transformer)
    if not scales:
        return "The Generate tab uses the base model (no adapter loaded)."
    listed = ", ".join(f"`{name}` at strength {scale:g}" for name, scale in scales.items())
    return f"The Generate tab uses {listed}; its images list the adapter under `loras` in their settings."


def wire_use(studio: Studio, use: dict, shown: dict) -> None:
    from omnigen.lora import lora_scales

    def load(adapter: str, strength: float) -> str:
        path, name = run_of_adapter(studio, adapter)
        with studio.live.use.exclusively(f"loading the LoRA {name!r}"):
            if name in lora_scales(studio.pipe.transformer):  # a newer training of the same name replaces it
                studio.pipe.unload_lora(name)
            studio.pipe.load_lora(path, name=name, scale=float(strength))
        return loaded_text(studio)

    def rescale(adapter: str, strength: float) -> str:
        if not adapter:
            return loaded_text(studio)
        _, name = run_of_adapter(studio, adapter)
        if name in lora_scales(studio.pipe.transformer):
            with studio.live.use.exclusively(f"changing the LoRA {name!r}"):
                studio.pipe.set_lora_scales({name: float(strength)})
        return loaded_text(studio)

    def unload() -> str:
        if lora_scales(studio.pipe.transformer):
            with studio.live.use.exclusively("unloading the LoRA adapters"):
                studio.pipe.unload_lora()
        return loaded_text(studio)

    quick = dict(concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit, api_visibility="private")
    use["use"].click(readable(load), [use["adapter"], use["strength"]], use["loaded"], **quick)
    use["strength"].release(readable(rescale), [use["adapter"], use["strength"]], use["loaded"], **quick)
    use["unload"].click(readable(unload), None, use["loaded"], **quick)


def readable(handler):
    """The handler with its ValueErrors (a busy model, a foreign adapter) shown as gr.Error sentences."""
    @functools.wraps(handler)
    def wrapped(*args):
        try:
            return handler(*args)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    return wrapped
