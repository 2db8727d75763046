"""omnigen/png.py: the record a picture carries and its inverse, the copy-as-Python snippet that names the model
without the server's paths."""

from pathlib import Path

import pytest
from PIL import Image

from omnigen.png import model_argument, python_snippet, read_settings, reproduce_kwargs, save_png
from omnigen.settings import DEFAULT_MODEL, GenerationSettings


def record(**changes) -> dict:
    base = dict(GenerationSettings(seed=3, height=64, width=96).as_dict(), prompt="a red circle",
                num_input_images=0, model=str(DEFAULT_MODEL), device="cpu", dtype="float32", loras={}, offload=None)
    return {**base, **changes}


@pytest.mark.parametrize("model,shown", [
    (str(DEFAULT_MODEL), ""), (None, ""), ("Shitao/OmniGen-v1", "'Shitao/OmniGen-v1', "),
    ("/srv/models/my-omnigen", "'PATH/TO/my-omnigen', "), ("~/models/x", "'PATH/TO/x', ")])
def test_the_snippet_names_the_embedded_model_by_nothing_and_a_folder_by_its_name(model, shown):
    assert model_argument(model) == shown
    code = python_snippet(record(model=model))
    assert f"OmniGenPipeline.from_pretrained({shown}device='cpu', dtype='float32')" in code
    assert "/srv/" not in code and str(DEFAULT_MODEL) not in code


def test_a_local_folder_given_by_a_relative_path_is_shown_by_its_name(tmp_path, monkeypatch):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_argument("models/mine") == "'PATH/TO/mine', "


def test_the_record_comes_back_and_the_snippet_asks_for_the_same_settings(tmp_path):
    saved = save_png(Image.new("RGB", (96, 64)), tmp_path / "a.png", record(use_input_image_size_as_output=False))
    again = read_settings(saved)
    assert again == record(use_input_image_size_as_output=False)
    kwargs = reproduce_kwargs(again)
    assert kwargs["seed"] == 3 and (kwargs["height"], kwargs["width"]) == (64, 96)
    assert "use_input_image_size_as_output" not in kwargs and "num_images_per_prompt" not in kwargs
    code = python_snippet(again)
    compile(code, "snippet", "exec")
    assert "seed=3," in code and "'a red circle'," in code and Path(code.splitlines()[0]).name == "from PIL import Image"
