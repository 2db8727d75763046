"""The Batch tab: many jobs with the Generate tab's settings (omnigen.batch), each an ordinary job through
app.running.follow_job: uploaded pictures with one instruction, or a jobs file (one JSON object a line) with the
pictures it names by file name. The results, a PNG with its settings per job and results.jsonl, come as one zip.

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

from .engine import GPU_QUEUE, Studio
from .generate_tab import FIELDS, settings_from_page
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


def build_batch_tab(studio: Studio, page: dict[str, Any]) -> None:
    """The tab (inside gr.Tabs) and its events; the settings are the Generate tab's (`page`)."""
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
    armed.then(make_batch_handler(studio), [pictures, jobs_file, instruction, *page["panel"].values()],
               [status, results, download], concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit,
               show_progress_on=[status], api_visibility="private")
    cancel.click(stop_batch, None, status, queue=False, api_visibility="private")


def staged_jobs(studio: Studio, folder: Path, pictures: list[str] | None, jobs_file: str | None,
                instruction: str) -> list[BatchJob]:
    """The uploads copied into `folder/inputs` under their own names, read as jobs (every line checked)."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True)
    for path in pictures or []:
        shutil.copyfile(path, inputs / f"{safe_name(Path(path).stem)}{Path(path).suffix.lower()}")
    limit = studio.limits.max_batch_jobs
    if jobs_file:
        target = inputs / f"{safe_name(Path(jobs_file).stem)}.jsonl"
        shutil.copyfile(jobs_file, target)
        return read_jobs(target, limit)
    return folder_jobs(inputs, instruction or "", limit)


def make_batch_handler(studio: Studio) -> Callable:
    def run_batch(request: gr.Request, progress=gr.Progress(), *values):
        pictures, jobs_file, instruction, *panel = values
        tr = translator(request)
        if not pictures and not jobs_file:
            raise gr.Error(tr("error_batch_nothing"))
        folder = studio.output_dir / "batches" / uuid.uuid4().hex[:12]
        try:
            jobs = staged_jobs(studio, folder, pictures, jobs_file, instruction)
        except BatchError as error:
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(tr(sentence(str(error)))) from None
        base = settings_from_page(studio, dict(zip(FIELDS, panel)))
        stop = studio.live.generation_stop(stop_key(request, "batch"))
        made: dict[int, str] = {}
        errors: dict[int, str] = {}
        try:
            for number, job in enumerate(jobs, start=1):
                progress((number - 1, len(jobs)), desc=f"{number}/{len(jobs)}")
                for event in follow_job(GenerationJob(job.prompt, list(job.images), job.settings(base)), tr, stop,
                                        keep_failures=True):
                    if isinstance(event, Cancelled):
                        yield finished(folder, jobs, base, made, errors, tr("status_batch_cancelled",
                                                                            done=len(made), count=len(jobs)))
                        return
                    if isinstance(event, StepEvent):
                        yield (tr("status_batch_job", job=number, count=len(jobs), step=event.step,
                                  total=event.total), gr.skip(), gr.skip())
                    elif isinstance(event, FailedEvent):
                        errors[job.index] = event.message
                    elif isinstance(event, DoneEvent):
                        made[job.index] = kept(folder, job, event)
                        yield gr.skip(), list(made.values()), gr.skip()
            yield finished(folder, jobs, base, made, errors, tr("status_batch_done", done=len(made), count=len(jobs),
                                                                failed=len(errors)))
        finally:
            studio.live.end_generation(stop_key(request, "batch"))

    return run_batch


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
