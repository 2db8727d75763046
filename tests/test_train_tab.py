"""The Train tab's parts without a browser: datasets from rows and uploads, run events -> what the page shows,
page settings -> TrainConfig, runs that stop and resume on the tiny model, and the rule that generation and
training never share the pipeline at once."""

import json
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest
from PIL import Image

from app import train_data, train_runs, train_settings, train_tab
from app.engine import FailedEvent, GenerationJob, job_events
from app.jobs import LiveState, PipelineBusy, PipelineUse
from omnigen.settings import GenerationSettings
from app.main import studio_tabs
from omnigen.training import DatasetError


@pytest.fixture
def pictures(tmp_path) -> list[Path]:
    paths = []
    for k, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        paths.append(tmp_path / f"pic{k}.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    return paths


# ----------------------------------------------------------------------------- rows and uploads


def test_a_row_is_checked_before_its_pictures_are_copied(pictures, tmp_path):
    with pytest.raises(DatasetError) as caught:
        train_data.check_row("<img><|image_1|></img> make it blue", [], str(pictures[0]))
    assert "image_1" in "; ".join(caught.value.problems) and "row 1" not in "; ".join(caught.value.problems)
    with pytest.raises(DatasetError, match="no output image"):
        train_data.check_row("a red square", [], None)

    train_data.check_row("<img><|image_1|></img> make it blue", [str(pictures[0])], str(pictures[2]))
    row = train_data.stored_row(" <img><|image_1|></img> make it blue ", [str(pictures[0])], str(pictures[2]),
                                tmp_path)
    assert row[0] == "<img><|image_1|></img> make it blue"
    assert Path(row[1][0]).parent == tmp_path and Path(row[2]).read_bytes() == pictures[2].read_bytes()
    assert train_data.gallery_items([row]) == [(row[2], "1. <img><|image_1|></img> make it blue [+1 input image]")]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_a_jsonl_upload_finds_its_images_by_file_name(pictures, tmp_path):
    jsonl = write_jsonl(tmp_path / "data.jsonl", [
        {"instruction": "a red square", "output_image": "images/pic0.png"},
        {"instruction": "<img><|image_1|></img> make it blue", "input_images": ["in/pic1.png"],
         "output_image": "images/pic2.png"}])
    folder = tmp_path / "kept"
    folder.mkdir()
    rows = train_data.rows_from_upload([str(jsonl), *map(str, pictures)], folder)
    assert [r[0] for r in rows] == ["a red square", "<img><|image_1|></img> make it blue"]
    assert rows[1][1] == [str(folder / "pic1.png")] and rows[1][2] == str(folder / "pic2.png")


def test_upload_problems_name_the_line_and_not_the_server_path(pictures, tmp_path):
    jsonl = write_jsonl(tmp_path / "data.jsonl", [
        {"instruction": "a red square", "output_image": "pic0.png"}, "{not json",
        {"instruction": "a blue square", "output_image": "missing.png"}])
    folder = tmp_path / "kept"
    folder.mkdir()
    with pytest.raises(DatasetError) as caught:
        train_data.rows_from_upload([str(jsonl), str(pictures[0])], folder)
    message = train_data.problems_message(caught.value)
    assert "2 problem(s)" in message and "data.jsonl:2:" in message and "data.jsonl:3:" in message
    assert "missing.png" in message and str(folder) not in message.split("looked for")[0]


def test_a_zip_of_images_and_texts_becomes_rows(pictures, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for k, picture in enumerate(pictures):
            zipped.write(picture, f"set/{picture.name}")
            zipped.writestr(f"set/{picture.stem}.txt", f"a square number {k}\n")
    folder = tmp_path / "kept"
    folder.mkdir()
    rows = train_data.rows_from_upload([str(archive)], folder)
    assert [r[0] for r in rows] == ["a square number 0", "a square number 1", "a square number 2"]
    assert all(r[1] == [] and Path(r[2]).is_file() and Path(r[2]).is_relative_to(folder) for r in rows)


def test_a_zip_that_writes_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../escaped.txt", "x")
    folder = tmp_path / "kept"
    folder.mkdir()
    with pytest.raises(DatasetError, match="outside the archive"):
        train_data.rows_from_upload([str(archive)], folder)
    assert not (tmp_path / "escaped.txt").exists()


def test_the_example_dataset_is_sixteen_rectangles_in_the_output_folder(tmp_path):
    rows = train_data.example_rows(tmp_path)
    assert len(rows) == 16 and all("rectangle" in r[0] for r in rows)
    assert all(Path(r[2]).is_file() and Path(r[2]).is_relative_to(tmp_path) for r in rows)
    assert train_data.example_rows(tmp_path) == rows  # written once, then read


def test_the_committed_example_is_what_the_mini_world_writes(tmp_path):
    """The studio reads assets/examples/lora-rectangle only; omnigen.mini.lora_example wrote it, and would write
    the very same files again (python -m omnigen.mini.lora_example)."""
    from omnigen.mini.lora_example import write_studio_example

    written = write_studio_example(tmp_path)
    committed = train_data.EXAMPLE_DIR
    names = sorted(str(p.relative_to(committed)) for p in committed.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file())
    assert all((committed / name).read_bytes() == (written / name).read_bytes() for name in names)
    assert train_data.example_config().lora.name == "rectangle"


# ----------------------------------------------------------------------------- what the page shows


def test_events_become_plot_rows_progress_samples_and_the_adapter():
    view = train_runs.TrainingView(total=10, name="rect")
    view.apply({"type": "step", "step": 1, "loss": 0.5, "lr": 1e-3, "eta_s": 90.0, "elapsed_s": 10.0})
    view.apply({"type": "step", "step": 2, "loss": 0.25, "lr": 1e-3, "eta_s": 80.0, "elapsed_s": 20.0})
    assert train_runs.progress_text(view) == ("Training `rect`: step 2 of 10 (20%) · loss 0.2500 · 20 s so far · "
                                             "about 1 min 20 s left")
    frame = train_runs.loss_frame(view.losses)
    assert frame["step"].tolist() == [1, 2] and frame["loss"].tolist() == [0.5, 0.25]
    assert str(frame["step"].dtype) == "int64" and train_runs.loss_frame([]).empty
    view.apply({"type": "checkpoint", "step": 2, "path": "c", "adapter": "/runs/rect/adapter"})
    view.apply({"type": "samples", "step": 2, "paths": ["a.png", "b.png"], "prompts": ["p1", "p2"]})
    assert view.samples == [("a.png", "p1"), ("b.png", "p2")] and view.sample_step == 2
    view.apply({"type": "done", "step": 3, "stopped": True, "checkpoint": "c3", "adapter": "/runs/rect/adapter"})
    text = train_runs.progress_text(view)
    assert text.startswith("Stopped at step 3 of 10") and "adapter (step 3) is ready" in text
    chinese = train_runs.progress_text(view, "zh-CN")
    assert chinese.startswith("停在第 3 步（共 10 步）") and "适配器（第 3 步）已就绪" in chinese
    view.finished, view.stopping = False, True
    assert train_runs.progress_text(view, "zh-CN").startswith("正在训练 `rect`：第 3 步，共 10 步（30%）")


def test_page_settings_become_a_lora_train_config(tmp_path, studio):
    values = train_tab.example_settings(studio)
    config = train_settings.page_config(values, tmp_path / "run", resume=False)
    assert (config.steps, config.batch_size, config.learning_rate) == (150, 16, 1e-3)
    assert (config.lora.rank, config.lora.alpha, config.lora.targets, config.lora.name) == (
        16, None, "attention+mlp", "rectangle")
    assert config.resolution == 64 and len(config.validation_prompts) == 5
    assert config.condition_dropout == 0.0 and config.encode_latents_once and config.log_every == 1
    with pytest.raises(ValueError, match="multiple of 16"):
        train_settings.page_config({**values, "resolution": 50}, tmp_path / "run", resume=False)
    with pytest.raises(ValueError, match="Steps must be a whole number"):
        train_settings.page_config({**values, "steps": 2.5}, tmp_path / "run", resume=False)
    assert config.max_grad_norm == 1.0  # clipped, as TrainConfig's default; 0 switches clipping off
    assert train_settings.page_config({**values, "max_grad_norm": 0}, tmp_path / "run", resume=False
                                      ).max_grad_norm == 0.0
    with pytest.raises(ValueError, match="Max gradient norm \\(0: no clipping\\) needs a number"):
        train_settings.page_config({**values, "max_grad_norm": None}, tmp_path / "run", resume=False)
    with pytest.raises(ValueError, match="max_grad_norm must be at least 0"):
        train_settings.page_config({**values, "max_grad_norm": -1}, tmp_path / "run", resume=False)


def test_adapter_names_are_safe_for_folders_and_peft():
    assert train_settings.adapter_name("  my cat/v2.1 ") == "my_cat_v2_1"
    with pytest.raises(ValueError, match="Give the adapter a name"):
        train_settings.adapter_name(" ./ ")


# ----------------------------------------------------------------------------- runs on the tiny model


def tiny_settings(steps: int) -> dict:
    return dict(name="tiny", rank=4, alpha=0, learning_rate=1e-3, steps=steps, batch_size=2, resolution=32,
                targets="attention", validation_prompts="a red square", sample_every=0, condition_dropout=0.0,
                sample_guidance_scale=1.0, gradient_checkpointing=False, max_grad_norm=1.0)


def run_to_end(studio, rows, settings, resume=False, stop_at=None):
    dataset, config = train_runs.prepare_run(studio, rows, settings, resume)
    run = studio.live.claim_training("session", config.lora.name)
    view = train_runs.TrainingView(config.steps, config.lora.name)
    try:
        for event in train_runs.training_events(studio, dataset, config, run):
            assert event["type"] != "failed", event
            view.apply(event)
            if stop_at is not None and view.step >= stop_at:
                run.stop.set()
    finally:
        studio.live.release_training(run)
    return view, Path(config.out_dir)


@pytest.mark.slow
def test_a_stopped_run_keeps_its_adapter_and_resume_continues_it(studio, pictures):
    rows = [["a red square", [], str(pictures[0])], ["a blue square", [], str(pictures[2])]]
    view, run_dir = run_to_end(studio, rows, tiny_settings(6), stop_at=2)
    assert view.finished and view.stopped and view.step < 6
    assert Path(view.adapter) == run_dir / "adapter" and (run_dir / "adapter" / "adapter_config.json").is_file()
    assert train_runs.newest_run_folder(studio.output_dir, "tiny") == run_dir
    assert studio.pipe.loras == {} and studio.live.use.exclusive is None  # the pipeline is given back as it was

    resumed, resumed_dir = run_to_end(studio, rows, tiny_settings(6), resume=True)
    assert resumed_dir == run_dir and resumed.finished and not resumed.stopped and resumed.step == 6
    assert resumed.losses[0][0] == view.step + 1 and len(resumed.samples) == 1  # it went on, then sampled
    with pytest.raises(Exception, match="already reached step 6"):
        train_runs.prepare_run(studio, rows, tiny_settings(6), resume=True)

    path, name = train_runs.run_of_adapter(studio, str(run_dir / "adapter"))
    studio.pipe.load_lora(path, name=name, scale=0.5)
    try:
        assert "`tiny` at strength 0.5" in train_tab.loaded_text(studio)
    finally:
        studio.pipe.unload_lora()
    with pytest.raises(ValueError, match="No trained adapter"):
        train_runs.run_of_adapter(studio, str(Path(__file__).parent))


def test_bad_rows_are_listed_by_row_before_anything_runs(studio, pictures):
    rows = [["a red square", [], str(pictures[0])], ["", [], str(pictures[1])], ["a cat", [], "/nowhere/cat.png"]]
    with pytest.raises(Exception) as caught:
        train_runs.prepare_run(studio, rows, tiny_settings(3), resume=False)
    message = str(caught.value)
    assert "2 problem(s)" in message and "row 2: the instruction must be non-empty" in message
    assert "row 3: output image '/nowhere/cat.png' not found" in message and "Traceback" not in message
    assert not (studio.output_dir / train_runs.RUNS).exists()


def test_one_training_at_a_time():
    live = LiveState()
    run = live.claim_training("a", "first")
    try:
        with pytest.raises(PipelineBusy, match="already running"):
            live.claim_training("b", "second")
        assert "another page" in live.stop_training("b") and not run.stop.is_set()
        assert "Stopping `first`" in live.stop_training("a") and run.stop.is_set()
    finally:
        live.release_training(run)
    live.release_training(live.claim_training("b", "second"))


# ----------------------------------------------------------------------------- generation and training


def test_the_pipeline_is_shared_by_generations_or_held_by_one_training():
    use = PipelineUse()
    with use.generating(), use.generating():
        with pytest.raises(PipelineBusy, match="2 generation"):
            with use.exclusively("training"):
                pass
    with use.exclusively("training the LoRA 'x'"):
        with pytest.raises(PipelineBusy, match="busy training the LoRA 'x'"):
            with use.generating():
                pass
    with use.generating():  # both released
        assert use.generations == 1


def test_a_generation_during_a_training_is_refused_with_a_message(studio):
    job = GenerationJob("a red square", [], GenerationSettings(height=32, width=32, num_inference_steps=1, seed=0))
    with studio.live.use.exclusively("training the LoRA 'x'"):
        events = list(job_events(job))
    assert len(events) == 1 and isinstance(events[0], FailedEvent)
    assert "busy training the LoRA 'x'" in events[0].message
    assert studio.live.use.generations == 0


def test_the_train_tab_is_on_by_default_and_can_be_switched_off(monkeypatch):
    monkeypatch.delenv(train_tab.DISABLE_ENV, raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert studio_tabs(Namespace(no_train=False)) == [train_tab.build_train_tab]
    assert studio_tabs(Namespace(no_train=True)) == []
    monkeypatch.setenv(train_tab.DISABLE_ENV, "1")
    extra = lambda studio: None  # noqa: E731
    assert studio_tabs(Namespace(no_train=False), [extra]) == [extra]


def test_the_train_tab_is_off_on_a_space_unless_asked_for(monkeypatch):
    monkeypatch.delenv(train_tab.DISABLE_ENV, raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/omnigen-studio")
    assert studio_tabs(Namespace(no_train=False)) == []
    monkeypatch.setenv(train_tab.DISABLE_ENV, "0")
    assert studio_tabs(Namespace(no_train=False)) == [train_tab.build_train_tab]
