"""The Batch tab: many jobs with the Generate tab's settings (omnigen.batch), each an ordinary job through
app.running.follow_job: uploaded pictures with one instruction, or a jobs file (one JSON object a line) with the
pictures it names by file name. The results, a PNG with its settings per job and results.jsonl, come as one zip;
each job's picture also goes into this browser's history, with the page's settings as that job ran them.

It runs within the host's limits (max_batch_jobs, and every job within the request limits), and is off on a
Hugging Face Space unless the host turns it on (OMNIGEN_ENABLE_BATCH=1): there visitors share one model.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.batch import BatchError, BatchJob, folder_jobs, read_jobs, result_line, safe_name
from omnigen.errors import sentence
from omnigen.files import atomic_save, atomic_write_bytes
from omnigen.settings import GenerationSettings

from . import history as hist
from .engine import GPU_QUEUE, Studio
from .generate_tab import FIELDS, run_page_values, settings_from_page
from .i18n import t, translator
from .jobs import DoneEvent, FailedEvent, GenerationJob, StepEvent
from .running import Cancelled, follow_job, run_controls, stop_key

ENABLE_ENV = "OMNIGEN_ENABLE_BATCH"


def batch_enabled() -> bool:
    """OMNIGEN_ENABLE_BATCH=1 turns the tab on, =0 off; unset, it is on except on a Hugging Face Space (SPACE_ID is
    set there), where one visitor's hundred jobs would hold the shared model."""
    value = os.environ.get(ENABLE_ENV, "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return not os.environ.get("SPACE_ID")


def build_batch_tab(studio: Studio, page: dict[str, Any], shown: dict[str, Any]) -> None:
    """The tab (inside gr.Tabs) and its events; the settings are the Generate tab's (`page`), and each picture goes
    into its history gallery (`shown`)."""
    with gr.Tab(t("tab_batch"), id="batch"):
        gr.Markdown(t("batch_intro"))
        with gr.Row():
            pictures = gr.File(label=t("batch_pictures"), file_count="multiple", file_types=["image"],
                               elem_id="batch-pictures")
            jobs_file = gr.File(label=t("batch_jobs_file"), file_types=[".jsonl"], elem_id="batch-jobs")
        instruction = gr.Textbox(label=t("batch_instruction"), placeholder=t("batch_instruction_placeholder"),
                                 elem_id="batch-instruction")
        with gr.Row():
            run = gr.Button(t("batch_run"), variant="primary", elem_id="batch-run")
            cancel = gr.Button(t("batch_cancel"), variant="stop", elem_id="batch-cancel")
        status = gr.Markdown(t("batch_ready"), elem_id="batch-status", min_height=40)
        results = gr.Gallery(format="png", columns=6, height="auto", interactive=False, elem_id="batch-results")
        download = gr.DownloadButton(t("batch_download"), visible=False, elem_id="batch-download")
    arm_batch, stop_batch = run_controls(studio, "batch")
    armed = run.click(arm_batch, None, None, queue=False, api_visibility="private")
    armed.then(make_batch_handler(studio),
               [pictures, jobs_file, instruction, page["preset"], shown["browser"], *page["panel"].values()],
               [status, results, download, shown["history_gallery"]], concurrency_id=GPU_QUEUE,
               concurrency_limit=studio.concurrency_limit, show_progress_on=[status], api_visibility="private")
    cancel.click(stop_batch, None, None, queue=False, api_visibility="private")


UPLOADS = "uploads"  # the folder of a batch's uploads, beside its results


def staged_jobs(studio: Studio, folder: Path, pictures: list[str] | None, jobs_file: str | None,
                instruction: str) -> list[BatchJob]:
    """The uploads copied into `folder/uploads` under their own names, read as jobs (every line checked)."""
    inputs = folder / UPLOADS
    inputs.mkdir(parents=True)
    for path in pictures or []:
        shutil.copyfile(path, inputs / f"{safe_name(Path(path).stem)}{Path(path).suffix.lower()}")
    limit = studio.limits.max_batch_jobs
    if jobs_file:
        target = inputs / f"{safe_name(Path(jobs_file).stem)}.jsonl"
        shutil.copyfile(jobs_file, target)
        return read_jobs(target, limit)
    return folder_jobs(inputs, instruction or "", limit)


def shown_error(error: BatchError, folder: Path) -> str:
    """The sentence a refused batch shows: the uploads' folder by its name, never by its path on the server."""
    uploads = folder / UPLOADS
    return sentence(str(error).replace(str(uploads), uploads.name))


def make_batch_handler(studio: Studio) -> Callable:
    def run_batch(request: gr.Request, progress=gr.Progress(), *values):
        pictures, jobs_file, instruction, preset, browser, *panel = values
        tr = translator(request)
        if not pictures and not jobs_file:
            raise gr.Error(tr("error_batch_nothing"))
        folder = studio.output_dir / "batches" / uuid.uuid4().hex[:12]
        try:
            jobs = staged_jobs(studio, folder, pictures, jobs_file, instruction)
        except BatchError as error:
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(tr(shown_error(error, folder))) from None
        page_values = dict(zip(FIELDS, panel))
        run = BatchRun(studio, folder, jobs, settings_from_page(studio, page_values), page_values, preset or "",
                       hist.valid_browser(browser), tr)
        try:
            yield from run.jobs(studio.live.generation_stop(stop_key(request, "batch")), progress)
        finally:
            studio.live.end_generation(stop_key(request, "batch"))

    return run_batch


class BatchRun:
    """One batch being run: its jobs, the pictures made so far (by job index) and the reasons of those that failed;
    each made picture goes into the history as a run of the Generate tab's `preset` with the page's `values`."""

    def __init__(self, studio: Studio, folder: Path, jobs: list[BatchJob], base: GenerationSettings,
                 values: dict[str, Any], preset: str, browser: str | None, tr: Callable[..., str]):
        self.studio, self.folder, self.planned, self.base = studio, folder, jobs, base
        self.values, self.preset, self.browser, self.tr = values, preset, browser, tr
        self.made: dict[int, str] = {}
        self.errors: dict[int, str] = {}

    def jobs(self, stop, progress: Callable):
        """The page's updates (status, results, download, history gallery) while the jobs run, one by one."""
        count, tr = len(self.planned), self.tr
        for number, job in enumerate(self.planned, start=1):
            progress((number - 1, count), desc=f"{number}/{count}")
            generation = GenerationJob(job.prompt, list(job.images), job.settings(self.base))
            for event in follow_job(generation, tr, stop, keep_failures=True):
                if isinstance(event, Cancelled):
                    yield self.finished(tr("status_batch_cancelled", done=len(self.made), count=count))
                    return
                if isinstance(event, StepEvent):
                    yield (tr("status_batch_job", job=number, count=count, step=event.step, total=event.total),
                           gr.skip(), gr.skip(), gr.skip())
                elif isinstance(event, FailedEvent):
                    self.errors[job.index] = event.message
                elif isinstance(event, DoneEvent):
                    history = self.keep(job, generation, event)
                    yield gr.skip(), list(self.made.values()), gr.skip(), history
        yield self.finished(tr("status_batch_done", done=len(self.made), count=count, failed=len(self.errors)))

    def keep(self, job: BatchJob, generation: GenerationJob, done: DoneEvent) -> Any:
        """The job's picture in the results folder and in the history, as any run's; the history gallery after."""
        self.made[job.index] = kept(self.folder, job, done)
        entry = hist.new_entry(self.studio.history, self.browser, self.preset, generation.prompt, generation.images,
                               run_page_values(self.values, generation.settings), done)
        return hist.gallery_value(self.studio.history.add(self.browser, entry))

    def finished(self, status: str) -> tuple:
        return (*finished(self.folder, self.planned, self.base, self.made, self.errors, status), gr.skip())


def kept(folder: Path, job: BatchJob, done: DoneEvent) -> str:
    """The job's picture under its batch name, in the batch's results folder."""
    target = folder / "results" / f"{job.name}.png"
    atomic_write_bytes(target, Path(done.images[0].path).read_bytes())
    return str(target)


def finished(folder: Path, jobs: list[BatchJob], base: GenerationSettings, made: dict[int, str],
             errors: dict[int, str], status: str) -> tuple:
    """results.jsonl beside the pictures, and all of it as one zip (written under a temporary name first)."""
    lines = [result_line(job, base, Path(made[job.index]).name if job.index in made else None,
                         errors.get(job.index, "not run: the batch was cancelled")) for job in jobs]

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("results.jsonl", "".join(lines))
            for path in made.values():
                zipped.write(path, Path(path).name)

    archive = atomic_save(folder / "results.zip", write)
    return status, list(made.values()), gr.DownloadButton(value=str(archive), visible=True)
