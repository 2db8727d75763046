"""The training library on a tiny model: the loss falls, resume is exact, bad data is refused up front."""

import json
import random
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_TOKENIZER
from omnigen.model import OmniGen, OmniGenConfig
from omnigen.processor import OmniGenProcessor, image_to_tensor
from omnigen.settings import GenerationSettings
from omnigen.training import (DatasetError, Example, JsonlDataset, TrainConfig, TrainingCollator, edit_weight_map,
                              prepare_model, read_loss_log, train)
from omnigen.training.collator import FULL, IMAGE_ONLY, UNCONDITIONAL
from omnigen.training.config import resolution_at
from omnigen.training.latents import LatentCache
from omnigen.training.step import training_loss
from omnigen.vae import load_vae
from omnigen.weights import load_transformer, save_transformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RED, BLUE, GREEN, YELLOW = (230, 30, 30), (20, 40, 200), (60, 190, 70), (240, 220, 30)


def square(color, size=(64, 64), background=(255, 255, 255)) -> Image.Image:
    picture = Image.new("RGB", size, background)
    width, height = size
    picture.paste(color, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    return picture


def examples() -> list[Example]:
    return [Example("a red square", [], square(RED)), Example("a blue square", [], square(BLUE)),
            Example("a green square", [], square(GREEN)), Example("a yellow square", [], square(YELLOW)),
            Example("<img><|image_1|></img> make the square blue", [square(RED)], square(BLUE))]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model folder: the tests' 300-token BPE tokenizer, a 2-layer 64-wide OmniGen as initialised for
    training, a factor-8 VAE."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("tiny-train-model")
    for file in TINY_TOKENIZER.iterdir():
        shutil.copyfile(file, root / file.name)
    torch.manual_seed(0)
    model = OmniGen.from_config(OmniGenConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=128, vocab_size=300, pad_token_id=3,
                                              pos_embed_max_size=16, native_image_size=64))
    save_transformer(model, root)
    # scaling_factor 2 gives latents of std ~0.5: the target is neither pure noise nor dominated by the data.
    vae = AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=64, scaling_factor=2.0)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def processor(model_dir) -> OmniGenProcessor:
    return OmniGenProcessor.from_pretrained(model_dir, max_input_image_size=64)


@pytest.fixture(scope="module")
def vae(model_dir):
    return load_vae(model_dir)


def small_config(out_dir: Path, **overrides) -> TrainConfig:
    settings = dict(out_dir=str(out_dir), steps=6, batch_size=2, learning_rate=3e-3, warmup_steps=2,
                    lr_schedule="cosine", grad_accumulation=2, condition_dropout=0.3, image_condition_dropout=0.5,
                    edit_weighting=True, checkpoint_every=3, seed=7)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_loss_of_tiny_model_falls_by_half(model_dir, vae, processor, tmp_path, precision):
    config = TrainConfig(out_dir=str(tmp_path / "run"), steps=100, batch_size=4, learning_rate=3e-3, warmup_steps=10,
                         condition_dropout=0.0, image_condition_dropout=0.0, checkpoint_every=0,
                         encode_latents_once=True, mixed_precision=precision)
    model = load_transformer(model_dir)
    result = train(model, vae, processor, examples(), config)

    losses = [loss for _, loss in result.losses]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
    rows = read_loss_log(tmp_path / "run" / "loss.csv")
    assert [row["step"] for row in rows] == list(range(1, 101))
    assert rows[0]["lr"] == pytest.approx(3e-4) and rows[-1]["lr"] == pytest.approx(3e-3)
    # The final checkpoint is a loadable transformer holding the trained weights.
    assert result.checkpoint.name == "step-000100" and not result.stopped
    trained = load_transformer(result.checkpoint)
    assert torch.equal(trained.final_layer.linear.weight, model.final_layer.linear.weight)
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # bf16 is the matmuls', not the weights'
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def run_losses(out_dir: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_loss_log(out_dir / "loss.csv")}


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["list", "generator"])
def test_stop_then_resume_continues_like_an_uninterrupted_run(model_dir, vae, processor, tmp_path, streamed):
    def data():
        if not streamed:
            return examples()
        # An endless generator drawing from the global RNG, seeded anew by each "script run".
        random.seed(5)
        return (random.choice(examples()) for _ in iter(int, 1))

    whole = train(load_transformer(model_dir), vae, processor, data(), small_config(tmp_path / "whole"))
    assert whole.step == 6 and sorted(c.name for c in (tmp_path / "whole" / "checkpoints").iterdir()) == [
        "step-000003", "step-000006"]

    stop, events = threading.Event(), []

    def on_event(event):
        events.append(event)
        if event["type"] == "step" and event["step"] == 2:
            stop.set()

    first = train(load_transformer(model_dir), vae, processor, data(), small_config(tmp_path / "split"),
                  callback=on_event, stop=stop)
    assert first.stopped and first.step == 2 and first.checkpoint.name == "step-000002"
    assert [e["type"] for e in events] == ["step", "step", "checkpoint", "done"]
    assert events[0]["eta_s"] > 0 and events[-1]["stopped"]

    rest = train(load_transformer(model_dir), vae, processor, data(), small_config(tmp_path / "split"), resume=True)
    assert rest.step == 6 and not rest.stopped and [step for step, _ in rest.losses] == [3, 4, 5, 6]
    expected, resumed = run_losses(tmp_path / "whole"), run_losses(tmp_path / "split")
    assert sorted(resumed) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), f"step {step}"


