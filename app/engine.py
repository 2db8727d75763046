"""The studio's one door into the library: a job in, step events and saved PNGs out.

A GenerationJob is a plain dataclass (prompt, image files, pipeline settings, an optional edit mask).
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
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from omnigen.png import save_png
from omnigen.processor import DEFAULT_NEGATIVE_PROMPT, load_image

from .compose import composite_edit

log = logging.getLogger("omnigen.studio")

GPU_QUEUE = "gpu"  # the concurrency_id every GPU event shares (generate here, train in its own tab)
MAX_INPUT_IMAGES = 5
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # a 40 MP photo is already far beyond any max_input_image_size

# OmniGenPipeline.__call__ keyword arguments that a settings dict (PNG metadata) may restore.
PIPELINE_SETTINGS = ("height", "width", "num_inference_steps", "guidance_scale", "img_guidance_scale",
                     "negative_prompt", "seed", "num_images_per_prompt", "use_input_image_size_as_output",
                     "max_input_image_size", "cfg_mode", "use_kv_cache", "offload", "time_shift")
# Settings that decide the pixels; offload and the batch size only decide where and how fast they are made.
REPRODUCING_SETTINGS = tuple(k for k in PIPELINE_SETTINGS if k not in ("offload", "num_images_per_prompt"))


def pipeline_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """The OmniGenPipeline keyword arguments in a settings dict, e.g. one read back from a PNG."""
    return {key: settings[key] for key in PIPELINE_SETTINGS if key in settings}


def reproduce_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments that remake exactly the one image whose settings these are."""
    kwargs = {key: settings[key] for key in REPRODUCING_SETTINGS if key in settings}
    if kwargs.get("use_input_image_size_as_output"):  # the size came from an input image, not from these
        kwargs.pop("height", None), kwargs.pop("width", None)
    return kwargs


# ----------------------------------------------------------------------------- jobs and events


@dataclass
class GenerationJob:
    """One press of Generate: what the pipeline needs, plus what the studio does around it."""

    prompt: str
    images: list[str]  # files: image k of the prompt is images[k - 1]
    settings: dict[str, Any]  # OmniGenPipeline keyword arguments
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


# ----------------------------------------------------------------------------- previews


class PreviewDecoder:
    """Decode the current estimate of the final image every `every` steps.

    The callback sees x after each Euler step x' = x + (t' - t) v, so v = (x' - x) / (t' - t) and the
    estimate of the clean latent is x1 = x' + (1 - t') v: the image the run would end at if the
    velocity stayed as it is. It needs the previous step's latents, so the first preview comes at step 2.
    """

    def __init__(self, schedule: list[float], every: int, decode: Callable[[Any], list[Image.Image]]):
        self.schedule, self.every, self.decode = schedule, every, decode
        self.previous = None

    def __call__(self, step: int, latents) -> Image.Image | None:
        previous, self.previous = self.previous, latents[:1].detach().clone()
        if self.every <= 0 or previous is None or (step % self.every and step != len(self.schedule) - 1):
            return None
        t, t_next = self.schedule[step - 1], self.schedule[step]
        velocity = (self.previous - previous) / (t_next - t)
        return self.decode(self.previous + (1.0 - t_next) * velocity)[0]


# ----------------------------------------------------------------------------- who uses the pipeline


class PipelineBusy(ValueError):
    """The shared pipeline is taken by a job that cannot share it; the message says by what."""


class PipelineUse:
    """Who is using the studio's one pipeline: any number of generations, or one exclusive job (a LoRA
    training, loading an adapter), never both: a training changes the very modules a generation runs.
    Events sharing GPU_QUEUE already take turns when --concurrency is 1; this holds for any concurrency."""

    def __init__(self):
        self._lock = threading.Lock()
        self.generations = 0
        self.exclusive: str | None = None  # what holds the pipeline alone, e.g. "training the LoRA 'x'"

    @contextmanager
    def generating(self) -> Iterator[None]:
        with self._lock:
            if self.exclusive is not None:
                raise PipelineBusy(f"The model is busy {self.exclusive} (Train tab); generate when it has "
                                   "finished, or stop it there.")
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


# ----------------------------------------------------------------------------- the studio


