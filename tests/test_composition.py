"""Saved compositions (omnigen/composition.py): one zip of prompt, pictures, settings, adapters and preset that
loads back to the same request; every member checked, and a forged or escaping zip refused with nothing written."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from omnigen.composition import MANIFEST, Composition, CompositionError, generate, load_composition, save_composition
from omnigen.settings import GenerationSettings

PROMPT = "<img><|image_1|></img> make the red circle green"


@pytest.fixture
def saved(tmp_path):
    picture = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(picture)
    settings = GenerationSettings(seed=5, num_inference_steps=3, guidance_scale=2.0, use_input_image_size_as_output=1,
                                  height=64, width=64)
    path = save_composition(tmp_path / "scene.omnigen.zip", Composition(PROMPT, [picture], settings, {"style": 0.5},
                                                                        "edit"))
    return path, picture, settings


def rewrite(path, change) -> None:
    """Rewrite the zip with change(members) applied: {name: bytes}."""
    with zipfile.ZipFile(path) as zipped:
        members = {name: zipped.read(name) for name in zipped.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)


def edit_manifest(path, **changes) -> None:
    def change(members):
        manifest = json.loads(members[MANIFEST])
        manifest.update(changes)
        members[MANIFEST] = json.dumps(manifest).encode()

    rewrite(path, change)


def test_a_composition_loads_back_whole_with_its_pictures_exact(saved):
    path, picture, settings = saved
    loaded = load_composition(path)
    assert (loaded.prompt, loaded.settings, loaded.adapters, loaded.preset) == (PROMPT, settings, {"style": 0.5},
                                                                               "edit")
    assert np.array_equal(np.asarray(loaded.images[0]), np.asarray(Image.open(picture)))
    with zipfile.ZipFile(path) as zipped:
        assert sorted(zipped.namelist()) == [MANIFEST, "images/1.png"]
        assert zipped.read("images/1.png") == picture.read_bytes()  # the picture's own bytes


def test_a_prompt_without_its_pictures_is_not_saved(tmp_path):
    with pytest.raises(CompositionError, match=r"uses image\(s\) \[1\] but holds 0 picture"):
        save_composition(tmp_path / "c.zip", Composition(PROMPT))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "images/../../evil.png", "C:/evil.png",
                                  "..\\evil.png"])
def test_an_escaping_member_is_refused(saved, name):
    path = saved[0]
    rewrite(path, lambda members: members.__setitem__(name, b"x"))
    with pytest.raises(CompositionError, match="would land outside its folder"):
        load_composition(path)


@pytest.mark.parametrize("changes, message", [
    (dict(format="something-else"), "is not a composition manifest"),
    (dict(version=99), "composition version 99"),
    (dict(prompt=3), "prompt is missing or not text"),
    (dict(images=[{"file": "../scene.png", "sha256": "0"}]), "name files outside images/"),
    (dict(images="images/1.png"), "images must be a list"),
    (dict(settings={"num_inference_steps": -4}), "num_inference_steps must be between 1 and 1000"),
    (dict(settings={"exec": "rm -rf /"}), r"unknown setting\(s\) exec"),
    (dict(adapters={"style": "loud"}), "adapters must map names to strengths"),
    (dict(prompt="no picture used"), r"the prompt uses image\(s\) none but holds 1 picture"),
    (dict(run="code"), r"unknown field\(s\) run"),
])
def test_a_forged_manifest_is_refused_with_what_is_wrong(saved, changes, message):
    path = saved[0]
    edit_manifest(path, **changes)
    with pytest.raises(CompositionError, match=message):
        load_composition(path)


def test_a_changed_picture_an_unnamed_member_or_a_missing_one_is_refused(saved, tmp_path):
    path = saved[0]
    other = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(other, format="PNG")
    rewrite(path, lambda members: members.__setitem__("images/1.png", other.getvalue()))
    with pytest.raises(CompositionError, match="does not match its checksum"):
        load_composition(path)
    edit_manifest(path, images=[{"file": "images/1.png", "sha256": hashlib.sha256(other.getvalue()).hexdigest()}])
    rewrite(path, lambda members: members.__setitem__("images/2.png", other.getvalue()))
    with pytest.raises(CompositionError, match=r"holds files its manifest does not name \(images/2.png\)"):
        load_composition(path)
    rewrite(path, lambda members: (members.pop("images/2.png"), members.pop("images/1.png")))
    with pytest.raises(CompositionError, match="names images/1.png, which the zip does not hold"):
        load_composition(path)
    (tmp_path / "not.zip").write_bytes(b"PK not really")
    with pytest.raises(CompositionError, match="not a readable zip file"):
        load_composition(tmp_path / "not.zip")


@pytest.mark.slow  # builds the tiny model
def test_generate_runs_the_request_and_names_a_missing_adapter(tiny_pipe, saved):
    path, picture, settings = saved
    loaded = load_composition(path)
    with pytest.raises(CompositionError, match=r"uses the adapter\(s\) style: load them first"):
        generate(tiny_pipe, loaded)
    loaded.adapters = {}
    out = generate(tiny_pipe, loaded)
    direct = tiny_pipe(PROMPT, [Image.open(picture)], settings)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(direct.images[0]))
    assert out.settings[0] == {**direct.settings[0], "preset": "edit"}
