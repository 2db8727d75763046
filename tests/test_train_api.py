"""The training endpoints through gradio_client against a served studio on the tiny model: a run started,
watched, stopped and its adapter fetched and loaded; the token rule; bad uploads refused before anything
trains; status and stop with no run."""

import json
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.train_runs import RUNS
from app.train_tab import build_train_tab
from omnigen import OmniGenPipeline
from omnigen.training import TrainConfig

from studio_support import serve_studio  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = dict(name="squares", rank=4, alpha=0, learning_rate=1e-2, batch_size=1, resolution=32,
                targets="attention", condition_dropout=0.0, sample_guidance_scale=1.0)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    from gradio_client import Client

    with serve_studio(tiny_model_dir, tmp_path_factory.mktemp("api-outputs"), extra_tabs=[build_train_tab]) as s:
        yield {**s, "client": Client(s["url"], verbose=False)}


@pytest.fixture
def dataset(tmp_path) -> dict[str, Path]:
    """A JSONL with two text-to-image rows and one edit, its images, and the same as a zip (images/ inside)."""
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    for name, rgb in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        picture = Image.new("RGB", (32, 32), (255, 255, 255))
        picture.paste(rgb, (8, 8, 24, 24))
        picture.save(folder / "images" / f"{name}.png")
    rows = [{"instruction": "a red square", "output_image": "images/red.png"},
            {"instruction": "a blue square", "output_image": "images/blue.png"},
            {"instruction": "<img><|image_1|></img> make the square blue", "input_images": ["images/red.png"],
             "output_image": "images/blue.png"}]
    jsonl = folder / "data.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in [jsonl, *sorted((folder / "images").iterdir())]:
            zipped.write(path, path.relative_to(folder))
    return {"jsonl": jsonl, "images": sorted((folder / "images").iterdir()), "zip": archive}


