"""LoRA training on a tiny model: only the adapter learns, the pipeline lent to the run comes back unchanged,
stop keeps a loadable adapter, resume continues exactly, samples are written, and bad data of every input
kind is refused, by row, before anything is loaded."""

import json
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from omnigen import OmniGenPipeline
from omnigen.lora import add_lora, lora_scales, save_lora
from omnigen.training import (DatasetError, Example, ImageFolderDataset, LoraSettings, RowsDataset, TrainConfig,
                              open_training_data, read_loss_log, train_lora)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED, BLUE, GREEN = (230, 30, 30), (20, 40, 200), (60, 190, 70)


def square(color, background=(255, 255, 255)) -> Image.Image:
    picture = Image.new("RGB", (64, 64), background)
    picture.paste(color, (16, 16, 48, 48))
    return picture


def studio_rows() -> list:
    """Rows as the studio passes them: (instruction, [input images], target), PIL images here."""
    return [("a red square", [], square(RED)), ("a blue square", [], square(BLUE)),
            ("<img><|image_1|></img> make the red square green", [square(RED)], square(GREEN))]


@pytest.fixture(scope="module")
def pipe(tiny_model_dir) -> OmniGenPipeline:
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def config(out_dir: Path, **overrides) -> TrainConfig:
    settings = dict(out_dir=str(out_dir), steps=4, batch_size=2, learning_rate=1e-2, checkpoint_every=2, seed=3,
                    condition_dropout=0.2, image_condition_dropout=0.5, edit_weighting=True,
                    lora=LoraSettings(rank=4, targets="attention+mlp"))
    return TrainConfig(**{**settings, **overrides})


def generate(pipe) -> torch.Tensor:
    return pipe("a red square", num_inference_steps=2, seed=0, output_type="latent", progress=False).images[0]


def pipeline_state(pipe) -> dict:
    transformer = pipe.transformer
    return {"weights": {k: v.clone() for k, v in transformer.state_dict().items()},
            "modules": [(n, type(m).__name__) for n, m in transformer.named_modules()],
            "requires_grad": [p.requires_grad for p in transformer.parameters()],
            "training": (transformer.training, pipe.vae.training), "loras": dict(pipe.loras),
            "checkpointing": transformer.gradient_checkpointing, "latent": generate(pipe)}


def assert_same_pipeline(before: dict, after: dict) -> None:
    assert after["weights"].keys() == before["weights"].keys()
    for key, tensor in before["weights"].items():
        assert torch.equal(after["weights"][key], tensor), f"{key} changed"
    for key in ("modules", "requires_grad", "training", "loras", "checkpointing"):
        assert after[key] == before[key], key
    assert torch.equal(after["latent"], before["latent"])


