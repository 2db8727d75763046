"""The studio's /generate endpoint through gradio_client, on the embedded model (assets/omnigen-mini):
uploads, settings, PNG metadata that reproduces each image, concurrent clients, cancellation and
readable errors.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app.api import SERVER_PATH_REFUSED, SLOT_NAMES  # noqa: E402
from omnigen.settings import setting_fields  # noqa: E402
from omnigen.pipeline import DEFAULT_MODEL, OmniGenPipeline  # noqa: E402
from omnigen.png import python_snippet, read_settings, reproduce_kwargs  # noqa: E402
from studio_support import serve_studio  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_studio(DEFAULT_MODEL, tmp_path_factory.mktemp("studio-outputs")) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return Client(server["url"], verbose=False)


@pytest.fixture(scope="module")
def reference_pipe():
    """A second, independent pipeline: what a user reproducing an image from its metadata would load."""
    pipe = OmniGenPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("inputs") / "scene.png"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)  # within max_input_image_size
    return path


def first_image(result) -> Path:
    gallery, settings = result
    assert len(gallery) == len(settings) >= 1
    return Path(gallery[0]["image"])


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else Image.open(image).convert("RGB"))


def test_the_api_lists_the_generate_endpoint_with_named_parameters(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert names[:7] == ["prompt", "image_1", "image_2", "image_3", "image_4", "image_5", "mask"]
    assert {"width", "height", "num_inference_steps", "seed", "use_input_image_size_as_output"} <= set(names)
    assert "/generate_ui" not in endpoints  # the page's own event stays private


def test_text_to_image_has_the_requested_size_and_its_metadata_reproduces_it(client, reference_pipe):
    result = client.predict("a red circle at the top left", width=96, height=64, num_inference_steps=STEPS, seed=11,
                            api_name="/generate")
    path = first_image(result)
    image = Image.open(path)
    assert image.size == (96, 64)
    settings = read_settings(path)
    assert settings == result[1][0] and settings["seed"] == 11
    again = reference_pipe(settings["prompt"], **reproduce_kwargs(settings)).images[0]
    assert np.array_equal(pixels(again), pixels(image))


def test_an_edit_with_an_uploaded_image_takes_its_size_and_reproduces(client, reference_pipe, scene):
    prompt = "<img><|image_1|></img> make the red circle green"
    result = client.predict(prompt, image_1=handle_file(str(scene)), use_input_image_size_as_output=1,
                            height=1000, num_inference_steps=STEPS, seed=5, api_name="/generate")
    path = first_image(result)
    assert Image.open(path).size == (64, 48)  # height 1000 is not a multiple of 16, and not used: not refused
    settings = read_settings(path)
    assert settings["num_input_images"] == 1 and settings["use_input_image_size_as_output"] == 1
    again = reference_pipe(settings["prompt"], [Image.open(scene)], **reproduce_kwargs(settings)).images[0]
    assert np.array_equal(pixels(again), pixels(path))


def test_the_copy_as_python_snippet_remakes_the_png_byte_for_byte(client, scene, tmp_path, monkeypatch):
    prompt = "<img><|image_1|></img> remove the blue square"
    result = client.predict(prompt, image_1=handle_file(str(scene)), use_input_image_size_as_output=1,
                            num_inference_steps=STEPS, seed=9, api_name="/generate")
    path = first_image(result)
    code = python_snippet(read_settings(path), [str(scene)])
    assert "from_pretrained(device=" in code and str(DEFAULT_MODEL) not in code  # no server path shown
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "snippet", "exec"), {})
    assert (tmp_path / "result.png").read_bytes() == path.read_bytes()  # pixels and settings alike


@pytest.mark.slow
def test_four_clients_at_once_each_get_their_own_result(server, reference_pipe):
    jobs = [(f"a {colour} circle in the center", seed) for colour, seed in
            (("red", 1), ("green", 2), ("blue", 3), ("yellow", 4))]

    def call(job):
        prompt, seed = job
        own_client = Client(server["url"], verbose=False)  # one session each, as four browsers would be
        return first_image(own_client.predict(prompt, num_inference_steps=STEPS, seed=seed, api_name="/generate"))

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(call, jobs))
    for (prompt, seed), path in zip(jobs, paths):
        alone = reference_pipe(prompt, num_inference_steps=STEPS, seed=seed).images[0]
        assert read_settings(path)["prompt"] == prompt and read_settings(path)["seed"] == seed
        assert np.array_equal(pixels(alone), pixels(path)), f"{prompt!r} got another job's picture"


def test_user_errors_come_back_as_sentences(client, scene, tmp_path):
    with pytest.raises(AppError, match=r"uses <\|image_1\|> but image slot 1 is empty"):
        client.predict("<img><|image_1|></img> make it blue", num_inference_steps=STEPS, api_name="/generate")
    with pytest.raises(AppError, match="Image 1 is uploaded but the prompt does not use it"):
        client.predict("make it blue", image_1=handle_file(str(scene)), api_name="/generate")
    with pytest.raises(AppError, match="(?i)width 100 is not a multiple of 16; use 96 or 112"):
        client.predict("a red circle", width=100, num_inference_steps=STEPS, api_name="/generate")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    with pytest.raises(AppError, match=r"(?i)image 1: cannot read image 'broken.png'") as caught:
        client.predict("<img><|image_1|></img> x", image_1=handle_file(str(broken)), num_inference_steps=STEPS,
                       api_name="/generate")
    assert "Traceback" not in str(caught.value) and "/tmp" not in str(caught.value)


def test_huge_pictures_and_oversized_uploads_are_refused(client, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000)).save(huge)  # 48 megapixels in a small file
    with pytest.raises(AppError, match="is 8000x6000 = 48,000,000 pixels, more than the limit"):
        client.predict("<img><|image_1|></img> x", image_1=handle_file(str(huge)), num_inference_steps=STEPS,
                       api_name="/generate")
    too_big = tmp_path / "too-big.png"
    too_big.write_bytes(b"\0" * (21 * 1024 * 1024))  # above the studio's 20 MB upload limit
    with pytest.raises(Exception, match="(?i)exceeds the maximum|too large|413"):
        client.predict("<img><|image_1|></img> x", image_1=handle_file(str(too_big)), api_name="/generate")


def test_a_path_the_client_did_not_upload_is_not_read(server):
    import httpx

    outputs = Path(server["studio"].output_dir)
    before = set(outputs.glob("*.png"))
    secret = outputs.parent / "not-uploaded.png"
    Image.new("RGB", (32, 32), "red").save(secret)
    rest = len(SLOT_NAMES) + len(setting_fields())  # image_2..5, the mask, then every setting
    data = ["<img><|image_1|></img> x", {"path": str(secret), "meta": {"_type": "gradio.FileData"}}] + [None] * rest
    posted = httpx.post(server["url"] + "gradio_api/call/generate", json={"data": data}, timeout=30)
    event_id = posted.json()["event_id"]
    answer = httpx.get(server["url"] + f"gradio_api/call/generate/{event_id}", timeout=60).text
    assert "event: error" in answer and "event: complete" not in answer
    assert SERVER_PATH_REFUSED in answer and str(secret) not in answer  # a sentence, not {"error": null}
    assert set(outputs.glob("*.png")) == before  # refused before anything ran


def test_a_cancelled_run_stops_within_a_step_and_saves_nothing(client, server):
    outputs = Path(server["studio"].output_dir)
    before = set(outputs.glob("*.png"))
    job = client.submit("a red circle", num_inference_steps=1000, seed=77, api_name="/generate")
    deadline = time.time() + 30
    sampling = False
    while time.time() < deadline and not sampling:  # wait until it is really sampling
        progress = job.status().progress_data
        sampling = bool(progress and progress[0].index)
        time.sleep(0.1)
    assert sampling, "the run never reported a step"
    job.cancel()
    started = time.time()
    # The queue has one GPU slot: the next job can only finish once the cancelled one has let go of it.
    next_result = client.predict("a blue square", num_inference_steps=STEPS, seed=78, api_name="/generate")
    assert time.time() - started < 20
    new = set(outputs.glob("*.png")) - before
    seeds = {read_settings(path)["seed"] for path in new if not path.name.startswith("before-")}
    assert 77 not in seeds and 78 in seeds
    assert first_image(next_result).is_file()


# ----------------------------------------------------------------------------- the engine's own arithmetic


def test_the_step_callback_gets_the_estimate_of_the_final_image():
    """The live preview decodes what the sampler's callback hands over: x + (1 - t) * v, the end of the path
    if the velocity stayed as it is. With a constant velocity field that is the exact final latent."""
    import torch

    from omnigen.sampler import SamplingPlan, denoise, get_schedule

    start, field = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)

    class ConstantVelocity(torch.nn.Module):
        dtype = torch.float32

        def forward(self, x, timestep, **kwargs):
            return field.expand_as(x), None

    batch = type("Batch", (), {"rows": 1, "model_kwargs": lambda self: {}})()
    estimates = {}
    plan = SamplingPlan(1, "euler", tuple(get_schedule(8, shift=3.0)), 2.5, 1.6, use_kv_cache=False)
    end = denoise(ConstantVelocity(), start, [batch], plan,
                  callback=lambda step, total, latents, estimate: estimates.setdefault(step, estimate))
    assert sorted(estimates) == list(range(1, 9)) and torch.allclose(end, start + field, atol=1e-5)
    for estimate in estimates.values():
        assert torch.allclose(estimate, start + field, atol=1e-5)


def test_the_gpu_reservation_grows_with_the_job_and_stays_bounded(scene):
    from app.engine import GenerationJob, estimate_gpu_seconds
    from omnigen.settings import GenerationSettings

    small = GenerationJob("x", [], GenerationSettings(num_inference_steps=10, height=256, width=256))
    large = GenerationJob("x", [str(scene)], GenerationSettings(num_inference_steps=50, height=1024, width=1024,
                                                                num_images_per_prompt=4))
    assert 20 <= estimate_gpu_seconds(small) < estimate_gpu_seconds(large) <= 300


def test_out_of_memory_names_the_settings_to_lower():
    from omnigen.errors import user_message
    from omnigen.settings import GenerationSettings

    settings = GenerationSettings(width=1024, height=1024, max_input_image_size=1024, num_images_per_prompt=2,
                                  cfg_mode="batched")
    message = user_message(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), settings, 1, None)
    for hint in ("1024x1024", "max input image size", "number of images", "separate", "offload"):
        assert hint in message
    assert "Tried to allocate" not in message