def wait_for(client, token: str, done, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, samples = client.predict(token, api_name="/train_status")
        if done(status):
            return {**status, "sample_files": samples or []}
        time.sleep(0.3)
    raise AssertionError(f"the run did not get there in {timeout} s: {status}")


def latents(pipe) -> torch.Tensor:
    return pipe("a red square", height=32, width=32, num_inference_steps=2, seed=0, output_type="latent",
                progress=False).images[0]


def test_the_endpoints_are_named_and_documented(served):
    info = served["client"].view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/train_start", "/train_status", "/train_stop", "/train_adapter"} <= set(info)
    start = {p["parameter_name"]: p for p in info["/train_start"]["parameters"]}
    assert list(start)[:2] == ["dataset", "name"] and start["rank"]["parameter_default"] == 8
    assert start["steps"]["parameter_default"] == TrainConfig.steps
    assert start["targets"]["parameter_default"] == "attention"


@pytest.mark.slow
def test_a_run_is_started_watched_stopped_and_its_adapter_fetched(served, dataset, tiny_model_dir, tmp_path):
    from gradio_client import handle_file

    client, studio = served["client"], served["studio"]
    files = [handle_file(str(dataset["jsonl"])), *(handle_file(str(p)) for p in dataset["images"])]
    started = time.monotonic()
    run = client.predict(files, **SETTINGS, steps=60, validation_prompts="a red square", sample_every=1,
                         max_grad_norm=0, api_name="/train_start")
    assert time.monotonic() - started < 30 and run["name"] == "squares" and run["total"] == 60 and run["token"]
    try:
        status = wait_for(client, run["token"], lambda s: s["step"] >= 1 and s["samples"])
        recorded = json.loads((studio.output_dir / RUNS / run["run"] / "train_config.json").read_text())
        assert recorded["max_grad_norm"] == 0.0  # the run trains without clipping
        assert status["state"] == "running" and status["total"] == 60 and status["loss"] > 0
        assert status["eta_s"] is not None and status["run"] == run["run"] and status["sample_prompts"] == [
            "a red square"]
        assert Path(status["sample_files"][0]).is_file()  # gradio_client fetched the validation picture

        anyone, no_samples = client.predict("", api_name="/train_status")
        assert no_samples is None and anyone == {"state": "busy", "name": "squares",
                          "message": "A training ('squares') is running; pass its token for its progress."}
        with pytest.raises(Exception, match="only with the token"):
            client.predict("not-the-token", api_name="/train_stop")
        assert "another page" in studio.live.stop_training("a page's session")  # the page's Stop cannot either
        with pytest.raises(Exception, match="already running"):
            client.predict(files, **SETTINGS, steps=5, api_name="/train_start")
    finally:
        stopping = client.predict(run["token"], api_name="/train_stop")
    assert stopping["state"] in ("stopping", "stopped")
    stopped = wait_for(client, run["token"], lambda s: s["state"] != "stopping" and s["state"] != "running")
    assert stopped["state"] == "stopped" and 1 <= stopped["step"] < 60 and stopped["adapter_step"] == stopped["step"]
    assert studio.live.training is None and studio.live.use.exclusive is None and studio.pipe.loras == {}

    archive = client.predict(run["token"], api_name="/train_adapter")
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == ["squares/adapter_config.json", "squares/adapter_model.safetensors"]
        zipped.extractall(tmp_path / "fetched")
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    before = latents(pipe)
    assert pipe.load_lora(tmp_path / "fetched" / "squares") == "squares"
    assert (latents(pipe) - before).abs().max() > 1e-4  # the trained adapter changes the picture
    with pytest.raises(Exception, match="the adapter goes only to the run's caller"):
        client.predict("", api_name="/train_adapter")


def test_status_and_stop_with_no_run(served):
    client = served["client"]
    assert client.predict("", api_name="/train_status") == ({"state": "idle", "message": "Nothing is training."},
                                                            None)
    with pytest.raises(Exception, match="Nothing is training"):
        client.predict("", api_name="/train_stop")
    with pytest.raises(Exception, match="No training started through this server's API has that token"):
        client.predict("made-up", api_name="/train_status")
    with pytest.raises(Exception, match="Pass the token"):
        client.predict("made-up", api_name="/train_adapter")


def test_a_zip_that_is_not_a_dataset_is_refused(served, tmp_path):
    from gradio_client import handle_file

    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("notes/readme.md", "no pictures here")
    with pytest.raises(Exception, match="no .jsonl file and no images"):
        served["client"].predict([handle_file(str(archive))], **SETTINGS, steps=3, api_name="/train_start")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not really a zip")
    with pytest.raises(Exception, match="not a readable zip file"):
        served["client"].predict([handle_file(str(broken))], **SETTINGS, steps=3, api_name="/train_start")
    assert served["studio"].live.training is None


def test_a_jsonl_naming_a_file_outside_the_upload_is_refused(served, dataset, tmp_path):
    from gradio_client import handle_file

    secret = served["studio"].output_dir / "lora-datasets" / "secret.png"  # exists, next to the upload's folder
    Image.new("RGB", (32, 32)).save(secret)
    jsonl = tmp_path / "escape.jsonl"
    jsonl.write_text(json.dumps({"instruction": "a red square", "output_image": "../secret.png"}) + "\n"
                     + json.dumps({"instruction": "a cat", "output_image": "/etc/hostname"}) + "\n", encoding="utf-8")
    with pytest.raises(Exception) as caught:
        served["client"].predict([handle_file(str(jsonl)), handle_file(str(dataset["images"][0]))], **SETTINGS,
                                 steps=3, api_name="/train_start")
    message = str(caught.value)
    assert "escape.jsonl:1: output image '../secret.png' is outside the dataset's folder" in message
    assert "escape.jsonl:2" in message and served["studio"].live.training is None


def test_bad_settings_are_refused_with_the_tabs_checks(served, dataset):
    from gradio_client import handle_file

    client = served["client"]
    with pytest.raises(Exception, match="Resolution must be a multiple of 16"):
        client.predict([handle_file(str(dataset["zip"]))], **{**SETTINGS, "resolution": 40}, steps=3,
                       api_name="/train_start")
    with pytest.raises(Exception, match="Give the adapter a name"):
        client.predict([handle_file(str(dataset["zip"]))], **{**SETTINGS, "name": "  "}, steps=3,
                       api_name="/train_start")
    with pytest.raises(Exception, match="-1 is less than minimum value 0"):  # the field's range, in Gradio's words
        client.predict([handle_file(str(dataset["zip"]))], **SETTINGS, max_grad_norm=-1, steps=3,
                       api_name="/train_start")
    assert served["studio"].live.training is None