def test_a_fresh_run_refuses_an_out_dir_with_checkpoints(model_dir, vae, processor, tmp_path):
    config = small_config(tmp_path / "run", steps=1, grad_accumulation=1)
    train(load_transformer(model_dir), vae, processor, examples(), config)
    with pytest.raises(ValueError, match="resume=True"):
        train(load_transformer(model_dir), vae, processor, examples(), config)


def write_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    square(RED).save(root / "images" / "red.png")
    square(BLUE).save(root / "images" / "blue.png")
    (root / "images" / "broken.png").write_bytes(b"not a png at all")
    lines = [
        {"instruction": "a red square", "output_image": "images/red.png"},  # 1: good
        "",  # 2: blank, ignored
        '{"instruction": "a blue square", "output_image": ',  # 3: malformed JSON
        {"instruction": "a blue square", "input_images": None, "output_image": "images/missing.png"},  # 4
        {"instruction": "<img><|image_1|></img> make it blue", "input_images": [],
         "output_image": "images/blue.png"},  # 5: a tag without its image
        {"instruction": "a blue square"},  # 6: no output image
        {"instruction": "a blue square", "input_images": "images/red.png", "output_image": "images/blue.png"},  # 7
        {"instruction": "a blue square", "output_image": "images/broken.png"},  # 8: unreadable
        {"instruction": "<img><|image_1|></img> make it blue", "input_images": ["images/red.png"],
         "output_image": "images/blue.png"},  # 9: good
    ]
    path = root / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_validator_reports_every_bad_line_and_training_does_not_start(model_dir, vae, processor, tmp_path):
    path = write_dataset(tmp_path / "data")
    with pytest.raises(DatasetError) as caught:
        JsonlDataset(path).validate()
    problems = caught.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8)]
    assert "malformed JSON" in problems[0] and "missing.png' not found" in problems[1]
    assert "<|image_1|>" in problems[2] and 'missing key "output_image"' in problems[3]
    assert '"input_images" must be a list' in problems[4] and "not a readable image" in problems[5]
    assert f"{path}:3: malformed JSON" in str(caught.value)

    out_dir = tmp_path / "run"
    with pytest.raises(DatasetError):
        train(load_transformer(model_dir), vae, processor, JsonlDataset(path), small_config(out_dir))
    assert not out_dir.exists()


def test_a_valid_jsonl_dataset_trains(model_dir, vae, processor, tmp_path):
    path = write_dataset(tmp_path / "data")
    good = [line for n, line in enumerate(path.read_text().splitlines(), 1) if n in (1, 2, 9)]
    path.write_text("\n".join(good) + "\n")
    dataset = JsonlDataset(path).validate()
    assert len(dataset) == 2
    edit = dataset[1]
    assert edit.input_images[0].getpixel((32, 32)) == RED and edit.output_image.getpixel((32, 32)) == BLUE
    result = train(load_transformer(model_dir), vae, processor, dataset,
                   small_config(tmp_path / "run", steps=2, encode_latents_once=True))
    assert result.step == 2 and (tmp_path / "run" / "checkpoints" / "step-000002" / "model.safetensors").is_file()


