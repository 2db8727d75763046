"""The studio's file handling apart from the page: adapter uploads (app/adapters.py), settings read from a picture
(omnigen/png.py, as the studio reads an uploaded one) and each browser's history on disk (app/history.py)."""

import json
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, PngImagePlugin

from app.adapters import AdapterSourceError, hub_adapter, server_adapter, staged_upload
from app.history import HistoryStore, flat_items, gallery_value, lookup, new_browser_id, new_entry
from omnigen.png import NoSettings, picture_settings, save_png
from omnigen.settings import GenerationSettings


# ----------------------------------------------------------------------------- adapter uploads


def adapter_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path


def test_a_zip_of_an_adapter_folder_unpacks_its_two_files(tmp_path):
    archive = make_zip(tmp_path / "style.zip", {"style/adapter_config.json": b"{}",
                                                "style/adapter_model.safetensors": b"w", "style/README.md": b"hi"})
    folder = staged_upload([str(archive)], tmp_path / "scratch")
    assert folder.name == "style"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_the_two_files_uploaded_together_make_a_folder(tmp_path):
    source = adapter_files(tmp_path / "upload")
    folder = staged_upload([str(source / "adapter_model.safetensors"), str(source / "adapter_config.json")],
                           tmp_path / "scratch")
    assert (folder / "adapter_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("members, words", [
    ({"../evil/adapter_config.json": b"{}", "../evil/adapter_model.safetensors": b"w"}, "outside the adapter's folder"),
    ({"/etc/adapter_config.json": b"{}", "/etc/adapter_model.safetensors": b"w"}, "outside the adapter's folder"),
    ({"notes.txt": b"hello"}, "is not a LoRA adapter"),
    ({"adapter_config.json": b"{}", "adapter_model.bin": b"pickle"}, "pickle file"),
    ({"a/adapter_config.json": b"{}", "a/adapter_model.safetensors": b"w", "b/adapter_config.json": b"{}",
      "b/adapter_model.safetensors": b"w"}, "several adapters"),
])
def test_a_zip_that_is_not_one_adapter_is_refused_before_anything_is_written(tmp_path, members, words):
    archive = make_zip(tmp_path / "bad.zip", members)
    with pytest.raises(AdapterSourceError, match=words):
        staged_upload([str(archive)], tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "evil").exists()


def test_uploads_that_are_not_an_adapter_say_what_one_is(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(AdapterSourceError, match="not a readable zip"):
        staged_upload([str(junk)], tmp_path / "s1")
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"png")
    with pytest.raises(AdapterSourceError, match="one adapter_model.safetensors and one adapter_config.json"):
        staged_upload([str(picture)], tmp_path / "s2")
    with pytest.raises(AdapterSourceError, match="choose the adapter"):
        staged_upload([], tmp_path / "s3")


def test_a_hub_id_offline_and_a_bad_id_are_sentences():
    with pytest.raises(AdapterSourceError, match="cannot reach the Hugging Face Hub"):
        hub_adapter("someone/omnigen-style-lora")
    with pytest.raises(AdapterSourceError, match="is not a Hugging Face Hub id"):
        hub_adapter("../../etc")


def test_server_folders_only_where_the_host_allows(tmp_path, monkeypatch):
    folder = adapter_files(tmp_path / "lora")
    with pytest.raises(AdapterSourceError, match="--allow-server-adapters"):
        server_adapter(str(folder), allowed=False)
    assert server_adapter(str(folder / "adapter_model.safetensors"), allowed=True) == folder
    from app.adapters import server_adapters_allowed

    assert server_adapters_allowed(True)
    monkeypatch.setenv("SPACE_ID", "someone/space")
    assert not server_adapters_allowed(True)


# ----------------------------------------------------------------------------- settings from a picture


def record() -> dict:
    settings = GenerationSettings(height=64, width=48, num_inference_steps=3, seed=7, sampler="heun")
    return dict(settings.to_kwargs(), prompt="a red square", num_input_images=2, model="m", device="cpu",
                dtype="float32", loras={"style": 0.5}, offload=None)


def png_with_text(path: Path, text: str, compressed: bool = False) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("omnigen", text, zip=compressed)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_a_record_gives_its_settings_prompt_inputs_and_adapters(tmp_path):
    path = save_png(Image.new("RGB", (48, 64)), tmp_path / "a.png", record())
    found = picture_settings(path, max_side=1024)
    assert found.settings["sampler"] == "heun" and found.settings["seed"] == 7 and found.settings["width"] == 48
    assert found.prompt == "a red square" and found.num_input_images == 2 and found.loras == {"style": 0.5}
    assert found.ignored == []