class Studio:
    """The loaded pipeline and the folder its pictures go to; every UI or API action calls one method."""

    def __init__(self, pipe, output_dir: str | Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 concurrency_limit: int = 1, default_offload: str | None = None, threads: int | None = None):
        self.pipe = pipe
        self.threads = set_cpu_threads(pipe, threads)
        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.max_image_pixels = max_image_pixels
        self.concurrency_limit = concurrency_limit
        self.default_offload = default_offload
        self.use = PipelineUse()  # generations share the pipeline; a LoRA training takes it alone
        pipe.set_progress_bar_config(disable=True)  # the page shows progress; the log stays readable

    # -- what the page shows before anything runs

    @property
    def model_name(self) -> str:
        return Path(self.pipe.model_id).name if Path(self.pipe.model_id).is_absolute() else self.pipe.model_id

    def header(self) -> str:
        dtype = str(self.pipe.dtype).replace("torch.", "")
        size = self.pipe.native_size
        return (f"**Model** `{self.model_name}` · **device** `{self.pipe.device}` · **dtype** `{dtype}` · "
                f"native size {size}x{size}")

    def default_max_input_image_size(self) -> int:
        # OmniGenPipeline uses the folder's own value when given None; the page wants the number itself.
        return int(self.pipe.transformer.config.extra.get("max_input_image_size", 1024))

    def default_steps(self) -> int:
        # A model folder may recommend its own step count in config.json (the embedded model is judged at 30).
        return int(self.pipe.transformer.config.extra.get("default_num_inference_steps", 50))

    def defaults(self) -> dict[str, Any]:
        """Settings for a fresh page: the model's native size and the pipeline's defaults."""
        size = self.pipe.native_size
        return dict(height=size, width=size, num_inference_steps=self.default_steps(), guidance_scale=2.5,
                    img_guidance_scale=1.6,
                    negative_prompt=DEFAULT_NEGATIVE_PROMPT, seed=0, num_images_per_prompt=1,
                    use_input_image_size_as_output=False, max_input_image_size=self.default_max_input_image_size(),
                    cfg_mode="batched", use_kv_cache=True, offload=self.default_offload, time_shift=1.0)

    # -- inputs

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
            temporary = target.with_name(f".{uuid.uuid4().hex}{target.suffix}")
            temporary.write_bytes(source.read_bytes())
            temporary.replace(target)
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
                 on_step: Callable[[int, int, Any], bool]) -> DoneEvent:
        """Run the pipeline once and save every image with its settings; on_step returning False cancels."""
        settings = dict(job.settings)
        settings.setdefault("max_input_image_size", self.default_max_input_image_size())
        output = self.pipe(job.prompt, pictures or None, callback=on_step, **settings)
        digests = [file_digest(path) for path in job.images]
        results = []
        for image, image_settings in zip(output.images, output.settings):
            if job.mask is not None:  # keep the original pixels outside the painted mask
                image = composite_edit(pictures[0], image, job.mask, image_settings["max_input_image_size"])
            record = {**image_settings, "offload": settings.get("offload"), "preset": job.preset,
                      "input_images_sha256": digests, "kept_pixels_outside_mask": job.mask is not None}
            path = self.output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.png"
            save_png(image, path, record)
            results.append(GeneratedImage(str(path), record))
        return DoneEvent(results, self.save_before(pictures, results))

    def save_before(self, pictures: list[Image.Image], results: list[GeneratedImage]) -> str | None:
        """Image 1 as the model saw it, at the output size: the 'before' of a before/after slider."""
        if not pictures or not results:
            return None
        from omnigen.processor import crop_to_multiple_of_16

        first = results[0].settings
        before = crop_to_multiple_of_16(pictures[0], first["max_input_image_size"])
        if before.size != (first["width"], first["height"]):
            before = before.resize((first["width"], first["height"]), Image.BICUBIC)
        path = self.output_dir / f"before-{uuid.uuid4().hex[:8]}.png"
        before.save(path)
        return str(path)

    def preview_decoder(self, job: GenerationJob) -> PreviewDecoder:
        from omnigen import vae as vae_io
        from omnigen.sampler import get_schedule

        steps = int(job.settings.get("num_inference_steps", self.default_steps()))
        schedule = get_schedule(steps, float(job.settings.get("time_shift", 1.0)))
        # The VAE is used where it sits: pipe.decode would move it (and the transformer) under offload.
        return PreviewDecoder(schedule, job.preview_every,
                              lambda z: vae_io.to_pil(vae_io.decode(self.pipe.vae, z)))


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


# ----------------------------------------------------------------------------- errors a user can cause


def user_message(error: BaseException, job: GenerationJob | None = None) -> str:
    """A sentence for the page: what went wrong and which setting to change. Never a stack trace."""
    from omnigen.sampler import GenerationCancelled, NonFiniteLatents

    if isinstance(error, GenerationCancelled):
        return f"Cancelled: {error}. Nothing was saved."
    if is_out_of_memory(error):
        return out_of_memory_message(job)
    if isinstance(error, NonFiniteLatents):
        return str(error)
    if isinstance(error, (ValueError, FileNotFoundError)):
        text = str(error)
        return text[:1].upper() + text[1:]
    log.error("generation failed", exc_info=error)
    return f"The model failed ({type(error).__name__}). The server log has the details; try other settings."


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, getattr(torch, "OutOfMemoryError", ())) or isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def out_of_memory_message(job: GenerationJob | None) -> str:
    if job is None:
        return "Out of memory. Lower the output size or the number of images, or turn on offload."
    s = job.settings
    hints = [f"the output size (now {s.get('width')}x{s.get('height')})"]
    if job.images:
        hints.append(f"the max input image size (now {s.get('max_input_image_size')})")
    if int(s.get("num_images_per_prompt", 1)) > 1:
        hints.append(f"the number of images (now {s.get('num_images_per_prompt')})")
    if s.get("cfg_mode", "batched") == "batched":
        hints.append("guidance mode: 'separate' (one guidance branch at a time)")
    if not s.get("offload"):
        hints.append("offload: 'model' (or 'sequential', slowest)")
    return "Out of memory. Lower " + "; or ".join(hints) + "."


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


