"""How the studio runs long work: one worker thread per job, a queue of events, a stop flag; and the one
object that holds what is running (`LiveState`), so no handler keeps live state in a module global.

Generation (app/engine.py) and LoRA training (app/train_tab.py) both go through `run_in_worker`; closing
its generator (Gradio's cancel, a closed tab, a Stop press) sets the stop flag and waits for the worker,
so the model is free again when the generator returns. A generation is a `GenerationJob`; its worker emits a
`StepEvent` per step and ends with a `DoneEvent` or a `FailedEvent`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from omnigen.settings import GenerationSettings

Emit = Callable[[Any], None]
_END = object()


def run_in_worker(work: Callable[[Emit, threading.Event], Any], stop: threading.Event,
                  on_error: Callable[[BaseException], Any], name: str) -> Iterator[Any]:
    """Run `work(emit, stop)` in a thread; yield every event it emits, then what it returns (if not None) or
    `on_error(error)` when it raises. An exception never escapes the thread: the page gets a sentence."""
    events: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            result = work(events.put, stop)
            if result is not None:
                events.put(result)
        except BaseException as error:  # noqa: BLE001 - reported as an event, never re-raised in this thread
            events.put(on_error(error))
        finally:
            events.put(_END)

    worker = threading.Thread(target=target, name=name, daemon=True)
    worker.start()
    try:
        while (event := events.get()) is not _END:
            yield event
    finally:
        stop.set()  # a no-op after a finished job; ends an abandoned one at its next step
        worker.join()


@dataclass
class GenerationJob:
    """One press of Generate: what the pipeline needs, plus what the studio does around it."""

    prompt: str
    images: list[str]  # files: image k of the prompt is images[k - 1]
    settings: GenerationSettings
    mask: np.ndarray | None = None  # over image 1: True where the edit may change pixels
    preview_every: int = 0  # decode a preview every N steps; 0 for none
    preset: str = ""


@dataclass
class GeneratedImage:
    path: str  # a PNG in the studio's output folder, its settings in the metadata
    settings: dict[str, Any]


@dataclass
class StepEvent:
    step: int
    total: int
    preview: Image.Image | None = None


@dataclass
class DoneEvent:
    images: list[GeneratedImage]
    before: str | None = None  # image 1 as the model saw it, at the output size (for a before/after view)


@dataclass
class FailedEvent:
    message: str
    cancelled: bool = False


Event = StepEvent | DoneEvent | FailedEvent


class PipelineBusy(ValueError):
    """The shared pipeline is taken by a job that cannot share it; the message says by what."""


class PipelineUse:
    """Who is using the studio's one pipeline: any number of generations, or one exclusive job (a LoRA
    training, loading an adapter, changing offload), never both: those change the very modules a generation
    runs. Events sharing GPU_QUEUE already take turns when --concurrency is 1; this holds for any concurrency."""

    def __init__(self):
        self._lock = threading.Lock()
        self.generations = 0
        self.exclusive: str | None = None  # what holds the pipeline alone, e.g. "training the LoRA 'x'"

    @contextmanager
    def generating(self) -> Iterator[None]:
        with self._lock:
            if self.exclusive is not None:
                raise PipelineBusy(f"The model is busy {self.exclusive}; generate when it has finished, or stop "
                                   "it there.")
            self.generations += 1
        try:
            yield
        finally:
            with self._lock:
                self.generations -= 1

    @contextmanager
    def exclusively(self, purpose: str) -> Iterator[None]:
        with self._lock:
            if self.exclusive is not None:
                raise PipelineBusy(f"The model is busy {self.exclusive}; wait until it has finished.")
            if self.generations:
                raise PipelineBusy(f"{self.generations} generation(s) are running; try again when they finish.")
            self.exclusive = purpose
        try:
            yield
        finally:
            with self._lock:
                self.exclusive = None


@dataclass
class Training:
    """The one training of the server: which page started it, the adapter's name, its stop flag."""

    session: str
    name: str
    stop: threading.Event = field(default_factory=threading.Event)


class LiveState:
    """What the running studio holds between requests: the pipeline's users, each page's stop flag for its
    generation, and the one training."""

    def __init__(self):
        self.use = PipelineUse()
        self._lock = threading.Lock()
        self._generation_stops: dict[str, threading.Event] = {}
        self.training: Training | None = None

    # -- generations, one stop flag per browser session

    def arm_generation(self, session: str) -> threading.Event:
        """A fresh stop flag for the page's next generation (set by Cancel, read between steps)."""
        with self._lock:
            flag = self._generation_stops[session] = threading.Event()
            return flag

    def generation_stop(self, session: str) -> threading.Event:
        with self._lock:
            return self._generation_stops.setdefault(session, threading.Event())

    def stop_generation(self, session: str) -> bool:
        """Ask the page's generation to stop; False when it has none."""
        with self._lock:
            flag = self._generation_stops.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def end_generation(self, session: str) -> None:
        with self._lock:
            self._generation_stops.pop(session, None)

    # -- the one training

    def claim_training(self, session: str, name: str) -> Training:
        with self._lock:
            if self.training is not None:
                raise PipelineBusy(f"A training ({self.training.name!r}) is already running; one runs at a time. "
                                   "Wait for it to finish" + (" or press Stop." if self.training.session == session
                                                               else "."))
            self.training = Training(session, name)
            return self.training

    def release_training(self, training: Training) -> None:
        with self._lock:
            if self.training is training:
                self.training = None

    def stop_training(self, session: str) -> str:
        training = self.training
        if training is None:
            return "Nothing is training."
        if training.session != session:
            return "The running training was started from another page; only that page can stop it."
        training.stop.set()
        return f"Stopping `{training.name}`: it ends after its current step and keeps a checkpoint and the adapter."
