"""The Generate tab: the prompt, its pictures and the settings on the left; results, history and the copy-as-Python
snippet on the right; and the Generate and Cancel events that join them.

    page, shown = build_generate_tab(studio)     # inside a gr.Tab; widget dicts other tabs may read or fill

`page` holds the inputs (preset, prompt, slots, the settings panel by FIELDS, adapters, ...), `shown` the outputs
(status, results, history, ...). A run goes through app.running.follow_job, as the API's and a grid's do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.errors import sentence
from omnigen.png import python_snippet
from omnigen.presets import PRESETS
from omnigen.settings import (GenerationSettings, random_seed, read_value, setting_field, setting_names,
                              value_type)

from . import history as hist
from .adapters_ui import adapter_view, build_adapters_panel, view_outputs, wire_adapters
from .composition_ui import build_composition_panel, wire_composition
from .engine import GPU_QUEUE, MAX_INPUT_IMAGES, Studio
from .history_ui import wire_history
from .i18n import choice_pairs, t, t_then, text, translate, translator
from .jobs import DoneEvent, GenerationJob, StepEvent
from .picture_ui import build_picture_panel, wire_picture
from .presets_ui import build_preset_picker, wire_presets
from .prompt_editing import image_problems
from .prompt_ui import build_image_slots, mask_for_job, render_prompt, wire_mask, wire_prompt_editing
from .running import Cancelled, checked_job, follow_job, step_progress

SLOTS = range(1, MAX_INPUT_IMAGES + 1)
# Page settings, in the order their widgets are passed to handlers.
FIELDS = ("width", "height", "num_inference_steps", "guidance_scale", "img_guidance_scale", "negative_prompt",
          "seed", "randomize_seed", "num_images_per_prompt", "max_input_image_size", "output_size", "cfg_mode",
          "use_kv_cache", "use_img_guidance", "time_shift", "sampler", "schedule", "guidance_start", "guidance_end",
          "cache_threshold", "preview_every")
# Page fields that are generation settings of the same name (the others: seed, randomize_seed, output_size
# and preview_every are the page's own ways of saying them).
SETTING_FIELDS = tuple(name for name in FIELDS if name in setting_names() and name != "seed")


def build_generate_tab(studio: Studio) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Generate tab: inputs on the left, results on the right, then the events that join them."""
    with gr.Row():
        with gr.Column(scale=3):
            page = build_input_column(studio)
        with gr.Column(scale=2):
            shown = build_output_column(studio)
    wire_presets(studio, page)
    wire_prompt_editing(page)
    wire_mask(page)
    wire_adapters(studio, page["adapters"])
    wire_picture(studio, page["picture"], [page["preset"], page["prompt"], *page["panel"].values()],
                 functools.partial(page_values_from_settings, top=studio.pipe.max_image_side))
    wire_generation(studio, page, shown)
    wire_history(studio, page, shown, page_values_from_settings)
    wire_composition(studio, page, shown, FIELDS, settings_from_page, page_values_from_settings)
    return page, shown


