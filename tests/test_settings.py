"""The generation settings type: one source of every default and range, checked before any work, read from a
model folder, round-tripped through the PNG record; and the same request giving the same PNG file from the
CLI, from Python and from the studio's API."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omnigen.cli import main as cli_main
from omnigen.pipeline import DEFAULT_MODEL, OmniGenPipeline
from omnigen.png import read_settings, save_png
from omnigen.settings import (GENERATION_CONFIG, OMNIGEN_V1_NEGATIVE_PROMPT, GenerationSettings, Limits,
                              model_defaults, parse_value, setting_fields)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- the type itself


def test_defaults_are_the_official_omnigen_v1_ones():
    s = GenerationSettings()
    assert (s.height, s.width, s.num_inference_steps, s.guidance_scale, s.img_guidance_scale) == (1024, 1024, 50,
                                                                                                    3.0, 1.6)
    assert s.max_input_image_size == 1024 and s.negative_prompt == OMNIGEN_V1_NEGATIVE_PROMPT
    assert s.negative_prompt.startswith("low quality, jpeg artifacts") and s.use_img_guidance


@pytest.mark.parametrize("change, words", [
    (dict(height=0), "height must be at least 16"),
    (dict(width=100), "width 100 is not a multiple of 16; use 96 or 112"),
    (dict(num_inference_steps=0), "num_inference_steps must be between 1 and 1000"),
    (dict(num_inference_steps=2.5), "num_inference_steps must be a whole number"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
    (dict(img_guidance_scale=-1.0), "img_guidance_scale must be between 0.0 and 100.0"),
    (dict(cfg_mode="parallel"), "cfg_mode must be one of batched, separate"),
    (dict(use_kv_cache="yes"), "use_kv_cache must be true or false"),
    (dict(seed=-3), "seed must be between 0"),
    (dict(time_shift=0.0), "time_shift must be between"),
    (dict(negative_prompt=None), "negative_prompt must be text"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt must be between 1 and 64"),
])
def test_every_bad_value_is_refused_naming_the_setting(change, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        GenerationSettings().replace(**change).check()


def test_an_unknown_setting_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown setting.*steps; the settings are height, width"):
        GenerationSettings().replace(steps=3)


def test_a_size_beyond_the_position_table_is_refused_before_anything_is_allocated():
    with pytest.raises(ValueError, match="larger than this model can draw \\(512 pixels"):
        GenerationSettings(height=100_000 // 16 * 16).check(max_side=512)


def test_the_official_boolean_output_size_means_image_1():
    assert GenerationSettings(use_input_image_size_as_output=True).use_input_image_size_as_output == 1
    assert GenerationSettings(use_input_image_size_as_output=False).use_input_image_size_as_output == 0


def test_values_from_forms_and_queries_are_parsed_and_checked():
    assert parse_value("num_inference_steps", "30") == 30 and parse_value("num_inference_steps", 30.0) == 30
    assert parse_value("use_kv_cache", "false") is False and parse_value("seed", "") is None
    with pytest.raises(ValueError, match="must be a whole number"):
        parse_value("height", "64.5")
    with pytest.raises(ValueError, match="guidance_scale must be a number"):
        parse_value("guidance_scale", "strong")


def test_every_setting_documents_itself():
    for spec in setting_fields():
        assert spec.metadata["label"] and spec.metadata["help"], spec.name


def test_settings_round_trip_through_the_png_record(tmp_path):
    settings = GenerationSettings(height=48, width=80, num_inference_steps=7, guidance_scale=3.0, seed=5,
                                  use_input_image_size_as_output=2, cfg_mode="separate", use_img_guidance=False)
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", {**settings.as_dict(), "prompt": "p"})
    assert GenerationSettings.from_record(read_settings(path)) == settings


# ----------------------------------------------------------------------------- a model's own defaults


def test_a_folder_without_defaults_gets_the_official_ones_and_its_native_size(tiny_model_dir):
    defaults = model_defaults(tiny_model_dir, 64)
    assert defaults.negative_prompt == OMNIGEN_V1_NEGATIVE_PROMPT and (defaults.height, defaults.width) == (64, 64)


def test_a_folder_that_states_defaults_has_them_used(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / GENERATION_CONFIG).write_text(json.dumps({"negative_prompt": "blurry", "num_inference_steps": 12,
                                                        "guidance_scale": 3.0, "seed": 7}))
    pipe = OmniGenPipeline.from_pretrained(folder, device="cpu")
    s = pipe.default_settings
    assert (s.negative_prompt, s.num_inference_steps, s.guidance_scale) == ("blurry", 12, 3.0)
    assert s.seed is None  # a seed is not a model's to choose
    out = pipe("a red circle", seed=0, height=32, width=32, num_inference_steps=1, progress=False)
    assert out.settings[0]["negative_prompt"] == "blurry"
    (folder / GENERATION_CONFIG).write_text(json.dumps({"num_inference_steps": 0}))
    with pytest.raises(ValueError, match="stated generation default is not valid: num_inference_steps"):
        OmniGenPipeline.from_pretrained(folder, device="cpu")


def test_the_embedded_model_keeps_the_negative_prompt_it_was_trained_with():
    stated = json.loads((DEFAULT_MODEL / GENERATION_CONFIG).read_text())["negative_prompt"]
    assert model_defaults(DEFAULT_MODEL, 64).negative_prompt == stated != OMNIGEN_V1_NEGATIVE_PROMPT


def test_only_generation_config_states_defaults(tiny_model_dir, tmp_path):
    """config.json's keys are the architecture's: a generation default there is not read (the recipe states
    the embedded model's in generation_config.json, its inputs at the native size included)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_input_image_size": 64,
                                                    "default_num_inference_steps": 7}))
    defaults = model_defaults(folder, 64)
    assert (defaults.max_input_image_size, defaults.num_inference_steps) == (1024, 50)
    assert model_defaults(DEFAULT_MODEL, 64).max_input_image_size == 64