def job_events(job: GenerationJob) -> Iterator[Event]:
    """Run a job in a worker thread; yield a StepEvent per step, then a DoneEvent or a FailedEvent. Refused
    (a FailedEvent) while a LoRA training holds the pipeline."""
    studio = current_studio()
    try:
        with studio.use.generating():  # held until the worker below has stopped
            yield from _job_events(studio, job)
    except PipelineBusy as error:  # raised on entry only: nothing ran
        yield FailedEvent(str(error))


def _job_events(studio: Studio, job: GenerationJob) -> Iterator[Event]:
    from omnigen.sampler import GenerationCancelled

    try:
        pictures = studio.load_inputs(job)
    except ValueError as error:
        yield FailedEvent(user_message(error, job))
        return
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    preview = studio.preview_decoder(job)

    def on_step(step: int, total: int, latents) -> bool:
        image = preview(step, latents) if job.preview_every else None
        events.put(StepEvent(step, total, image))
        return not stop.is_set()

    def work() -> None:
        try:
            events.put(studio.generate(job, pictures, on_step))
        except BaseException as error:  # reported to the page as a sentence, never re-raised in this thread
            events.put(FailedEvent(user_message(error, job), cancelled=isinstance(error, GenerationCancelled)))

    worker = threading.Thread(target=work, name="omnigen-generate", daemon=True)
    worker.start()
    try:
        while True:
            event = events.get()
            yield event
            if not isinstance(event, StepEvent):
                return
    finally:
        stop.set()  # a closed generator (cancel, disconnect) ends the run at its next step
        worker.join()  # and the GPU is free before the next queued job starts


def estimate_gpu_seconds(job: GenerationJob) -> int:
    """A ZeroGPU reservation for the job: fixed costs plus steps x branches x tokens (an estimate, generous)."""
    s = job.settings
    steps = int(s.get("num_inference_steps", 50))
    count = int(s.get("num_images_per_prompt", 1))
    max_side = int(s.get("max_input_image_size") or 1024)
    input_tokens = sum(_tokens_of_input(path, max_side) for path in job.images)
    if s.get("use_input_image_size_as_output") and job.images:
        output_tokens = _tokens_of_input(job.images[0], max_side)
    else:
        output_tokens = (int(s.get("height") or 1024) // 16) * (int(s.get("width") or 1024) // 16)
    branches = 3 if job.images else 2
    per_step = 0.25 * branches * count * (output_tokens + (0 if s.get("use_kv_cache", True) else input_tokens)) / 4096
    first_step = 0.25 * branches * input_tokens / 4096
    return int(min(300, max(20, 15 + steps * per_step + first_step)))


def _tokens_of_input(path: str, max_side: int) -> int:
    try:
        with Image.open(path) as picture:  # the header only
            width, height = picture.size
    except Exception:
        return (max_side // 16) ** 2
    scale = min(1.0, max_side / max(width, height))
    return max(1, int(width * scale) // 16) * max(1, int(height * scale) // 16)


try:  # Hugging Face ZeroGPU: reserve a GPU for the length of the job, estimated from it
    import spaces  # type: ignore[import-not-found]

    gpu_job_events = spaces.GPU(duration=estimate_gpu_seconds)(job_events)
except ImportError:
    gpu_job_events = job_events


# ----------------------------------------------------------------------------- reproducing a result


def python_snippet(settings: dict[str, Any], image_paths: list[str] | None = None) -> str:
    """The OmniGenPipeline call that remakes the image these settings describe."""
    kwargs = reproduce_kwargs(settings)
    images = image_paths if image_paths is not None else [
        f"image-{k}.png" for k in range(1, int(settings.get("num_input_images", 0)) + 1)]
    lines = ["from PIL import Image", "from omnigen import OmniGenPipeline", "",
             f"pipe = OmniGenPipeline.from_pretrained({settings.get('model')!r}, device={settings.get('device')!r}, "
             f"dtype={settings.get('dtype')!r})"]
    for name, scale in (settings.get("loras") or {}).items():
        lines.append(f"pipe.load_lora('PATH/TO/{name}', name={name!r}, scale={scale!r})  # the adapter it used")
    lines.append(f"images = [{', '.join(f'Image.open({p!r})' for p in images)}]  # image 1, 2, ... of the prompt")
    lines.append("out = pipe(")
    lines.append(f"    {settings.get('prompt', '')!r},")
    lines.append("    images or None,")
    lines += [f"    {key}={value!r}," for key, value in kwargs.items() if key != "prompt"]
    lines.append(")")
    lines.append("out.images[0].save('result.png')")
    if settings.get("kept_pixels_outside_mask"):
        lines.append("# The studio then kept image 1's pixels outside a painted mask: "
                     "app.compose.composite_edit(Image.open(...), out.images[0], mask, max_input_image_size)")
    return "\n".join(lines) + "\n"