def build_input_column(studio: Studio) -> dict[str, Any]:
    page: dict[str, Any] = {}
    page["preset"], page["preset_info"], page["variant"], page["examples"] = build_preset_picker()
    page["prompt"] = gr.Textbox(PRESETS["text_to_image"].template, lines=3, label=t("prompt_label"), elem_id="prompt",
                                info=t("prompt_info"))
    page["slots"], page["slot_buttons"], page["caret"] = build_image_slots()
    page["prompt_view"] = gr.HTML(render_prompt(page["prompt"].value, [None] * MAX_INPUT_IMAGES),
                                  elem_id="prompt-preview")
    with gr.Group(visible=False) as page["fewshot_group"]:
        with gr.Row():
            page["fewshot_pairs"] = gr.Slider(1, (MAX_INPUT_IMAGES - 1) // 2, value=1, step=1,
                                              label=t("fewshot_pairs"), elem_id="fewshot-pairs")
            page["fewshot_build"] = gr.Button(t("fewshot_build"), elem_id="fewshot-build")
    page["condition_button"] = gr.Button(t("condition_button"), visible=False,
                                         elem_id="make-condition")
    with gr.Accordion(t("mask_accordion"), open=False,
                      visible=False) as page["mask_group"]:
        page["mask_load"] = gr.Button(t("mask_load"), elem_id="mask-load")
        page["mask_editor"] = gr.ImageEditor(
            type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False, format="png",
            label=t("mask_label"),
            elem_id="mask-editor", brush=gr.Brush(colors=["#ff0066"], color_mode="fixed", default_size=8))
        page["mask_info"] = gr.Markdown(t("mask_none"), elem_id="mask-info")
    with gr.Row():
        page["generate"] = gr.Button(t("generate"), variant="primary", elem_id="generate")
        page["cancel"] = gr.Button(t("cancel"), variant="stop", elem_id="cancel")
    page["panel"] = build_settings_panel(studio, studio.defaults())
    page["adapters"] = build_adapters_panel(studio)
    page["picture"] = build_picture_panel()
    page["composition"] = build_composition_panel()
    return page


def build_output_column(studio: Studio) -> dict[str, Any]:
    # The browser's id names its history in the output folder; kept in its localStorage, never shared.
    shown: dict[str, Any] = {"browser": gr.BrowserState(None, storage_key="omnigen-studio-browser",
                                                        secret=studio.history.secret()),
                             "selection": gr.State(None), "latest": gr.State(None)}
    shown["status"] = gr.Markdown(t("status_ready"), elem_id="status", min_height=56)
    shown["preview"] = gr.Image(label=t("live_preview"), format="png", interactive=False, height=200,
                                elem_id="preview")
    shown["results"] = gr.Gallery(label=t("results"), format="png", columns=2, height="auto", interactive=False,
                                  buttons=["download", "fullscreen"], elem_id="results")
    shown["before_after"] = gr.ImageSlider(label=t("before_after"), format="png",
                                           visible=False, elem_id="before-after")
    with gr.Row():
        shown["use_slot"] = gr.Dropdown([(t_then("image_word", f" {k}"), k) for k in SLOTS], value=1,
                                        label=t("send_to"),
                                        elem_id="use-slot", scale=1)
        shown["use_as_input"] = gr.Button(t("use_as_input"), elem_id="use-as-input", scale=1)
        shown["reuse"] = gr.Button(t("reuse"), elem_id="reuse", scale=2)
        shown["to_composition"] = gr.Button(t("history_to_composition"), elem_id="to-composition", scale=1)
        shown["download"] = gr.DownloadButton(t("download_png"), visible=False, elem_id="download", scale=1)
    shown["settings_json"] = gr.JSON(label=t("settings_json"),
                                     elem_id="settings-json")
    shown["code"] = gr.Code(language="python", label=t("copy_python"), buttons=["copy"], elem_id="python-code")
    shown["history_gallery"] = gr.Gallery(label=t("history"), format="png", columns=4,
                                          height=240, interactive=False, elem_id="history")
    with gr.Row():
        shown["history_info"] = gr.Markdown(history_note(studio), elem_id="history-info")
        shown["delete"] = gr.Button(t("history_delete"), size="sm", variant="stop", elem_id="history-delete",
                                    scale=0, min_width=200)
    return shown


def history_note(studio: Studio, request: gr.Request | None = None) -> str:
    limit = studio.history.limit
    lang = None if request is not None else "en"
    return text("history_note_limit", request, lang, limit=limit) if limit else text("history_note_all", request, lang)


RUN_OUTPUTS = ("status", "preview", "results", "before_after", "settings_json", "code", "download", "latest",
               "history_gallery", "selection")