# ----------------------------------------------------------------------------- one request, one PNG


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 512x512 picture with one large circle: far above the embedded model's input size."""
    yy, xx = np.mgrid[:512, :512]
    pixels = np.full((512, 512, 3), 255, np.uint8)
    pixels[(yy - 256) ** 2 + (xx - 256) ** 2 < 150 ** 2] = (220, 30, 30)
    path = tmp_path_factory.mktemp("photo") / "circle.png"
    Image.fromarray(pixels).save(path)
    return path


REQUESTS = {
    "text_to_image": ("a large red circle at the top left on a white background", []),
    "edit": ("<img><|image_1|></img> make the red circle blue", ["photo"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_the_cli_python_and_the_studio_api_write_the_same_png(kind, photo, tmp_path):
    from gradio_client import Client, handle_file

    from studio_support import serve_studio

    prompt, images = REQUESTS[kind]
    images = [str(photo) for _ in images]
    size_flag = ["--use-input-image-size-as-output"] if images else []

    cli_png = tmp_path / "cli.png"
    args = ["generate", "--prompt", prompt, "--seed", "3", "--out", str(cli_png), "--device", "cpu", *size_flag]
    assert cli_main(args + [a for path in images for a in ("--image", path)]) == 0

    pipe = OmniGenPipeline.from_pretrained(device="cpu")
    changes = dict(use_input_image_size_as_output=True) if images else {}
    python_png = pipe(prompt, [Image.open(p) for p in images] or None, seed=3, progress=False,
                      **changes).save(tmp_path / "python.png")

    with serve_studio(DEFAULT_MODEL, tmp_path / "studio") as served:
        client = Client(served["url"], verbose=False)
        files = {f"image_{k}": handle_file(p) for k, p in enumerate(images, start=1)}
        gallery, _ = client.predict(prompt, seed=3, use_input_image_size_as_output=1 if images else 0,
                                    api_name="/generate", **files)
    api_png = Path(gallery[0]["image"])

    record = read_settings(cli_png)
    assert record["num_inference_steps"] == pipe.default_settings.num_inference_steps  # the model's defaults
    assert record["max_input_image_size"] == 64 and (record["width"], record["height"]) == (64, 64)
    assert cli_png.read_bytes() == python_png.read_bytes() == api_png.read_bytes()


def test_height_and_width_are_not_checked_where_the_output_takes_an_input_images_size():
    unused = GenerationSettings(use_input_image_size_as_output=1, height=1000, width=5000)
    assert unused.check(max_side=1024) is unused
    Limits(max_image_side=1024).check("p", unused, 1)
    with pytest.raises(ValueError, match="height 1000 is not a multiple of 16"):
        unused.replace(use_input_image_size_as_output=0).check()
    with pytest.raises(ValueError, match="output size"):
        Limits(max_image_side=1024).check("p", unused.replace(use_input_image_size_as_output=0, height=1024))



def test_a_folder_may_say_what_its_prompts_may_ask(tiny_model_dir, tmp_path):
    import shutil

    from omnigen.settings import PROMPT_GUIDE, read_prompt_guide

    assert read_prompt_guide(tiny_model_dir) == {} and read_prompt_guide(None) == {}
    assert set(read_prompt_guide(DEFAULT_MODEL)) == {"en", "zh-CN"}
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / PROMPT_GUIDE).write_text(json.dumps({"en": "shapes only"}))
    assert OmniGenPipeline.from_pretrained(folder, device="cpu").prompt_guide == {"en": "shapes only"}
    for bad in ("[1, 2]", '{"en": 3}', "{not json", json.dumps({"en": "x" * 5000})):
        (folder / PROMPT_GUIDE).write_text(bad)
        with pytest.raises(ValueError, match="prompt_guide.json"):
            read_prompt_guide(folder)