def test_edit_weighting_ignores_unchanged_pairs_and_favours_changed_positions():
    base = torch.randn(4, 8, 8)
    assert torch.equal(edit_weight_map(base, base.clone()), torch.zeros(8, 8))
    edited = base.clone()
    edited[:, 2:4, 2:4] += 1.0  # 4 of 64 positions change
    weights = edit_weight_map(base, edited, threshold=0.1, amplification=4.0)
    assert weights.mean().item() == pytest.approx(1.0)
    changed = torch.zeros(8, 8, dtype=torch.bool)
    changed[2:4, 2:4] = True
    assert torch.allclose(weights[changed], weights[changed][0])
    assert torch.allclose(weights[~changed], weights[~changed][0])
    assert weights[changed][0] == pytest.approx(5 * weights[~changed][0])


def test_timestep_location_moves_training_towards_noise(model_dir, vae, processor, monkeypatch):
    from omnigen.training import loss as loss_module

    times = {location: loss_module.sample_timesteps(20000, torch.Generator().manual_seed(0), location)
             for location in (0.0, -1.0)}
    assert times[0.0].median().item() == pytest.approx(0.5, abs=0.01)
    assert times[-1.0].median().item() == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item(), abs=0.01)
    high_noise = {location: (t < 0.2).float().mean().item() for location, t in times.items()}
    assert high_noise[0.0] == pytest.approx(0.083, abs=0.01) and high_noise[-1.0] == pytest.approx(0.35, abs=0.015)

    seen = []
    original = loss_module.sample_timesteps
    monkeypatch.setattr(loss_module, "sample_timesteps", lambda n, g=None, location=0.0: seen.append(location)
                        or original(n, g, location))
    collator = TrainingCollator(processor)
    batch = collator(examples()[:2], 64, random.Random(0), example_keys=[0, 1])
    for location in (0.0, -1.5):
        training_loss(load_transformer(model_dir), vae, batch, small_config(Path("unused"), timestep_location=location),
                      torch.Generator().manual_seed(0), None, 64, torch.device("cpu"))
    assert seen == [0.0, -1.5]
    for wrong in (float("nan"), 9.0, "low"):
        with pytest.raises(ValueError, match="timestep_location"):
            small_config(Path("unused"), timestep_location=wrong).check()


def test_an_unchanged_edit_contributes_no_loss(model_dir, vae, processor):
    collator = TrainingCollator(processor)
    batch = collator([Example("<img><|image_1|></img> keep it", [square(RED)], square(RED))], 64, random.Random(0))
    assert batch.edit_inputs == [0]
    model = load_transformer(model_dir)
    for weighting, zero in ((True, True), (False, False)):
        config = TrainConfig(out_dir="unused", edit_weighting=weighting)
        loss = training_loss(model, vae, batch, config, torch.Generator().manual_seed(0), None, 64, torch.device("cpu"))
        assert (loss.item() == 0.0) == zero


def test_collator_trains_the_branches_the_sampler_uses(processor):
    edit = Example("<img><|image_1|></img> make the square blue", [square(RED)], square(BLUE))
    # The negative prompt sampling uses by default (a model's own, else the library's): the collator's default.
    negative = GenerationSettings().negative_prompt
    branches = processor("<img><|image_1|></img> make the square blue", [square(RED)], height=64, width=64,
                         negative_prompt=negative)[0]

    def first_prompt_ids(collator):
        batch = collator([edit], 64, random.Random(0))
        return batch, batch.model_inputs["input_ids"][0].tolist()

    batch, ids = first_prompt_ids(TrainingCollator(processor))
    assert batch.branches == [FULL] and ids == branches.cond.input_ids and len(batch.input_images) == 1
    batch, ids = first_prompt_ids(TrainingCollator(processor, condition_dropout=1.0))
    assert batch.branches == [UNCONDITIONAL] and ids == branches.uncond.input_ids and batch.input_images == []
    batch, ids = first_prompt_ids(TrainingCollator(processor, image_condition_dropout=1.0))
    assert batch.branches == [IMAGE_ONLY] and ids == branches.img_cond.input_ids
    assert torch.equal(batch.input_images[0][0], image_to_tensor(square(RED)))


