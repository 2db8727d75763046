"""The Grid tab: a comparison grid of the Generate tab's request (omnigen.grid): one or two axes, each cell an
ordinary job (app.running.follow_job) whose result goes into this browser's history, shown as it finishes; one
progress bar for the grid, a Cancel that stops it within a step, and the labelled grid image to download.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import Image

from omnigen.errors import sentence
from omnigen.grid import (Axis, Cell, GridError, axis_names, failed_cell_image, grid_description, grid_image,
                          parse_axis, plan_cells)
from omnigen.grid import save_grid as write_grid

from . import history as hist
from .adapters import AdapterSourceError, loaded_adapters, set_strength
from .engine import GPU_QUEUE, MAX_INPUT_IMAGES, Studio
from .generate_tab import FIELDS, check_prompt, run_page_values, settings_from_page
from .i18n import language, t, translator
from .jobs import DoneEvent, FailedEvent, GenerationJob, PipelineBusy, StepEvent
from .running import Cancelled, follow_job, run_controls, stop_key

AXIS_VALUE = "axis:"  # a dropdown value the page's i18n leaves alone: a bare "seed" is a text key, shown translated


def axis_choices(studio: Studio) -> list[tuple[str, str]]:
    """What an axis may be here: the settings, the prompt, each input slot, each loaded adapter's strength."""
    slots = [f"image_{k}" for k in range(1, MAX_INPUT_IMAGES + 1)]
    names = (*axis_names(), *slots, *(f"lora:{n}" for n in loaded_adapters(studio)))
    return [(name, AXIS_VALUE + name) for name in names]


def build_grid_tab(studio: Studio, page: dict[str, Any], shown: dict[str, Any]) -> None:
    """The tab (inside gr.Tabs) and its events; it reads the Generate tab's widgets (`page`) and updates its
    history gallery (`shown`)."""
    with gr.Tab(t("tab_grid"), id="grid") as tab:
        gr.Markdown(t("grid_intro"))
        choices = axis_choices(studio)
        with gr.Row():
            x_axis = gr.Dropdown(choices, value=AXIS_VALUE + "seed", label=t("grid_x_axis"), elem_id="grid-x-axis",
                                 scale=1)
            x_values = gr.Textbox("0, 1, 2", label=t("grid_values"), elem_id="grid-x-values", scale=3)
        with gr.Row():
            y_axis = gr.Dropdown([(t("grid_no_axis"), ""), *choices], value=AXIS_VALUE + "guidance_scale",
                                 label=t("grid_y_axis"), elem_id="grid-y-axis", scale=1)
            y_values = gr.Textbox("2, 3", label=t("grid_values"), elem_id="grid-y-values", scale=3)
        with gr.Row():
            run = gr.Button(t("grid_run"), variant="primary", elem_id="grid-run")
            cancel = gr.Button(t("grid_cancel"), variant="stop", elem_id="grid-cancel")
        status = gr.Markdown(t("grid_ready"), elem_id="grid-status", min_height=40)
        cells = gr.Gallery(label=t("grid_cells"), format="png", columns=3, height="auto", interactive=False,
                           elem_id="grid-cells")
        image = gr.Image(label=t("grid_image"), format="png", interactive=False, buttons=["download", "fullscreen"],
                         elem_id="grid-image")
    refresh = lambda: [gr.Dropdown(choices=axis_choices(studio)),  # noqa: E731 - adapters come and go
                       gr.Dropdown(choices=[(t("grid_no_axis"), ""), *axis_choices(studio)])]
    tab.select(refresh, None, [x_axis, y_axis], api_visibility="private", queue=False)
    request_inputs = [page["preset"], page["prompt"], *page["slots"], *page["panel"].values(), shown["browser"]]
    arm_grid, stop_grid = run_controls(studio, "grid")
    armed = run.click(arm_grid, None, None, queue=False, api_visibility="private")
    armed.then(make_grid_handler(studio), [x_axis, x_values, y_axis, y_values, *request_inputs],
               [status, cells, image, shown["history_gallery"]], concurrency_id=GPU_QUEUE,
               concurrency_limit=studio.concurrency_limit, show_progress_on=[status], api_visibility="private")
    cancel.click(stop_grid, None, None, queue=False, api_visibility="private")


def read_axes(x_name: str, x_text: str, y_name: str | None, y_text: str) -> tuple[Axis, Axis | None]:
    x = parse_axis((x_name or "").removeprefix(AXIS_VALUE), x_text or "")
    return x, parse_axis(y_name.removeprefix(AXIS_VALUE), y_text or "") if y_name else None


def make_grid_handler(studio: Studio) -> Callable:
    """The grid event: plan every cell (refusing a bad axis at once), then run them one by one."""

    def run_grid(request: gr.Request, progress=gr.Progress(), *page_values):
        x_name, x_text, y_name, y_text, preset, prompt, *rest = page_values
        tr = translator(request)
        images = [path for path in rest[:MAX_INPUT_IMAGES] if path]
        values = dict(zip(FIELDS, rest[MAX_INPUT_IMAGES:MAX_INPUT_IMAGES + len(FIELDS)]))
        browser = hist.valid_browser(rest[-1])
        check_prompt(prompt or "", values["output_size"], *rest[:MAX_INPUT_IMAGES])
        try:
            x, y = read_axes(x_name, x_text, y_name, y_text)
            planned = plan_cells(prompt, images, settings_from_page(studio, values), x, y,
                                 studio.limits.max_grid_cells, studio.pipe.max_image_side)
        except GridError as error:
            raise gr.Error(tr(sentence(str(error)))) from None
        missing = missing_adapters(studio, planned)
        if missing:
            raise gr.Error(tr("error_grid_adapters", names=", ".join(missing)))
        run = GridRun(studio, planned, x, y, browser, preset or "", values, tr, language(request))
        try:
            yield from run.cells(request, progress)
        finally:
            studio.live.end_generation(stop_key(request, "grid"))
            run.restore_adapters()

    return run_grid