def wire_generation(studio: Studio, page: dict, shown: dict) -> None:
    slots, panel = page["slots"], page["panel"]
    outputs = {name: shown[name] for name in RUN_OUTPUTS} | {"seed": panel["seed"]}
    # A mismatch is refused at once, before the job queues behind others for the GPU.
    start_run, request_stop = make_run_controls(studio)
    checked = page["generate"].click(start_run, [page["prompt"], panel["output_size"], *slots], None,
                                     concurrency_limit=None, show_progress="hidden", api_visibility="private")
    ran = checked.success(make_generate_handler(studio, outputs),
                          [page["preset"], page["prompt"], *slots, page["mask_editor"], *panel.values(),
                           shown["browser"]],
                          list(outputs.values()), concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit,
                          show_progress_on=[shown["status"]], api_name="generate_ui", api_visibility="private")
    ran.then(lambda: adapter_view(studio), None, view_outputs(page["adapters"]), api_visibility="private",
             queue=False)
    page["cancel"].click(request_stop, None, None, queue=False, api_visibility="private")


def setting_widget(name: str, value: Any, top: int, **layout: Any) -> Any:
    """A widget for one generation setting: label, range, step and choices come from omnigen.settings."""
    spec = setting_field(name)
    meta, kind = spec.metadata, value_type(spec)
    element = {"num_inference_steps": "steps", "guidance_scale": "guidance", "img_guidance_scale": "img-guidance",
               "num_images_per_prompt": "num-images", "max_input_image_size": "max-input-size",
               "use_kv_cache": "kv-cache"}.get(name, name.replace("_", "-"))
    common = dict(label=t(f"setting_{name}_label"), elem_id=element, **layout)
    if kind is bool:
        return gr.Checkbox(value, **common)
    if meta["choices"]:
        return gr.Radio(choice_pairs(name, meta["choices"]), value=value, info=t(f"setting_{name}_help"), **common)
    if kind is str:
        return gr.Textbox(value, lines=1, **common)
    if meta["multiple_of"]:  # image sides: up to what the model can draw
        return gr.Slider(meta["minimum"], top, value, step=meta["multiple_of"], **common)
    low, high, step = meta["ui"] or (meta["minimum"], meta["maximum"], 1 if kind is int else 0.1)
    return gr.Slider(low, high, value, step=step, **common)


def build_settings_panel(studio: Studio, d: GenerationSettings) -> dict[str, Any]:
    top = studio.pipe.max_image_side
    panel: dict[str, Any] = {}
    with gr.Accordion(t("settings"), open=True):
        with gr.Row():
            for name in ("width", "height"):
                panel[name] = setting_widget(name, getattr(d, name), top)
        with gr.Row():
            for name in ("num_inference_steps", "guidance_scale", "img_guidance_scale"):
                panel[name] = setting_widget(name, getattr(d, name), top)
        with gr.Row():
            panel["negative_prompt"] = setting_widget("negative_prompt", d.negative_prompt, top, scale=3)
            panel["seed"] = gr.Number(d.seed, precision=0, minimum=0, label=t("seed"), elem_id="seed", scale=1)
            panel["randomize_seed"] = gr.Checkbox(True, label=t("random_seed"), elem_id="randomize-seed", scale=1)
        with gr.Row():
            for name in ("num_images_per_prompt", "max_input_image_size"):
                panel[name] = setting_widget(name, getattr(d, name), top)
            sizes = [(t("output_size_given"), 0)] + [(t_then("size_of_image", f" {k}"), k) for k in SLOTS]
            panel["output_size"] = gr.Dropdown(sizes, value=d.use_input_image_size_as_output, label=t("output_size"),
                                               elem_id="output-size")
        with gr.Accordion(t("advanced"), open=False):
            with gr.Row():
                for name in ("cfg_mode", "use_kv_cache", "use_img_guidance", "time_shift"):
                    panel[name] = setting_widget(name, getattr(d, name), top)
            with gr.Row():
                for name in ("sampler", "schedule"):
                    panel[name] = setting_widget(name, getattr(d, name), top)
            with gr.Row():
                for name in ("guidance_start", "guidance_end", "cache_threshold"):
                    panel[name] = setting_widget(name, getattr(d, name), top)
            with gr.Row():
                panel["preview_every"] = gr.Slider(0, 20, 5, step=1, label=t("preview_every"),
                                                   elem_id="preview-every")
                # Where the model waits between steps: the pipeline's, for every page, changed between jobs.
                offload = gr.Dropdown([(t(f"offload_{mode}"), mode) for mode in ("none", "model", "sequential")],
                                      value=studio.pipe.offload or "none", label=t("offload"), elem_id="offload")
    assert tuple(panel) == FIELDS
    offload.change(lambda mode: change_offload(studio, mode), offload, offload, api_visibility="private")
    return panel


