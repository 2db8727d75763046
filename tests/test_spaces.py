"""app/engine.py under the real `spaces` package (Hugging Face ZeroGPU): outside a Space its decorator passes the
job generator through unchanged; on ZeroGPU it reserves a GPU for `estimate_gpu_seconds(job)`, which is checked
here by reading the duration the way spaces' own wrapper does (spaces.zero.wrappers.static_duration; that
module imports CUDA-only parts of torch, so on a CPU build its two small functions are repeated here).

Each test loads a fresh copy of app/engine.py under another module name, so the studio's own app.engine (and
the classes other modules imported from it) stay as they are."""

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pytest

spaces = pytest.importorskip("spaces")
try:  # the ZeroGPU wrapper's own reading of the duration (its module needs a CUDA build of torch)
    from spaces.zero.wrappers import process_duration, static_duration
except (ImportError, AttributeError):
    def static_duration(duration, *args, **kwargs):  # spaces 0.51, spaces/zero/wrappers.py, word for word
        if not callable(duration):
            return duration
        return duration(*args, **kwargs)

    def process_duration(duration):
        if duration is None or isinstance(duration, timedelta):
            return duration
        return timedelta(seconds=duration)

from omnigen.settings import GenerationSettings  # noqa: E402

ENGINE = Path(__file__).resolve().parent.parent / "app" / "engine.py"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fresh_engine(monkeypatch):
    """A function that imports a new copy of app/engine.py (it runs its `import spaces` then) as app._engine_copy."""
    import app  # noqa: F401 - the package the copy's relative imports resolve in

    def load():
        spec = importlib.util.spec_from_file_location("app._engine_copy", ENGINE)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up; removed after
        spec.loader.exec_module(module)
        return module

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    return load


def test_outside_a_space_the_decorator_passes_the_job_generator_through(fresh_engine):
    assert not spaces.config.Config.zero_gpu  # SPACES_ZERO_GPU is set only on ZeroGPU hardware
    engine = fresh_engine()
    assert engine.gpu_job_events is engine.job_events


def test_on_zerogpu_the_reservation_is_estimated_from_the_job(fresh_engine, monkeypatch, tiny_pipe, tmp_path):
    decorated, reserved = [], []
    real_gpu = spaces.GPU

    def recording_gpu(task=None, *, duration=None, size=None):
        """spaces.GPU as ZeroGPU calls it: the duration read from the call's arguments before the task runs."""
        def wrap(function):
            decorated.append((function, duration))
            passed = real_gpu(function, duration=duration, size=size)  # the real decorator, outside a Space

            def reserving(*args, **kwargs):
                reserved.append((args, kwargs, process_duration(static_duration(duration, *args, **kwargs))))
                yield from passed(*args, **kwargs)

            return reserving

        return wrap if task is None else wrap(task)

    monkeypatch.setattr(spaces, "GPU", recording_gpu)
    engine = fresh_engine()
    assert decorated == [(engine.job_events, engine.estimate_gpu_seconds)]

    engine.set_studio(engine.Studio(tiny_pipe, tmp_path / "outputs"))
    job = engine.GenerationJob("a red square", [], GenerationSettings(height=32, width=32, num_inference_steps=2,
                                                                       seed=0))
    events = list(engine.gpu_job_events(job))
    assert isinstance(events[-1], engine.DoneEvent) and len(events[-1].images) == 1
    assert reserved == [((job,), {}, timedelta(seconds=engine.estimate_gpu_seconds(job)))]


def test_the_estimate_grows_with_the_work_and_stays_within_zerogpu_bounds(fresh_engine):
    engine = fresh_engine()

    def seconds(**settings) -> int:
        return engine.estimate_gpu_seconds(engine.GenerationJob("a cat", [], GenerationSettings(**settings)))

    small = seconds(height=256, width=256, num_inference_steps=10)
    large = seconds(height=1024, width=1024, num_inference_steps=50)
    assert 20 <= small < large <= 300
    assert seconds(height=1024, width=1024, num_inference_steps=50, num_images_per_prompt=4) > large
