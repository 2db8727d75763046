"""What a careless or hostile user can send, across the library, the CLI, model folders, adapters, training
data and the studio's API: each case gets a clear sentence naming what was wrong, and leaves nothing broken
(the next request gives the same image as before; no good file is replaced by a partial one)."""

from __future__ import annotations

import json
import resource
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omnigen.cli import main as cli_main
from omnigen.pipeline import DEFAULT_MODEL, OmniGenPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 2
GOOD_PROMPT = "a large red circle at the top left on a white background"


@pytest.fixture(scope="module")
def pipe():
    pipe = OmniGenPipeline.from_pretrained(DEFAULT_MODEL, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference(pipe) -> np.ndarray:
    """The picture of a good request, made before any bad one."""
    return good_picture(pipe)


def good_picture(pipe) -> np.ndarray:
    return np.asarray(pipe(GOOD_PROMPT, seed=1, num_inference_steps=STEPS).images[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-files")
    scene = root / "scene.png"
    Image.new("RGB", (64, 64), (250, 250, 250)).save(scene)
    text = root / "notes.png"
    text.write_text("not a picture")
    return {"root": root, "scene": scene, "text": text, "bomb": decompression_bomb(root / "bomb.png")}


def decompression_bomb(path: Path) -> Path:
    """A 20-byte-of-pixels PNG whose header claims 40000 x 40000 pixels."""
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", 40000, 40000)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------------------- the library


LIBRARY_CASES = {
    "height 0": (dict(height=0), "height must be at least 16"),
    "width not a multiple of 16": (dict(width=100), "width 100 is not a multiple of 16; use 96 or 112"),
    "a huge size": (dict(height=100_000 // 16 * 16), "larger than this model can draw"),
    "steps 0": (dict(num_inference_steps=0), "num_inference_steps must be between 1"),
    "steps as text": (dict(num_inference_steps="ten"), "num_inference_steps must be a whole number"),
    "NaN guidance": (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
    "infinite image guidance": (dict(img_guidance_scale=float("inf")), "img_guidance_scale must be a finite"),
    "negative guidance": (dict(guidance_scale=-2.0), "guidance_scale must be between 0.0"),
    "unknown guidance mode": (dict(cfg_mode="fast"), "cfg_mode must be one of batched, separate"),
    "negative seed": (dict(seed=-1), "seed must be between 0"),
    "seed as text": (dict(seed="abc"), "seed must be a whole number"),
    "unknown setting": (dict(steps=3), "unknown setting.*steps"),
    "no images per prompt": (dict(num_images_per_prompt=0), "num_images_per_prompt must be between 1"),
    "time shift 0": (dict(time_shift=0.0), "time_shift must be between"),
    "tiny max input size": (dict(max_input_image_size=8), "max_input_image_size must be at least 16"),
    "negative prompt not text": (dict(negative_prompt=3), "negative_prompt must be text"),
    "kv cache not a boolean": (dict(use_kv_cache="no"), "use_kv_cache must be true or false"),
    "unknown output type": (dict(output_type="jpeg"), "output_type must be one of"),
}


@pytest.mark.parametrize("case", sorted(LIBRARY_CASES))
def test_a_bad_setting_is_refused_by_name(pipe, reference, case):
    change, words = LIBRARY_CASES[case]
    with pytest.raises(ValueError, match=words):
        pipe(GOOD_PROMPT, **{"seed": 1, "num_inference_steps": STEPS, **change})


PROMPT_CASES = {
    "a placeholder without its image": ("<img><|image_1|></img> make it blue", [], "image"),
    "an image without its placeholder": ("make it blue", ["scene"], "image"),
    "a placeholder past the images": ("<img><|image_2|></img> and <img><|image_1|></img>", ["scene"], "image_2"),
    "a malformed tag": ("<img><|image_x|></img> blue", ["scene"], "image"),
    "an unreadable image": ("<img><|image_1|></img> blue", ["text"], "not a readable image|cannot identify"),
    "a missing image file": ("<img><|image_1|></img> blue", ["missing"], "not found"),
    "a decompression bomb": ("<img><|image_1|></img> blue", ["bomb"], "pixels|too large|larger"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_a_bad_prompt_or_image_is_refused_by_name(pipe, files, case):
    prompt, images, words = PROMPT_CASES[case]
    paths = [str(files.get(name, files["root"] / "missing.png")) for name in images]
    with pytest.raises(ValueError, match=words):
        pipe(prompt, paths or None, seed=1, num_inference_steps=STEPS)


def test_output_size_from_a_missing_image_and_images_in_the_negative_prompt(pipe, files):
    with pytest.raises(ValueError, match="size of image 3 but the prompt has only 1 input image"):
        pipe("<img><|image_1|></img> blue", [str(files["scene"])], use_input_image_size_as_output=3, seed=1)
    with pytest.raises(ValueError, match="the negative prompt cannot use images"):
        pipe(GOOD_PROMPT, seed=1, negative_prompt="<img><|image_1|></img>")
    with pytest.raises(ValueError, match="latents has 2 rows for 1 images"):
        pipe(GOOD_PROMPT, seed=1, latents=torch.zeros(2, 8, 8, 8))


def test_a_huge_size_is_refused_before_anything_is_allocated(pipe):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for side in (100_000 // 16 * 16, 1 << 20):
        with pytest.raises(ValueError, match="larger than this model can draw"):
            pipe(GOOD_PROMPT, height=side, width=side, seed=1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: peak memory stayed flat


def test_after_every_bad_request_the_pipeline_draws_the_same_picture(pipe, reference):
    assert np.array_equal(good_picture(pipe), reference)


# ----------------------------------------------------------------------------- model folders


def broken_copy(tmp_path: Path, breaking) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, folder)
    breaking(folder)
    return folder


FOLDER_CASES = {
    "no config.json": (lambda f: (f / "config.json").unlink(), "config.json"),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{oops"), "not valid JSON"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "model"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
                          "model.safetensors"),
    "no vae": (lambda f: shutil.rmtree(f / "vae"), "vae"),
    "bad generation default": (lambda f: (f / "generation_config.json").write_text('{"guidance_scale": "x"}'),
                               "generation default is not valid: guidance_scale"),
    "generation_config not JSON": (lambda f: (f / "generation_config.json").write_text("[1,"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_a_broken_model_folder_is_refused_naming_what_is_wrong(tmp_path, case):
    breaking, words = FOLDER_CASES[case]
    folder = broken_copy(tmp_path, breaking)
    with pytest.raises((ValueError, FileNotFoundError, OSError), match=words):
        OmniGenPipeline.from_pretrained(folder, device="cpu")


def test_a_model_that_is_neither_a_folder_nor_a_hub_id(tmp_path):
    with pytest.raises(ValueError, match="neither a folder nor a Hugging Face repo id"):
        OmniGenPipeline.from_pretrained(tmp_path / "nowhere" / "x y", device="cpu")


# ----------------------------------------------------------------------------- adapters


def test_adapters_that_do_not_fit_leave_the_pipeline_as_it_was(pipe, reference, tmp_path, tiny_model_dir):
    from omnigen.lora import LoraAdapterError, add_lora, save_lora

    tiny = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    add_lora(tiny.transformer, "other", rank=2)
    save_lora(tiny.transformer, tmp_path / "other", name="other")
    with pytest.raises(LoraAdapterError, match="does not fit this model"):
        pipe.load_lora(tmp_path / "other")
    with pytest.raises(LoraAdapterError, match="has no adapter_model.safetensors"):
        pipe.load_lora(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "other", broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(LoraAdapterError, match="not valid JSON"):
        pipe.load_lora(broken)
    (broken / "adapter_config.json").unlink()
    with pytest.raises(LoraAdapterError, match="has no adapter_config.json"):
        pipe.load_lora(broken)
    with pytest.raises((ValueError, FileNotFoundError)):
        pipe.load_lora(tmp_path / "nowhere")
    assert pipe.loras == {} and np.array_equal(good_picture(pipe), reference)


# ----------------------------------------------------------------------------- training data


def jsonl_dataset(folder: Path, lines: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 0, 0)).save(folder / "red.png")
    path = folder / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD_LINE = {"instruction": "a red square", "output_image": "red.png"}
JSONL_CASES = {
    "malformed JSON": (["{broken"], ":1: malformed JSON"),
    "missing instruction": ([{"output_image": "red.png"}], ':1: missing key "instruction"'),
    "missing output": ([{"instruction": "x"}], ':1: missing key "output_image"'),
    "a missing picture": ([GOOD_LINE, {"instruction": "x", "output_image": "gone.png"}], ":2: output image 'gone.png' not found"),
    "a path out of the folder": ([{"instruction": "x", "output_image": "../../etc/hostname"}], "outside the dataset's folder"),
    "an absolute path": ([{"instruction": "x", "output_image": "/etc/hostname"}], "outside the dataset's folder"),
    "a placeholder without its image": ([{"instruction": "<img><|image_1|></img> x", "output_image": "red.png"}],
                                        "instruction and input_images do not match"),
    "not an object": (["[1, 2]"], ":1: expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_a_bad_training_jsonl_names_its_line(tmp_path, case):
    from omnigen.training import DatasetError, JsonlDataset

    lines, words = JSONL_CASES[case]
    with pytest.raises(DatasetError, match=words.replace("(", r"\(").replace("|", r"\|")):
        JsonlDataset(jsonl_dataset(tmp_path / "data", lines), confined=True).validate()


def test_an_uploaded_jsonl_never_opens_a_server_file(tmp_path, monkeypatch):
    """Its paths are refused before any file outside the upload is touched."""
    from app import train_data
    from omnigen.training import DatasetError

    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    upload = jsonl_dataset(tmp_path / "upload", [{"instruction": "x", "output_image": str(secret)},
                                                 {"instruction": "y", "output_image": "../secret.png"}])
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(Path(path)) or original(path, *a, **k))
    (tmp_path / "kept").mkdir()
    with pytest.raises(DatasetError) as caught:
        train_data.rows_from_upload([str(upload), str(upload.parent / "red.png")], tmp_path / "kept")
    assert "outside the dataset's folder" in str(caught.value) and secret not in opened


def test_a_zip_with_paths_out_of_it_or_not_a_zip_is_refused(tmp_path):
    from app import train_data
    from omnigen.training import DatasetError

    def folder(name: str) -> Path:
        (tmp_path / name).mkdir()
        return tmp_path / name

    escaping = tmp_path / "escaping.zip"
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../../evil.png", b"x")
        archive.writestr("/abs.png", b"x")
    with pytest.raises(DatasetError, match="a path outside the archive's folder"):
        train_data.rows_from_upload([str(escaping)], folder("one"))
    assert not (tmp_path / "evil.png").exists()
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(DatasetError, match="is not a readable zip file"):
        train_data.rows_from_upload([str(fake)], folder("two"))
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.md", b"hello")
    with pytest.raises(DatasetError, match="no .jsonl file and no images"):
        train_data.rows_from_upload([str(empty)], folder("three"))


def test_an_image_folder_with_a_picture_but_no_instruction(tmp_path):
    from app import train_data
    from omnigen.training import DatasetError

    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    with pytest.raises(DatasetError, match="a.png"):
        train_data.rows_from_folder(folder)


# ----------------------------------------------------------------------------- the command line


CLI_CASES = {
    "steps 0": (["--steps", "0"], "num_inference_steps must be between 1"),
    "height 0": (["--height", "0"], "Height must be at least 16"),
    "a missing model": (["--model", "/nowhere/model"], "neither a folder nor a Hugging Face repo id"),
    "a missing image": (["--prompt", "<img><|image_1|></img> x", "--image", "/nowhere.png"], "not found"),
    "an output size from no image": (["--use-input-image-size-as-output"], "size of image 1 but the prompt has no"),
    "--out under a file": (["--out", "/etc/hostname/x.png"], "is a file, not a folder"),
    "--out a folder": (["--out", "/tmp"], "is a folder; give a file name"),
    "a huge size": (["--height", "4096", "--width", "4096"], "larger than this model can draw"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_the_cli_prints_a_sentence_not_a_traceback(capsys, case):
    extra, words = CLI_CASES[case]
    args = ["generate", "--prompt", GOOD_PROMPT, "--steps", "1", "--device", "cpu", "--out", "/tmp/never.png"]
    assert cli_main(args + extra) == 2
    error = capsys.readouterr().err
    assert words in error and "Traceback" not in error and error.startswith("error: ")


# ----------------------------------------------------------------------------- the studio's API


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from studio_support import serve_studio

    with serve_studio(DEFAULT_MODEL, tmp_path_factory.mktemp("studio")) as served:
        served["studio"].limits = type(served["studio"].limits)(max_prompt_chars=500, max_images=2)
        yield served


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served["url"], verbose=False)


API_CASES = {
    "steps 0": (dict(num_inference_steps=0), "num_inference_steps must be between 1"),
    "height 0": (dict(height=0), "Height must be at least 16"),
    "a huge size": (dict(height=100_000 // 16 * 16), "larger than this model can draw"),
    "guidance out of range": (dict(guidance_scale=1e9), "guidance_scale must be between 0.0 and 100.0"),
    "unknown guidance mode": (dict(cfg_mode="fast"), "cfg_mode must be one of batched, separate"),
    "a prompt over the limit": (dict(prompt="x" * 600), "over this server's limit of 500 (max_prompt_chars)"),
    "too many images": (dict(num_images_per_prompt=3), "over this server's limit of 2 (max_images)"),
    "a placeholder without its image": (dict(prompt="<img><|image_1|></img> blue"), "image slot 1 is empty"),
    "an empty prompt": (dict(prompt="   "), "The prompt is empty"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(API_CASES))
def test_the_api_answers_a_bad_request_with_a_sentence(client, case):
    from gradio_client.exceptions import AppError

    change, words = API_CASES[case]
    request = {"prompt": GOOD_PROMPT, "seed": 1, "num_inference_steps": STEPS, **change}
    with pytest.raises(AppError) as caught:
        client.predict(api_name="/generate", **request)
    assert words.lower() in str(caught.value).lower() and "Traceback" not in str(caught.value)


@pytest.mark.slow
def test_a_server_path_named_as_an_image_is_never_read(client, served):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError, OSError)) as caught:
        client.predict("<img><|image_1|></img> blue", image_1=handle_file("/etc/hostname"), seed=1,
                       num_inference_steps=STEPS, api_name="/generate")
    assert "Traceback" not in str(caught.value)


@pytest.mark.slow
def test_raw_http_with_wrong_values_gets_an_error_event(served):
    import urllib.request

    url = served["url"].rstrip("/") + "/gradio_api/call/generate"
    body = json.dumps({"data": [GOOD_PROMPT] + [None] * 6 + ["wide"] + [None] * 30}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(f"{url}/{event_id}", timeout=60).read().decode()
    assert "event: error" in stream and "Traceback" not in stream


@pytest.mark.slow
def test_after_every_bad_request_the_studio_draws_the_same_picture(client, reference):
    gallery, _ = client.predict(GOOD_PROMPT, seed=1, num_inference_steps=STEPS, api_name="/generate")
    assert np.array_equal(np.asarray(Image.open(gallery[0]["image"]).convert("RGB")), reference)


def test_a_zip_holding_a_link_out_of_it_is_not_followed(tmp_path):
    """zipfile writes a link member as a small file holding the target's path: never a link, never read."""
    import stat

    from app import train_data
    from omnigen.training import DatasetError

    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    archive_path = tmp_path / "linked.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        link = zipfile.ZipInfo("images/00.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, str(secret))
        archive.writestr("data.jsonl", json.dumps({"instruction": "x", "output_image": "images/00.png"}) + "\n")
    (tmp_path / "kept").mkdir()
    with pytest.raises(DatasetError, match="not a readable image"):
        train_data.rows_from_upload([str(archive_path)], tmp_path / "kept")
    assert not (tmp_path / "kept" / "images" / "00.png").is_symlink()


@pytest.mark.parametrize("wording", ["CUDA out of memory. Tried to allocate 2.00 GiB",
                                     "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                                     "allocate memory: you tried to allocate 160000000000 bytes.",
                                     "MPS backend out of memory"])
def test_out_of_memory_is_recognised_on_every_device_and_names_what_to_lower(wording):
    from omnigen.errors import user_message
    from omnigen.settings import GenerationSettings

    message = user_message(RuntimeError(wording), GenerationSettings(width=512, height=512), 1, None)
    assert message.startswith("Out of memory. Lower the output size (now 512x512)") and "alloc" not in message


@pytest.mark.slow
def test_the_history_indexes_and_the_browser_key_are_never_served(served):
    import urllib.error
    import urllib.request

    studio = served["studio"]
    secret = Path(studio.history.private) / "browser-secret"
    studio.history.secret()
    served_copy = Path(studio.output_dir) / "served.png"
    Image.new("RGB", (8, 8)).save(served_copy)
    base = served["url"].rstrip("/") + "/gradio_api/file="
    assert urllib.request.urlopen(base + str(served_copy), timeout=30).status == 200  # the folder is served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + str(secret), timeout=30)
    assert refused.value.code in (403, 404) and secret.is_file()