def missing_adapters(studio: Studio, cells: list[Cell]) -> list[str]:
    """The adapters an axis names that are not loaded."""
    return sorted({name for cell in cells for name in cell.loras} - set(loaded_adapters(studio)))


class GridRun:
    """One grid being run: its cells, what the page shows of them, the adapter strengths to put back. A cell's
    error is kept in English (the grid image and its PNG record are the library's); the page shows it in `lang`."""

    def __init__(self, studio: Studio, cells: list[Cell], x: Axis, y: Axis | None, browser: str | None, preset: str,
                 values: dict[str, Any], tr: Callable[..., str], lang: str = "en"):
        self.studio, self.planned, self.x, self.y = studio, cells, x, y
        self.browser, self.preset, self.values, self.tr, self.lang = browser, preset, values, tr, lang
        self.adapters_before = loaded_adapters(studio)
        self.shown: list[tuple[Any, str]] = []  # (picture: a file or a failed cell's image, caption) so far

    def cells(self, request: gr.Request, progress: Callable):
        stop = self.studio.live.generation_stop(stop_key(request, "grid"))
        count, tr = len(self.planned), self.tr
        columns = gr.Gallery(value=[], columns=len(self.x.values))
        yield tr("status_starting", seed=self.planned[0].settings.seed), columns, None, gr.skip()
        for number, cell in enumerate(self.planned, start=1):
            progress((number - 1, count), desc=tr("progress_grid_cell", cell=number, count=count))
            if cell.error is None:
                for update in self.run_cell(cell, number, stop):
                    if update is None:  # cancelled
                        done = sum(c.path is not None for c in self.planned)
                        yield tr("status_grid_cancelled", done=done, count=count), self.shown, gr.skip(), gr.skip()
                        return
                    yield update
            self.shown.append(self.cell_shown(cell))
            yield gr.skip(), self.shown, gr.skip(), gr.skip()
        yield self.finished()

    def run_cell(self, cell: Cell, number: int, stop):
        """Updates while the cell runs; None once it was cancelled."""
        try:
            self.set_adapters(cell)
        except (AdapterSourceError, PipelineBusy) as error:
            cell.error = sentence(str(error))
            return
        job = GenerationJob(cell.prompt, list(cell.images), cell.settings, None, 0, self.preset)
        for event in follow_job(job, self.tr, stop, keep_failures=True):
            if isinstance(event, Cancelled):
                yield None
                return
            if isinstance(event, StepEvent):
                yield (self.tr("status_grid_cell", cell=number, count=len(self.planned), label=cell.caption,
                               step=event.step, total=event.total), gr.skip(), gr.skip(), gr.skip())
            elif isinstance(event, FailedEvent):
                cell.error = event.message
            elif isinstance(event, DoneEvent):
                yield gr.skip(), gr.skip(), gr.skip(), self.keep(cell, job, event)

    def keep(self, cell: Cell, job: GenerationJob, done: DoneEvent) -> Any:
        """The finished cell: its result in history, as any run's; the history gallery after it."""
        cell.path, cell.record = done.images[0].path, done.images[0].settings
        entry = hist.new_entry(self.studio.history, self.browser, self.preset, job.prompt, job.images,
                               run_page_values(self.values, cell.settings), done)
        return hist.gallery_value(self.studio.history.add(self.browser, entry))

    def cell_shown(self, cell: Cell) -> tuple[Any, str]:
        """(picture, caption) of a cell in the page's gallery. A failed cell's grey picture is made in memory, never
        written to the output folder: Gradio keeps the copy it serves in its cache, which it empties by itself
        (delete_cache). Its reason is in the caption in the page's language, and written in the picture only in
        English: Pillow's own font has no Chinese characters."""
        if cell.path:
            return cell.path, cell.caption
        reason = self.tr(cell.error) if cell.error else self.tr("grid_cell_not_run")
        size = (cell.settings.width, cell.settings.height)
        picture = failed_cell_image(reason if self.lang == "en" else "", size)
        return picture, self.tr("grid_cell_failed", label=cell.caption, reason=reason)

    def finished(self) -> tuple:
        for cell in self.planned:
            if cell.path:
                with Image.open(cell.path) as picture:
                    cell.image = picture.convert("RGB")
        picture = grid_image(self.planned, self.x, self.y)
        path = self.studio.output_dir / f"grid-{uuid.uuid4().hex[:8]}.png"
        write_grid(picture, path, grid_description(self.planned, self.x, self.y))
        done = sum(c.path is not None for c in self.planned)
        failed = len(self.planned) - done
        note = self.tr("status_grid_failed", failed=failed) if failed else ""
        return (self.tr("status_grid_done", done=done, count=len(self.planned), failed=note), self.shown, str(path),
                gr.skip())

    def set_adapters(self, cell: Cell) -> None:
        wanted = {**self.adapters_before, **cell.loras}
        for name, strength in wanted.items():
            if loaded_adapters(self.studio).get(name) != strength:
                set_strength(self.studio, name, strength)

    def restore_adapters(self) -> None:
        """The strengths the adapters had before the grid (an adapter axis changed them)."""
        for name, strength in self.adapters_before.items():
            if loaded_adapters(self.studio).get(name, strength) != strength:
                try:
                    set_strength(self.studio, name, strength)
                except (AdapterSourceError, PipelineBusy) as error:
                    gr.Warning(self.tr(sentence(str(error))))