def test_forged_values_are_ignored_one_by_one_and_named(tmp_path):
    forged = dict(record(), num_inference_steps="3; rm -rf /", guidance_scale=1e9, width=50, sampler="magic",
                  seed=-1, prompt=["not", "text"], num_input_images=99, evil_key=1, loras="all")
    found = picture_settings(png_with_text(tmp_path / "f.png", json.dumps(forged)), max_side=1024)
    ignored = " ".join(found.ignored)
    for name in ("num_inference_steps", "guidance_scale", "width", "sampler", "seed", "prompt", "num_input_images",
                 "evil_key", "loras"):
        assert name in ignored
    assert found.settings["height"] == 64 and "width" not in found.settings and found.prompt is None


def test_settings_missing_from_a_record_take_the_page_defaults_in_the_joint_check(tmp_path):
    path = png_with_text(tmp_path / "s.png", json.dumps({"seed": 77, "prompt": "p"}))
    small = GenerationSettings(height=512, width=512)
    assert picture_settings(path, max_side=512, base=small).settings == {"seed": 77}


def test_settings_that_conflict_together_are_dropped(tmp_path):
    forged = dict(record(), guidance_start=0.9, guidance_end=0.2, height=4096)
    found = picture_settings(png_with_text(tmp_path / "c.png", json.dumps(forged)), max_side=1024)
    assert found.settings["seed"] == 7 and found.settings["sampler"] == "heun"
    assert "guidance_start" not in found.settings and "height" not in found.settings
    GenerationSettings.from_record(found.settings).check(1024)


@pytest.mark.parametrize("make, words", [
    (lambda p: png_with_text(p, json.dumps({"prompt": "x" * 200_000})), "refused unread"),
    (lambda p: png_with_text(p, json.dumps({"prompt": "x" * 5_000_000}), compressed=True), "inflate to more"),
    (lambda p: png_with_text(p, "{not json"), "not valid JSON"),
    (lambda p: png_with_text(p, "[1, 2]"), "not an object"),
    (lambda p: png_with_text(p, "[" * 20_000 + "]" * 20_000), "not valid JSON"),
    (lambda p: Image.new("RGB", (8, 8)).save(p) or p, "carries no OmniGen settings"),
    (lambda p: (p.write_bytes(b"GIF89a..."), p)[1], "not a PNG"),
])
def test_pictures_without_usable_settings_say_why(tmp_path, make, words):
    path = make(tmp_path / "x.png")
    with pytest.raises(NoSettings, match=words):
        picture_settings(path)


def test_a_compressed_record_is_read(tmp_path):
    found = picture_settings(png_with_text(tmp_path / "z.png", json.dumps(record()), compressed=True))
    assert found.settings["num_inference_steps"] == 3
    assert zlib  # the chunk above is zlib-compressed by PIL


# ----------------------------------------------------------------------------- each browser's history


def done_event(tmp_path: Path, name: str):
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (8, 8)).save(path)
    return SimpleNamespace(before=None, images=[SimpleNamespace(path=str(path), settings={"seed": 1})])


def test_history_is_per_browser_newest_first_and_capped(tmp_path):
    store = HistoryStore(tmp_path, limit=2)
    me, other = new_browser_id(), new_browser_id()
    upload = tmp_path / "upload.png"
    Image.new("RGB", (4, 4), (9, 9, 9)).save(upload)
    first = new_entry(store, me, "edit", "one", [str(upload)], {}, done_event(tmp_path, "r1"))
    store.add(me, first)
    assert Path(first["images"][0]).parent == store.inputs_folder(me)  # kept past the upload cache
    for n in (2, 3):
        store.add(me, new_entry(store, me, "", f"run {n}", [], {}, done_event(tmp_path, f"r{n}")))
    assert [e["prompt"] for e in store.entries(me)] == ["run 3", "run 2"]
    assert not (tmp_path / "r1.png").exists() and not Path(first["images"][0]).exists()  # past the cap: gone
    assert store.entries(other) == [] and store.entries("../../etc/passwd") == []
    assert HistoryStore(tmp_path, limit=2).entries(me)[0]["prompt"] == "run 3"  # a restart reads it back


def test_deleting_an_entry_removes_its_files_only(tmp_path):
    store = HistoryStore(tmp_path)
    me = new_browser_id()
    a = store.add(me, new_entry(store, me, "", "a", [], {}, done_event(tmp_path, "a")))[0]
    store.add(me, new_entry(store, me, "", "b", [], {}, done_event(tmp_path, "b")))
    entries = store.delete(me, a["id"])
    assert [e["prompt"] for e in entries] == ["b"]
    assert not (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()
    assert gallery_value(entries)[0][0] == str(tmp_path / "b.png")
    assert lookup(entries, list(flat_items(entries)[0]))[0]["prompt"] == "b"
    assert lookup(entries, [a["id"], 0]) is None


def test_a_damaged_index_line_costs_that_entry_only(tmp_path):
    store = HistoryStore(tmp_path)
    me = new_browser_id()
    store.add(me, new_entry(store, me, "", "kept", [], {}, done_event(tmp_path, "k")))
    with open(store.index(me), "a") as index:
        index.write("{broken\n")
    assert [e["prompt"] for e in store.entries(me)] == ["kept"]
