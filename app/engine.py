"""The studio's one door into the library: a job in, step events and saved PNGs out.

A GenerationJob (app/jobs.py, with the events) is a plain dataclass (prompt, image files, pipeline settings, an
optional edit mask).
`job_events(job)` runs `OmniGenPipeline.__call__` in a worker thread and yields a StepEvent per
denoising step (with a decoded preview every few steps), then a DoneEvent or a FailedEvent. Closing
the generator (Gradio's cancels=, a client's job.cancel(), a closed tab) sets a stop flag that the
pipeline's step callback reads, so a run stops within one step.

On Hugging Face ZeroGPU (the `spaces` package importable) the event generator runs under
`spaces.GPU` with a duration estimated from the job; elsewhere it runs as is.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from omnigen.errors import user_message
from omnigen.files import atomic_write_bytes
from omnigen.png import save_png
from omnigen.images import load_image
from omnigen.sampler import plan_sampling
from omnigen.settings import PATCH_PIXELS, GenerationSettings, Limits, image_tokens

from .adapters import server_adapters_allowed
from .compose import composite_edit
from .history import DEFAULT_LIMIT as DEFAULT_HISTORY_LIMIT
from .history import HistoryStore
from .jobs import (DoneEvent, Event, FailedEvent, GeneratedImage, GenerationJob, LiveState, PipelineBusy, StepEvent,
                   run_in_worker)

log = logging.getLogger("omnigen.studio")

GPU_QUEUE = "gpu"  # the concurrency_id every GPU event shares (generate here, train in its own tab)
MAX_INPUT_IMAGES = 5
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # a 40 MP photo is already far beyond any max_input_image_size


# ----------------------------------------------------------------------------- the studio


class Studio:
    """The loaded pipeline and the folder its pictures go to; every UI or API action calls one method."""

    def __init__(self, pipe, output_dir: str | Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 concurrency_limit: int = 1, default_offload: str | None = None, threads: int | None = None,
                 limits: Limits | None = None, allow_server_adapters: bool = False,
                 history_limit: int | None = DEFAULT_HISTORY_LIMIT):
        self.pipe = pipe
        self.threads = set_cpu_threads(pipe, threads)
        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.max_image_pixels = max_image_pixels
        self.concurrency_limit = concurrency_limit
        self.live = LiveState()  # who uses the pipeline, each page's stop flag, the one training
        self.limits = limits or Limits()  # what one request may ask of this server
        self.history = HistoryStore(self.output_dir, history_limit)  # each browser's runs, in the output folder
        # Adapters from the server's own folders: the host's choice, never on a Space (app/adapters.py).
        self.allow_server_adapters = server_adapters_allowed(allow_server_adapters)
        self.adapter_sources: dict[str, str] = {}  # adapter name -> where it came from, for the page
        pipe.set_offload(default_offload)
        pipe.set_progress_bar_config(disable=True)  # the page shows progress; the log stays readable

    # -- what the page shows before anything runs

    @property
    def model_name(self) -> str:
        return Path(self.pipe.model_id).name if Path(self.pipe.model_id).is_absolute() else self.pipe.model_id

    def header(self) -> str:
        dtype = str(self.pipe.dtype).replace("torch.", "")
        size = self.pipe.native_size
        return (f"**Model** `{self.model_name}` · **device** `{self.pipe.device}` · **dtype** `{dtype}` · "
                f"native size {size}x{size}" + self.prompt_guide("en"))

    def prompt_guide(self, lang: str) -> str:
        """What the model says its prompts may ask (its folder's prompt_guide.json), in `lang` or else English, as a
        paragraph to follow the header; "" when the folder says nothing."""
        guide = getattr(self.pipe, "prompt_guide", None) or {}
        said = guide.get(lang) or guide.get("en") or ""
        return f"\n\n{said}" if said else ""

    def defaults(self) -> GenerationSettings:
        """Settings for a fresh page: the model's own defaults, seed 0."""
        return self.pipe.default_settings.replace(seed=0)

    def set_offload(self, mode: str | None) -> None:
        """Change where the model waits between steps; refused while anything runs (they share the modules)."""
        if mode == self.pipe.offload:
            return
        with self.live.use.exclusively(f"changing offload to {mode or 'none'}"):
            self.pipe.set_offload(mode)

    # -- inputs

    def check_request(self, job: GenerationJob) -> None:
        """Refuse a job over this server's limits (ValueError naming the limit), before it queues or runs."""
        self.limits.check(job.prompt, job.settings, len(job.images))

    def load_inputs(self, job: GenerationJob) -> list[Image.Image]:
        """Read every input picture (refusing unreadable or huge ones) with a message that names its slot."""
        if len(job.images) > MAX_INPUT_IMAGES:
            raise ValueError(f"at most {MAX_INPUT_IMAGES} input images, got {len(job.images)}")
        pictures = []
        for k, path in enumerate(job.images, start=1):
            try:
                pictures.append(load_image(path, max_pixels=self.max_image_pixels))
            except ValueError as error:  # the message names a server-side temporary path: show the file name
                message = str(error).replace(repr(str(path)), repr(Path(path).name))
                raise ValueError(f"image {k}: {message}") from None
        if job.mask is not None:
            if not pictures:
                raise ValueError("a mask was painted but there is no image 1 to edit; upload the picture first")
            width, height = pictures[0].size
            if job.mask.shape != (height, width):
                raise ValueError(f"the mask is {job.mask.shape[1]}x{job.mask.shape[0]} pixels but image 1 is "
                                 f"{width}x{height}; paint the mask on image 1 itself")
        return pictures

    def import_file(self, path: str | Path) -> str:
        """A copy of an app asset (an example picture) in the output folder, the only folder the page serves."""
        source = Path(path)
        target = self.output_dir / "examples" / f"{file_digest(str(source))[:16]}{source.suffix.lower()}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes())
        return str(target)

    def make_condition(self, kind: str, path: str) -> str:
        """Turn a picture into a condition image (see omnigen.conditions), saved in the output folder."""
        from omnigen.conditions import make_condition

        picture = load_image(path, max_pixels=self.max_image_pixels)
        target = self.output_dir / f"{kind}-{uuid.uuid4().hex[:8]}.png"
        make_condition(kind, picture).save(target)
        return str(target)

    # -- running

    def generate(self, job: GenerationJob, pictures: list[Image.Image],
                 on_step: Callable[[int, int, Any, Any], bool]) -> DoneEvent:
        """Run the pipeline once and save every image with its settings; on_step returning False cancels."""
        output = self.pipe(job.prompt, pictures or None, job.settings, callback=on_step)
        results = []
        for image, record in zip(output.images, output.settings):
            if job.mask is not None:  # keep the original pixels outside the painted mask
                image = composite_edit(pictures[0], image, job.mask, record["max_input_image_size"])
                record = {**record, "kept_pixels_outside_mask": True}
            if job.preset:
                record = {**record, "preset": job.preset}
            path = self.output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.png"
            save_png(image, path, record)
            results.append(GeneratedImage(str(path), record))
        return DoneEvent(results, self.save_before(pictures, results))

    def save_before(self, pictures: list[Image.Image], results: list[GeneratedImage]) -> str | None:
        """Image 1 as the model saw it, at the output size: the 'before' of a before/after slider."""
        if not pictures or not results:
            return None
        from omnigen.images import crop_to_multiple_of_16

        first = results[0].settings
        before = crop_to_multiple_of_16(pictures[0], first["max_input_image_size"])
        if before.size != (first["width"], first["height"]):
            before = before.resize((first["width"], first["height"]), Image.BICUBIC)
        path = self.output_dir / f"before-{uuid.uuid4().hex[:8]}.png"
        before.save(path)
        return str(path)

    def preview(self, estimate) -> Image.Image:
        """The sampler's estimate of the final image, decoded. The VAE is used where it sits: pipe.decode
        would move it (and the transformer) under offload."""
        from omnigen import vae as vae_io

        return vae_io.to_pil(vae_io.decode(self.pipe.vae, estimate[:1]))[0]


SMALL_MODEL_PARAMETERS = 50_000_000


def set_cpu_threads(pipe, threads: int | None) -> int | None:
    """Torch's intra-op threads for a pipeline on the CPU: `threads` if given; one for a small model, whose
    operations are too small to split (two threads made the embedded model's steps 30x slower on a busy
    2-core machine); torch's default otherwise. Returns the number set, or None when left alone."""
    import torch

    if threads is None:
        if pipe.device.type != "cpu":
            return None
        size = sum(p.numel() for p in pipe.transformer.parameters())
        if size >= SMALL_MODEL_PARAMETERS:
            return None
        threads = 1
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the worker


_current: Studio | None = None


def set_studio(studio: Studio) -> None:
    """The studio the GPU function uses: a module global, since ZeroGPU passes only picklable arguments."""
    global _current
    _current = studio


def current_studio() -> Studio:
    if _current is None:
        raise RuntimeError("no studio is loaded; call app.engine.set_studio first")
    return _current


def job_events(job: GenerationJob, stop: threading.Event | None = None) -> Iterator[Event]:
    """Run a job in a worker thread; yield a StepEvent per step (with a preview every job.preview_every
    steps), then a DoneEvent or a FailedEvent. Refused (a FailedEvent) while a training holds the pipeline.
    Closing the generator, or setting `stop`, ends the run at its next step."""
    studio = current_studio()
    stop = stop or threading.Event()
    try:
        with studio.live.use.generating():  # held until the worker below has stopped
            try:
                studio.check_request(job)
                pictures = studio.load_inputs(job)
            except ValueError as error:
                yield FailedEvent(job_failure(studio, job, error).message)
                return
            yield from run_in_worker(lambda emit, stop: _generate(studio, job, pictures, emit, stop), stop,
                                     lambda error: job_failure(studio, job, error), "omnigen-generate")
    except PipelineBusy as error:  # raised on entry only: nothing ran
        yield FailedEvent(str(error))


def _generate(studio: Studio, job: GenerationJob, pictures: list, emit, stop: threading.Event) -> DoneEvent:
    def on_step(step: int, total: int, latents, estimate) -> bool:
        every = job.preview_every
        wanted = every > 0 and (step % every == 0 or step == total)
        emit(StepEvent(step, total, studio.preview(estimate) if wanted else None))
        return not stop.is_set()

    return studio.generate(job, pictures, on_step)


def job_failure(studio: Studio, job: GenerationJob, error: BaseException) -> FailedEvent:
    from omnigen.sampler import GenerationCancelled

    return FailedEvent(user_message(error, job.settings, len(job.images), studio.pipe.offload),
                       cancelled=isinstance(error, GenerationCancelled))


def estimate_gpu_seconds(job: GenerationJob) -> int:
    """A ZeroGPU reservation for the job: fixed costs plus the branch rows its sampling plan runs x tokens (an
    estimate, generous)."""
    s = job.settings
    plan = plan_sampling(s, bool(job.images))
    count, max_side = s.num_images_per_prompt, s.max_input_image_size
    input_tokens = sum(_tokens_of_input(path, max_side) for path in job.images)
    if s.use_input_image_size_as_output and job.images:
        output_tokens = _tokens_of_input(job.images[s.use_input_image_size_as_output - 1], max_side)
    else:
        output_tokens = image_tokens(s.height, s.width)
    per_row = 0.25 * count * (output_tokens + (0 if s.use_kv_cache else input_tokens)) / 4096
    first_step = 0.25 * plan.branches * input_tokens / 4096
    return int(min(300, max(20, 15 + plan.branch_rows_per_image() * per_row + first_step)))


def _tokens_of_input(path: str, max_side: int) -> int:
    try:
        with Image.open(path) as picture:  # the header only
            width, height = picture.size
    except Exception:
        return image_tokens(max_side, max_side)
    scale = min(1.0, max_side / max(width, height))
    return max(1, int(width * scale) // PATCH_PIXELS) * max(1, int(height * scale) // PATCH_PIXELS)


try:  # Hugging Face ZeroGPU: reserve a GPU for the length of the job, estimated from it
    import spaces  # type: ignore[import-not-found]

    gpu_job_events = spaces.GPU(duration=estimate_gpu_seconds)(job_events)
except ImportError:
    gpu_job_events = job_events
