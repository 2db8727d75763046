"""The Train tab: teach the loaded model something new with a LoRA adapter, from the page.

    demo = build_app(studio, extra_tabs=[build_train_tab])

The dataset is built from rows added in the page (an instruction, its input pictures, the target), an
upload (see app/train_data.py), or the one-click example: 16 pictures of a rectangle, a shape the embedded
model's world never had, with its recommended settings (assets/examples/lora-rectangle/). Every problem is
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
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.training import DatasetError, RowsDataset, TrainConfig

from . import train_data
from .engine import GPU_QUEUE, Studio
from .i18n import language, t, text, translate
from .jobs import PipelineBusy, Training
from .train_api import build_train_api
# The runs themselves (folders, the worker, what the page shows): app/train_runs.py; the settings and their
# widgets, made from omnigen.training.TrainConfig: app/train_settings.py.
from .train_runs import (DISABLE_ENV, TrainingView, earlier_losses, event_update, loss_frame, prepare_run,  # noqa: F401
                         reached_step, run_of_adapter, training_disabled, training_events)
from .train_settings import SETTINGS, page_defaults, page_values, setting_widget

log = logging.getLogger("omnigen.studio")

# The tab's texts, in English and Chinese, are in app/i18n_en.py and app/i18n_zh.py (keys train_*).


# ----------------------------------------------------------------------------- the tab


def build_train_tab(studio: Studio) -> None:
    """The Train tab (a gr.Tab inside build_app's gr.Tabs)."""
    with gr.Tab(t("tab_train"), id="train"):
        gr.Markdown(t("train_intro"), elem_id="train-intro")
        rows = gr.State([])
        with gr.Row():
            with gr.Column(scale=3):
                data = build_dataset_column()
            with gr.Column(scale=2):
                settings, buttons = build_settings_column(studio)
        shown = build_progress_row()
        use = build_use_row()
        build_train_api(studio)  # the same runs as named API endpoints: app/train_api.py
    wire_dataset(studio, rows, data, settings)
    wire_training(studio, rows, settings, buttons, shown, use)
    wire_use(studio, use, shown)


def build_dataset_column() -> dict[str, Any]:
    data: dict[str, Any] = {}
    gr.Markdown(t("train_dataset"))
    data["example"] = gr.Button(t("train_example"), elem_id="train-example")
    with gr.Accordion(t("train_add_accordion"), open=True):
        data["instruction"] = gr.Textbox(label=t("train_instruction"), lines=2, elem_id="train-instruction",
                                         placeholder=t("train_instruction_placeholder"),
                                         info=t("train_instruction_info"))
        with gr.Row():
            data["inputs"] = gr.File(label=t("train_inputs"), file_count="multiple", file_types=["image"],
                                     elem_id="train-inputs", height=150)
            data["target"] = gr.Image(type="filepath", label=t("train_target"), sources=["upload", "clipboard"],
                                      format="png", height=150, elem_id="train-target")
        data["add"] = gr.Button(t("train_add_row"), elem_id="train-add-row")
    with gr.Accordion(t("train_upload_accordion"), open=False):
        data["upload"] = gr.File(label=t("train_upload"), file_count="multiple", elem_id="train-upload",
                                 file_types=[".zip", ".jsonl", ".txt", "image"], height=120)
        data["load_upload"] = gr.Button(t("train_load_upload"), elem_id="train-load-upload")
    data["gallery"] = gr.Gallery(label=t("train_rows"), columns=8, height=220, format="png",
                                 interactive=False, allow_preview=False, elem_id="train-rows")
    data["summary"] = gr.Markdown(train_data.rows_summary([]), elem_id="train-rows-info")
    data["selected"] = gr.State(None)
    with gr.Row():
        data["remove"] = gr.Button(t("train_remove_row"), size="sm", elem_id="train-remove-row")
        data["clear"] = gr.Button(t("train_clear_rows"), size="sm", elem_id="train-clear-rows")
    return data


def build_settings_column(studio: Studio) -> tuple[dict[str, Any], dict[str, Any]]:
    values = page_defaults(studio.defaults().max_input_image_size)
    widget = lambda name: setting_widget(name, values[name])  # noqa: E731
    s: dict[str, Any] = {}
    gr.Markdown(t("train_settings"))
    s["name"] = widget("name")
    for pair in (("rank", "alpha"), ("learning_rate", "steps"), ("batch_size", "resolution")):
        with gr.Row():
            for name in pair:
                s[name] = widget(name)
    s["targets"] = widget("targets")
    s["gradient_checkpointing"] = widget("gradient_checkpointing")
    with gr.Accordion(t("train_validation_accordion"), open=False):
        s["validation_prompts"] = widget("validation_prompts")
        with gr.Row():
            s["sample_every"] = widget("sample_every")
            s["sample_guidance_scale"] = widget("sample_guidance_scale")
        with gr.Row():
            s["condition_dropout"] = widget("condition_dropout")
            s["max_grad_norm"] = widget("max_grad_norm")
    buttons: dict[str, Any] = {}
    with gr.Row():
        buttons["start"] = gr.Button(t("train_start"), variant="primary", elem_id="train-start")
        buttons["stop"] = gr.Button(t("train_stop"), variant="stop", elem_id="train-stop")
        buttons["resume"] = gr.Button(t("train_resume"), elem_id="train-resume")
    return s, buttons


def build_progress_row() -> dict[str, Any]:
    shown: dict[str, Any] = {}
    gr.Markdown(t("train_progress"))
    shown["status"] = gr.Markdown(t("train_not_training"), elem_id="train-status", min_height=48)
    with gr.Row():
        shown["plot"] = gr.LinePlot(loss_frame([]), x="step", y="loss", title=t("train_loss"), height=260,
                                    x_title="step", y_title="loss", elem_id="train-loss-plot")
        shown["samples"] = gr.Gallery(label=t("train_samples"), columns=5, height=260, format="png",
                                      interactive=False, elem_id="train-samples")
    return shown


def build_use_row() -> dict[str, Any]:
    use: dict[str, Any] = {}
    gr.Markdown(t("train_use_title"))
    with gr.Row():
        use["adapter"] = gr.Textbox(label=t("train_adapter_folder"), interactive=False, elem_id="train-adapter",
                                    scale=3)
        use["strength"] = gr.Slider(-1.0, 2.0, 1.0, step=0.05, label=t("strength"), elem_id="train-strength", scale=2)
    with gr.Row():
        use["use"] = gr.Button(t("train_use"), variant="primary", interactive=False, elem_id="train-use")
        use["unload"] = gr.Button(t("train_unload"), elem_id="train-unload")
    use["loaded"] = gr.Markdown(t("train_base_model"), elem_id="train-loaded")
    return use


# ----------------------------------------------------------------------------- wiring: the dataset


def example_settings(studio: Studio) -> dict[str, Any]:
    """The one-click example's recommended settings (assets/examples/lora-rectangle), as page values."""
    return page_values(train_data.example_config())


def rows_outputs(rows: list) -> tuple[list, list, str]:
    return rows, train_data.gallery_items(rows), train_data.rows_summary(rows)


def wire_dataset(studio: Studio, rows: gr.State, data: dict, settings: dict) -> None:
    shown = [rows, data["gallery"], data["summary"]]

    def add_row(request: gr.Request, current: list, instruction: str, inputs: list | None, target: str | None):
        inputs = [getattr(f, "name", f) for f in inputs or []]
        try:
            train_data.check_row(instruction, inputs, target)
        except DatasetError as error:
            raise gr.Error(text("error_train_row", problems="; ".join(error.problems))) from None
        folder = train_data.dataset_folder(studio.output_dir, "rows", request.session_hash[:16])
        current = list(current or []) + [train_data.stored_row(instruction, inputs, target, folder)]
        return *rows_outputs(current), "", None, None

    def add_upload(current: list, files: list | None):
        folder = train_data.dataset_folder(studio.output_dir, "upload")
        try:
            added = train_data.rows_from_upload([getattr(f, "name", f) for f in files or []], folder)
        except DatasetError as error:
            raise gr.Error(train_data.problems_message(error), duration=None,
                           title=text("train_dataset_problems")) from None
        gr.Info(text("info_train_added", count=len(added)))
        return *rows_outputs(list(current or []) + added), None

    def load_example():
        settings_values = example_settings(studio)
        return *rows_outputs(train_data.example_rows(studio.output_dir)), *(settings_values[k] for k in SETTINGS)

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
        raise gr.Error(text("error_train_remove"))
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
            raise gr.Error(translate(f"A training ({studio.live.training.name!r}) is already running; one runs at a "
                                     "time."))
        prepare_run(studio, current_rows, dict(zip(SETTINGS, values)), resume)

    return check


def make_train_handler(studio: Studio, resume: bool, outputs: tuple):
    def train(request: gr.Request, current_rows: list, *values):
        dataset, config = prepare_run(studio, current_rows, dict(zip(SETTINGS, values)), resume)
        try:
            run = studio.live.claim_training(request.session_hash, config.lora.name)
        except PipelineBusy as error:
            raise gr.Error(translate(str(error))) from None
        try:
            yield from stream_run(studio, dataset, config, run, outputs, language(request))
        finally:
            studio.live.release_training(run)

    return train


def stream_run(studio: Studio, dataset: RowsDataset, config: TrainConfig, run: Training, outputs: tuple,
               lang: str = "en"):
    """The page updates of one run, in the page's language: a first one at once, then one per event of the worker."""
    status, plot, samples, adapter_box, use_button = outputs
    out_dir = Path(config.out_dir)
    start = reached_step(out_dir) if config.resume else 0
    view = TrainingView(config.steps, config.lora.name, step=start,
                        losses=earlier_losses(out_dir, start) if config.resume else [])
    yield {status: text("train_resuming" if config.resume else "train_starting", lang=lang, name=view.name,
                        step=start, count=len(dataset)),
           plot: loss_frame(view.losses), samples: gr.Gallery(value=[], label=text("train_samples", lang=lang)),
           adapter_box: "", use_button: gr.Button(interactive=False)}
    events = training_events(studio, dataset, config, run)
    try:
        for event in events:
            if event["type"] == "failed":
                raise gr.Error(translate(event["message"]))
            view.stopping = run.stop.is_set()
            view.apply(event)
            yield event_update(view, event, outputs, lang)
    except PipelineBusy as error:
        raise gr.Error(translate(str(error))) from None
    finally:
        events.close()  # on a closed page too: stops the worker and waits for it


# ----------------------------------------------------------------------------- wiring: using the adapter


def loaded_text(studio: Studio) -> str:
    from .adapters import loaded_adapters

    scales = loaded_adapters(studio)
    if not scales:
        return "The Generate tab uses the base model (no adapter loaded)."
    listed = ", ".join(f"`{name}` at strength {scale:g}" for name, scale in scales.items())
    return (f"The Generate tab uses {listed} (its Adapters list shows them too); its images list the adapters under "
            "`loras` in their settings.")


def wire_use(studio: Studio, use: dict, shown: dict) -> None:
    """The run's adapter into the shared pipeline, through the same calls as the Generate tab's Adapters list."""
    from .adapters import load_adapter, loaded_adapters, set_strength, unload_adapter

    def load(adapter: str, strength: float) -> str:
        path, name = run_of_adapter(studio, adapter)
        # A newer training of the same name replaces the loaded one.
        load_adapter(studio, Path(path), name, strength, source=f"Train tab: {Path(path).parent.name}", replace=True)
        return loaded_text(studio)

    def rescale(adapter: str, strength: float) -> str:
        if not adapter:
            return loaded_text(studio)
        _, name = run_of_adapter(studio, adapter)
        if name in loaded_adapters(studio):
            set_strength(studio, name, strength)
        return loaded_text(studio)

    def unload() -> str:
        unload_adapter(studio)
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
            raise gr.Error(translate(str(error))) from None

    return wrapped