def test_lora_trains_only_the_adapter_and_gives_the_pipeline_back_unchanged(pipe, tmp_path):
    before = pipeline_state(pipe)
    events = []
    result = train_lora(pipe, studio_rows(), config(tmp_path / "run", validation_prompts=["a red square", "a blue "
                                                    "square"], sample_every=2, sample_steps=2), callback=events.append)

    assert_same_pipeline(before, pipeline_state(pipe))  # base weights bit-identical, no adapter left behind
    assert result.step == 4 and not result.stopped and result.adapter == tmp_path / "run" / "adapter"
    weights = load_file(str(result.adapter / "adapter_model.safetensors"))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    assert any("gate_up_proj" in k for k in weights)  # attention+mlp
    assert all(w.abs().sum() > 0 for k, w in weights.items() if ".lora_B." in k)  # B starts at 0: it learned
    adapter_config = json.loads((result.adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["base_model_name_or_path"] == pipe.model_id

    kinds = [e["type"] for e in events]
    assert kinds == ["step", "step", "checkpoint", "samples", "step", "step", "checkpoint", "samples", "done"]
    assert all(e["eta_s"] >= 0 and "loss" in e and "lr" in e for e in events if e["type"] == "step")
    assert events[2]["adapter"] == str(result.adapter)
    samples = [e for e in events if e["type"] == "samples"]
    assert samples[0]["prompts"] == ["a red square", "a blue square"]
    assert samples[0]["paths"] == [str(tmp_path / "run" / "samples" / f"step-000002-{k}.png") for k in (0, 1)]
    assert all(Image.open(p).size == (64, 64) for e in samples for p in e["paths"])
    assert [p.name for p in result.samples] == ["step-000004-0.png", "step-000004-1.png"]

    # The finished adapter loads on the pipeline and changes what it draws; unloading restores it.
    name = pipe.load_lora(result.adapter)
    assert not torch.equal(generate(pipe), before["latent"])
    pipe.unload_lora(name)
    assert torch.equal(generate(pipe), before["latent"])


def test_adapters_already_on_the_pipeline_sit_out_the_run_and_come_back(pipe, tmp_path):
    add_lora(pipe.transformer, "style", rank=2)
    with torch.no_grad():
        for layer_name, param in pipe.transformer.named_parameters():
            if ".lora_B." in layer_name:
                param.normal_(0, 0.3)
    save_lora(pipe.transformer, tmp_path / "style")
    pipe.unload_lora("style")
    pipe.load_lora(tmp_path / "style", scale=0.5)
    pipe.merge_lora()
    try:
        before = pipeline_state(pipe)
        result = train_lora(pipe, studio_rows(), config(tmp_path / "run", steps=1, checkpoint_every=0))
        after = pipeline_state(pipe)
        for key in ("modules", "requires_grad", "training", "loras", "checkpointing"):
            assert after[key] == before[key], key
        assert torch.allclose(after["latent"], before["latent"], atol=1e-5)  # merged again, up to float rounding
        assert lora_scales(pipe.transformer) == {"style": 0.5}
        assert result.adapter.is_dir()
    finally:
        pipe.unload_lora()


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_stop_keeps_a_loadable_adapter_and_resume_continues_at_the_same_step(pipe, tmp_path):
    whole = train_lora(pipe, studio_rows(), config(tmp_path / "whole", steps=6, checkpoint_every=3))

    stop, seen = threading.Event(), []

    def on_event(event):
        seen.append(event["type"])
        if event["type"] == "step" and event["step"] == 2:
            stop.set()

    split = tmp_path / "split"
    first = train_lora(pipe, studio_rows(), config(split, steps=6, checkpoint_every=3), callback=on_event, stop=stop)
    assert first.stopped and first.step == 2 and seen == ["step", "step", "checkpoint", "done"]
    assert first.checkpoint.name == "step-000002" and first.adapter == split / "adapter"
    stopped_adapter = adapter_weights(first.adapter)
    assert stopped_adapter.keys() == adapter_weights(first.checkpoint).keys()
    name = pipe.load_lora(first.adapter)  # the adapter kept at the stop loads
    pipe.unload_lora(name)

    rest = train_lora(pipe, studio_rows(), config(split, steps=6, checkpoint_every=3, resume=True))
    assert rest.step == 6 and [step for step, _ in rest.losses] == [3, 4, 5, 6]
    expected = {row["step"]: row["loss"] for row in read_loss_log(tmp_path / "whole" / "loss.csv")}
    resumed = {row["step"]: row["loss"] for row in read_loss_log(split / "loss.csv")}
    assert sorted(resumed) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), f"step {step}"
    final = adapter_weights(whole.adapter)
    for key, tensor in final.items():
        assert torch.allclose(adapter_weights(rest.adapter)[key], tensor, atol=1e-6), key
    assert any(not torch.equal(stopped_adapter[key], tensor) for key, tensor in final.items())


def test_a_run_folder_is_neither_overwritten_nor_resumed_with_other_settings(pipe, tmp_path):
    train_lora(pipe, studio_rows(), config(tmp_path / "run", steps=1, checkpoint_every=0))
    with pytest.raises(ValueError, match="resume=True"):
        train_lora(pipe, studio_rows(), config(tmp_path / "run", steps=1, checkpoint_every=0))
    with pytest.raises(ValueError, match="trained a LoRA of rank 4, alpha 4, targets qkv_proj.*asks for a LoRA of "
                                         "rank 8"):
        train_lora(pipe, studio_rows(), config(tmp_path / "run", steps=2, resume=True, lora=LoraSettings(rank=8)))


# ----------------------------------------------------------------------------- the three kinds of data


def test_jsonl_with_a_missing_image_is_refused_with_its_line_before_the_model_loads(tmp_path):
    square(RED).save(tmp_path / "red.png")
    lines = [{"instruction": "a red square", "output_image": "red.png"},
             {"instruction": "a blue square", "output_image": "blue.png"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(DatasetError) as caught:  # the model folder does not exist: the data is checked first
        train_lora(tmp_path / "no-model", tmp_path / "data.jsonl", config(tmp_path / "run"))
    assert caught.value.problems == [f"{tmp_path / 'data.jsonl'}:2: output image 'blue.png' not found "
                                     f"(looked for {str(tmp_path / 'blue.png')!r})"]
    assert not (tmp_path / "run").exists()


def test_an_image_folder_is_checked_file_by_file(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    square(RED).save(folder / "red.png")
    (folder / "red.txt").write_text("a red square\n")
    square(BLUE).save(folder / "blue.bmp")
    (folder / "blue.txt").write_text("a blue square")
    square(GREEN).save(folder / "green.png")  # no green.txt
    (folder / "empty.txt").write_text("  ")
    square(GREEN).save(folder / "empty.png")
    (folder / "orphan.txt").write_text("a yellow square")  # no orphan image
    (folder / "tagged.txt").write_text("<img><|image_1|></img> make it red")
    square(RED).save(folder / "tagged.png")

    with pytest.raises(DatasetError) as caught:
        train_lora(tmp_path / "no-model", folder, config(tmp_path / "run"))
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == [str(folder / name) for name in (
        "empty.png", "green.png", "tagged.png", "orphan.txt")]
    assert "empty.txt is empty" in problems[0] and "add green.txt" in problems[1]
    assert "refers to input images" in problems[2] and "no image named orphan.png" in problems[3]

    for name in ("green.png", "empty.txt", "empty.png", "orphan.txt", "tagged.txt", "tagged.png"):
        (folder / name).unlink()
    dataset = open_training_data(folder)
    assert isinstance(dataset, ImageFolderDataset) and len(dataset.validate()) == 2
    assert [(e.instruction, e.input_images, e.output_image.getpixel((32, 32))) for e in dataset] == [
        ("a blue square", [], BLUE), ("a red square", [], RED)]


def test_studio_rows_are_checked_row_by_row(tmp_path):
    square(RED).save(tmp_path / "red.png")
    rows = [("a red square", [], tmp_path / "red.png"),  # 1: good (a path)
            ("<img><|image_1|></img> make it blue", [str(tmp_path / "missing.png")], square(BLUE)),  # 2
            ("", [], square(RED)),  # 3: no instruction
            ("<img><|image_1|></img> make it blue", [], square(BLUE)),  # 4: a tag without its image
            ("a blue square", [], None),  # 5: no target
            ("a blue square", square(RED), square(BLUE)),  # 6: inputs not a list
            {"instruction": "<img><|image_1|></img> make it blue", "input_images": ["red.png"],
             "output_image": square(BLUE)}]  # 7: good (relative to image_root, as a dict)
    with pytest.raises(DatasetError) as caught:
        train_lora(tmp_path / "no-model", rows, config(tmp_path / "run"), image_root=tmp_path)
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == ["row 2", "row 3", "row 4", "row 5", "row 6"]
    assert "input image 1" in problems[0] and "missing.png' not found" in problems[0]
    assert "instruction must be non-empty" in problems[1] and "<|image_1|>" in problems[2]
    assert "no output image" in problems[3] and "must be a list" in problems[4]
    assert "row 2: input image 1" in str(caught.value)

    good = RowsDataset([rows[0], rows[6]], image_root=tmp_path).validate()
    first, second = good[0], good[1]
    assert isinstance(first, Example) and first.output_image.getpixel((32, 32)) == RED
    assert second.input_images[0].getpixel((32, 32)) == RED and second.output_image.getpixel((32, 32)) == BLUE


def test_settings_that_cannot_work_are_refused_before_loading(tmp_path):
    for lora, message in ((LoraSettings(rank=0), "rank"), (LoraSettings(targets="everything"), "targets"),
                          (LoraSettings(dropout=1.0), "dropout")):
        with pytest.raises(ValueError, match=message):
            train_lora(tmp_path / "no-model", studio_rows(), config(tmp_path / "run", lora=lora))
    with pytest.raises(ValueError, match="validation_prompts"):
        train_lora(tmp_path / "no-model", studio_rows(), config(tmp_path / "run", validation_prompts=[""]))


def test_a_model_folder_trains_too(tiny_model_dir, tmp_path):
    result = train_lora(tiny_model_dir, studio_rows(), config(tmp_path / "run", steps=1, checkpoint_every=0))
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")
    pipe.load_lora(result.adapter)
    assert list(pipe.loras) == ["adapter"]
    # Unless told otherwise, the run trains the unconditional branch its model's sampling runs.
    trained = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert trained["unconditional_prompt"] == pipe.default_settings.negative_prompt
    assert trained["resolution"] == pipe.default_settings.max_input_image_size


def test_gradient_checkpointing_trains_the_adapter_identically(pipe, tmp_path):
    plain = train_lora(pipe, studio_rows(), config(tmp_path / "plain", steps=3, checkpoint_every=0))
    saving = train_lora(pipe, studio_rows(), config(tmp_path / "checkpointed", steps=3, checkpoint_every=0,
                                                    gradient_checkpointing=True))
    assert [loss for _, loss in saving.losses] == pytest.approx([loss for _, loss in plain.losses], rel=1e-5)
    for key, tensor in adapter_weights(plain.adapter).items():
        assert torch.allclose(adapter_weights(saving.adapter)[key], tensor, atol=1e-6), key
    assert not pipe.transformer.gradient_checkpointing