def change_offload(studio: Studio, mode: str) -> str:
    try:
        studio.set_offload(None if mode in (None, "none") else mode)
    except ValueError as error:
        gr.Warning(translate(str(error)))
    return studio.pipe.offload or "none"


# ----------------------------------------------------------------------------- running


def settings_from_page(studio: Studio, values: dict[str, Any]) -> GenerationSettings:
    """The generation settings the page's widgets say, checked against the model."""
    seed = random_seed() if values["randomize_seed"] else values["seed"] or 0
    try:
        given = {name: read_value(name, values[name]) for name in SETTING_FIELDS}
        given.update(seed=read_value("seed", seed),
                     use_input_image_size_as_output=read_value("use_input_image_size_as_output",
                                                               values["output_size"] or 0))
        return studio.pipe.settings(studio.defaults(), **given)
    except ValueError as error:
        raise gr.Error(translate(sentence(str(error)))) from None


def run_page_values(values: dict[str, Any], settings: GenerationSettings) -> dict[str, Any]:
    """The page's values (by FIELDS) as one run of a grid or a batch had them: its own settings and exact seed, for
    "Reuse" from the history."""
    own = {name: value for name, value in settings.as_dict().items() if name in values}
    return {**values, **own, "randomize_seed": False,
            "output_size": int(settings.use_input_image_size_as_output or 0)}


def page_values_from_settings(settings: dict[str, Any], ui: dict[str, Any] | None = None,
                              top: int | None = None) -> list[Any]:
    """Widget values (in FIELDS order) that restore a run: its page values, its exact seed. A value outside a
    slider's usual span widens the slider rather than being clamped by it."""
    values = dict(ui or {})
    if "seed" in settings:
        values.update(seed=settings["seed"], randomize_seed=False)
    for key in SETTING_FIELDS:
        if key in settings and key not in values:
            values[key] = settings[key]
    if "use_input_image_size_as_output" in settings and "output_size" not in values:
        values["output_size"] = int(settings["use_input_image_size_as_output"] or 0)
    return [restored_value(key, values[key], top) if key in values else gr.skip() for key in FIELDS]


def restored_value(name: str, value: Any, top: int | None = None) -> Any:
    """A widget value, or a slider update whose span takes it (steps 1-100 on the page, up to 1000 allowed; image
    sides up to `top`, the model's largest side, while a picture may say a larger max input image size)."""
    if name not in setting_names() or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    meta = setting_field(name).metadata
    if meta["multiple_of"] and top:
        low, high = meta["minimum"], top
    elif meta["ui"]:
        low, high, _ = meta["ui"]
    else:
        return value
    if low <= value <= high:
        return value
    return gr.Slider(value=value, minimum=min(low, value), maximum=max(high, value))


# Cancel sets the page's stop flag in studio.live; the running (or queued) Generate reads it between steps and says
# so in its status. A flag and not gradio's cancels=, which would end the event as an error and leave the page saying
# "Error". Cancel itself writes no status: its answer could land after the run's last one and replace it.


def make_run_controls(studio: Studio) -> tuple[Callable, Callable]:
    """(start, stop) handlers of the page's Generate and Cancel buttons."""

    def start_run(request: gr.Request, prompt: str, output_size: int | None, *images: str | None) -> None:
        """Runs at once on Generate: a fresh stop flag for this page, then the checks that need no model."""
        studio.live.arm_generation(request.session_hash)
        check_prompt(prompt, output_size, *images)

    def request_stop(request: gr.Request) -> None:
        studio.live.stop_generation(request.session_hash)

    return start_run, request_stop


