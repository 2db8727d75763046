"""The one loop every generation of the studio runs through: the Generate tab, the /generate endpoint, each cell
of a grid and each job of a batch.

    job = checked_job(job, tr)                       # over the host's limits: a gr.Error sentence, nothing queued
    for event in follow_job(job, tr, stop, progress):
        ...                                          # StepEvent, then DoneEvent; Cancelled when `stop` was set

`follow_job` drives app.engine's event generator (a worker thread, see app.jobs.run_in_worker): it reports each
step to a Gradio progress tracker, stops the worker at the next step once `stop` is set, and turns a failure into
a gr.Error in the request's language, or hands it on as a FailedEvent to a caller that goes on after it (a grid).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr

from omnigen.errors import sentence

from .engine import Studio, current_studio, gpu_job_events
from .jobs import DoneEvent, FailedEvent, GenerationJob, StepEvent

Progress = Callable[[StepEvent], None]


@dataclass
class Cancelled:
    """The run was stopped at `step` (its stop flag was set); nothing of it was saved."""

    step: int | str


def checked_job(job: GenerationJob, tr: Callable[..., str]) -> GenerationJob:
    """The job, or a gr.Error naming the host limit it is over: refused before it queues for the model."""
    try:
        current_studio().check_request(job)
    except ValueError as error:
        raise gr.Error(tr(sentence(str(error)))) from None
    return job


def step_progress(progress: Callable, tr: Callable[..., str]) -> Progress:
    """Report each step of one job to a gr.Progress tracker."""
    return lambda event: progress((event.step, event.total), desc=tr("progress_step", step=event.step,
                                                                      total=event.total))


def follow_job(job: GenerationJob, tr: Callable[..., str], stop: threading.Event | None = None,
               progress: Progress | None = None, keep_failures: bool = False,
               ) -> Iterator[StepEvent | DoneEvent | FailedEvent | Cancelled]:
    """Run one job: its StepEvents (each also given to `progress`), then its DoneEvent. A failure raises a gr.Error
    in the request's language, or is yielded as a FailedEvent when `keep_failures`. Once `stop` is set the worker
    ends at its next step and Cancelled is the last thing yielded; a DoneEvent that comes after all the same (the
    stop came once the last step was done) is yielded as usual: its pictures are saved, and the page shows them."""
    events = gpu_job_events(job)
    try:
        for event in events:
            if stop is not None and stop.is_set() and not isinstance(event, DoneEvent):
                events.close()  # the worker stops at its next step
                yield Cancelled(getattr(event, "step", "?"))
                return
            if isinstance(event, StepEvent) and progress is not None:
                progress(event)
            if isinstance(event, FailedEvent) and not keep_failures:
                raise gr.Error(tr(event.message))
            yield event
    finally:
        events.close()


def stop_key(request: gr.Request, kind: str) -> str:
    """The name of a page's stop flag in studio.live for a kind of run ("grid", "batch"), beside its Generate's."""
    return f"{request.session_hash}/{kind}"


def run_controls(studio: Studio, kind: str) -> tuple[Callable, Callable]:
    """(arm, stop) handlers of a tab's Run and Cancel buttons: a fresh stop flag for the page's next run of `kind`,
    and setting it. Stop answers nothing: the run stops within a step and says so in its status, and any answer of
    its own ("cancelling", "nothing is running") could land after the run's last status and replace it."""

    def arm(request: gr.Request) -> None:
        studio.live.arm_generation(stop_key(request, kind))

    def stop(request: gr.Request) -> None:
        studio.live.stop_generation(stop_key(request, kind))

    return arm, stop