def test_collator_gives_one_output_size_per_batch(processor):
    wide = Example("<img><|image_1|></img> make the square blue", [square(RED, (96, 64))], square(BLUE, (96, 64)))
    batch = TrainingCollator(processor)([Example("a red square", [], square(RED)), wide], 64, random.Random(0))
    assert batch.output_images.shape == (2, 3, 64, 64)
    # The edit's input had its output's size, so it was refitted with it and the pair stays aligned.
    assert batch.input_images[0].shape == (1, 3, 64, 64) and batch.edit_inputs == [None, 0]
    assert batch.model_inputs["attention_mask"].shape[-1] == batch.model_inputs["condition_length"] + 1 + 16


def test_progressive_resolution_stages(model_dir, vae, processor, tmp_path):
    stages = [(0, 32), (2, 64)]
    assert [resolution_at(stages, step) for step in range(4)] == [32, 32, 64, 64]
    cache = LatentCache()
    cache.start_stage(vae, examples(), 32)
    assert {latent.shape for latent in cache.latents.values()} == {(4, 4, 4)}
    result = train(load_transformer(model_dir), vae, processor, examples(),
                   small_config(tmp_path / "run", steps=3, resolution_stages=stages, encode_latents_once=True))
    assert result.step == 3


def test_latent_cache_is_kept_on_disk_for_the_same_vae_and_data_only(model_dir, vae, tmp_path):
    import copy

    folder = tmp_path / "latent-cache"
    first = LatentCache(folder)
    first.start_stage(vae, examples(), 32)
    assert first.loaded_from is None and (folder / "stage-32.pt").is_file()
    again = LatentCache(folder)
    again.start_stage(vae, examples(), 32)
    assert again.loaded_from == folder / "stage-32.pt"
    assert again.latents.keys() == first.latents.keys()
    assert all(torch.equal(again.latents[key], first.latents[key]) for key in first.latents)
    changed = examples()
    changed[2] = Example("a green square", [], square(BLUE))  # same text and size, other pixels
    other_data = LatentCache(folder)
    other_data.start_stage(vae, changed, 32)
    assert other_data.loaded_from is None
    assert not torch.equal(other_data.latents[(2, -1, 32, 32, 32)], first.latents[(2, -1, 32, 32, 32)])
    other_decoder = copy.deepcopy(vae)
    with torch.no_grad():
        other_decoder.decoder.conv_out.weight.add_(0.01)  # decoder fine-tuning leaves the latents as they were
    same = LatentCache(folder)
    same.start_stage(other_decoder, changed, 32)
    assert same.loaded_from == folder / "stage-32.pt"
    other_encoder = copy.deepcopy(vae)
    with torch.no_grad():
        other_encoder.encoder.conv_in.weight.add_(0.01)
    fresh = LatentCache(folder)
    fresh.start_stage(other_encoder, changed, 32)
    assert fresh.loaded_from is None
    other_scale = copy.deepcopy(other_encoder)  # the file now holds other_encoder's latents; only the scale differs
    other_scale.register_to_config(scaling_factor=vae.config.scaling_factor * 2)
    rescaled = LatentCache(folder)
    rescaled.start_stage(other_scale, changed, 32)
    assert rescaled.loaded_from is None
    (folder / "stage-32.pt").write_bytes(b"not a cache")  # a damaged file is encoded again, not an error
    damaged = LatentCache(folder)
    damaged.start_stage(vae, examples(), 32)
    assert damaged.loaded_from is None
    repaired = LatentCache(folder)  # and the damaged file was replaced by a good one
    repaired.start_stage(vae, examples(), 32)
    assert repaired.loaded_from == folder / "stage-32.pt"


def test_resumed_run_reads_its_latents_back(model_dir, vae, processor, tmp_path):
    events = []
    config = small_config(tmp_path / "run", steps=2, encode_latents_once=True, checkpoint_every=2)
    train(load_transformer(model_dir), vae, processor, examples(), config, callback=events.append)
    config.steps = 3
    train(load_transformer(model_dir), vae, processor, examples(), config, callback=events.append, resume=True)
    latents = [event for event in events if event["type"] == "latents"]
    assert [event["loaded_from"] is None for event in latents] == [True, False]
    assert latents[1]["count"] == latents[0]["count"] == 6