def check_prompt(prompt: str, output_size: int | None, *images: str | None) -> None:
    """The mistakes that need no model: refused at once, before the job queues for the GPU; said in the
    language of the request being handled."""
    tr = translator()
    if not (prompt or "").strip():
        raise gr.Error(tr("error_prompt_empty"))
    problems = image_problems(prompt, images)
    if problems:
        raise gr.Error(" ".join(tr(problem) for problem in problems))
    k = int(output_size or 0)
    if k and not (k <= len(images) and images[k - 1]):
        raise gr.Error(tr("error_output_size", k=k))


def make_generate_handler(studio: Studio, outputs: dict[str, Any]) -> Callable:
    """The Generate event: a generator that streams step progress and previews, then the results."""
    status, preview, before_after, seed = (outputs[name] for name in ("status", "preview", "before_after", "seed"))

    def generate(request: gr.Request, progress=gr.Progress(), *page_values):
        preset_name, prompt, *rest = page_values
        images = list(rest[:MAX_INPUT_IMAGES])
        editor = rest[MAX_INPUT_IMAGES]
        values = dict(zip(FIELDS, rest[MAX_INPUT_IMAGES + 1:MAX_INPUT_IMAGES + 1 + len(FIELDS)]))
        browser = hist.valid_browser(rest[-1])
        prompt = prompt or ""
        stop = studio.live.generation_stop(request.session_hash)
        tr = translator(request)
        if stop.is_set():  # Cancel was pressed while the job waited in the queue
            yield {status: tr("status_cancelled_before")}
            return
        check_prompt(prompt, values["output_size"], *images)  # again: the page may have changed in the queue
        job = checked_job(GenerationJob(prompt, [path for path in images if path], settings_from_page(studio, values),
                                        mask_for_job(preset_name, editor, images[0]),
                                        int(values["preview_every"] or 0), preset_name), tr)
        yield {status: tr("status_starting", seed=job.settings.seed), seed: job.settings.seed,
               before_after: gr.ImageSlider(visible=False)}
        try:
            for event in follow_job(job, tr, stop, step_progress(progress, tr)):
                if isinstance(event, Cancelled):
                    yield {status: tr("status_cancelled_after", step=event.step)}
                elif isinstance(event, StepEvent):
                    update = {status: tr("status_step", step=event.step, total=event.total)}
                    if event.preview is not None:
                        update[preview] = event.preview
                    yield update
                else:
                    entry = hist.new_entry(studio.history, browser, preset_name, prompt, job.images, values, event)
                    yield finished_outputs(outputs, entry, studio.history.add(browser, entry), event, job, tr)
        finally:
            studio.live.end_generation(request.session_hash)

    return generate


def finished_outputs(outputs: dict[str, Any], entry: dict, entries: list[dict], done: DoneEvent, job: GenerationJob,
                     tr: Callable) -> dict:
    """What the page shows of a finished run, already added to history as `entry`."""
    first = entry["results"][0]
    seeds = ", ".join(str(r["settings"]["seed"]) for r in entry["results"])
    masked = tr("status_masked") if job.mask is not None else ""
    slider = (gr.ImageSlider((done.before, first["path"]), visible=True) if done.before
              else gr.ImageSlider(visible=False))
    shown = {"status": tr("status_done", count=len(entry["results"]), seeds=seeds, masked=masked),
             "preview": first["path"], "results": [(r["path"], hist.caption(r)) for r in entry["results"]],
             "before_after": slider, "settings_json": first["settings"],
             "code": python_snippet(first["settings"], [Path(p).name for p in entry["images"]]),
             "download": gr.DownloadButton(value=first["path"], visible=True), "latest": entry["id"],
             "history_gallery": hist.gallery_value(entries), "selection": [entry["id"], 0]}
    return {outputs[name]: value for name, value in shown.items()}