def test_length_grouped_batches_cover_each_epoch_once_with_like_lengths():
    from omnigen.training.data_order import DataOrder

    lengths = [16 + 96 * (i % 9 == 0) + i % 5 for i in range(1000)]  # one long (few-shot-like) example in nine
    order = DataOrder(len(lengths), 8, seed=3, lengths=lengths)
    per_epoch = len(lengths) // 8
    for epoch in range(2):
        batches = [order.indices(g) for g in range(epoch * per_epoch, (epoch + 1) * per_epoch)]
        seen = [i for batch in batches for i in batch]
        assert len(seen) == len(set(seen)) == per_epoch * 8  # nobody twice in an epoch, only the remainder waits
        padded = sum(8 * max(lengths[i] for i in batch) for batch in batches)
        assert padded < 1.2 * sum(lengths[i] for i in seen)  # little padding left
    ungrouped = DataOrder(len(lengths), 8, seed=3)
    padded = sum(8 * max(lengths[i] for i in ungrouped.indices(g)) for g in range(per_epoch))
    assert padded > 2 * sum(lengths)  # nearly every random batch waits for a long example
    again = DataOrder(len(lengths), 8, seed=3, lengths=lengths)
    assert [again.indices(g) for g in (0, 200, 5)] == [order.indices(g) for g in (0, 200, 5)]  # any g, any order


def test_the_optimizer_is_fused_adamw_with_decay_on_matrices_only(tmp_path):
    from omnigen.training.optimizer import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = build_optimizer(list(model.parameters()), small_config(tmp_path, weight_decay=0.05))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["fused"] for group in optimizer.param_groups] == [True, True]
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]
    assert [len(group["params"]) for group in optimizer.param_groups] == [1, 3]


def test_a_max_grad_norm_of_0_does_not_clip(model_dir, vae, processor, tmp_path):
    """One optimizer step of the tiny model, whose gradients' norm is far above 1e-9: clipping to 1e-9 shrinks
    them below AdamW's eps and the update with them; 0 updates the weights exactly as a norm no gradient reaches
    does (clip_grad_norm_ then scales by 1), so 0 leaves the gradients as they are."""
    start = torch.cat([p.flatten() for p in load_transformer(model_dir).parameters()])

    def trained(max_grad_norm: float) -> torch.Tensor:
        model = load_transformer(model_dir)
        config = small_config(tmp_path / f"run-{max_grad_norm:g}", steps=1, grad_accumulation=1, checkpoint_every=0,
                              max_grad_norm=max_grad_norm)
        train(model, vae, processor, examples(), config)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    unclipped, unreachable, clipped = trained(0.0), trained(1e9), trained(1e-9)
    assert torch.equal(unclipped, unreachable)
    moved = {name: (weights - start).abs().sum().item()
             for name, weights in (("unclipped", unclipped), ("clipped", clipped))}
    assert moved["unclipped"] > 0 and moved["clipped"] < 0.5 * moved["unclipped"], moved


def test_gradient_checkpointing_keeps_less_for_backward_and_gives_the_same_gradients(model_dir):
    """The training setting switches the model's checkpointing; what autograd keeps for backward shrinks to the
    layers' inputs (benchmarks/bench_fsdp.py checkpointing measures it on the embedded model) and the gradients
    stay the same to the bit."""
    model = load_transformer(model_dir)
    generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=generator), torch.rand(2, generator=generator)
    ids = torch.randint(10, 200, (2, 12), generator=generator)
    kept, grads = {}, {}
    for enabled in (False, True):
        prepare_model(model, TrainConfig(out_dir="unused", gradient_checkpointing=enabled))
        assert model.gradient_checkpointing is enabled
        model.zero_grad(set_to_none=True)
        storages: dict[int, int] = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = model(x, t, input_ids=ids)[0].pow(2).mean()
        loss.backward()
        kept[enabled] = sum(storages.values())
        grads[enabled] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert kept[True] < 0.5 * kept[False], kept
    assert grads[True].keys() == grads[False].keys() and grads[True]
    assert all(torch.equal(grads[True][n], grads[False][n]) for n in grads[True])
