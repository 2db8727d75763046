"""LoRA adapters on a tiny random transformer: save/load, scales, several adapters, merging, refusal of
adapters for other models, official peft adapters, unloading, clean checkpoints, pipeline settings."""

import json
import shutil

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from torch import nn

from omnigen.lora import (ATTENTION_TARGETS, MLP_TARGETS, LoraAdapterError, active_lora_scales, add_lora,
                          adapter_state_dict, disable_lora, enable_lora, is_lora_merged, load_lora, load_lora_weights,
                          lora_scales, merge_lora, save_lora, set_lora_scales, unload_lora, unmerge_lora)
from omnigen.model import OmniGen, OmniGenConfig
from omnigen.weights import load_transformer, save_transformer

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=320, pad_token_id=3, pos_embed_max_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0, **overrides) -> OmniGen:
    torch.manual_seed(seed)
    model = OmniGen.from_config(OmniGenConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # random everywhere: the zero-initialised output layer would hide every difference
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval().requires_grad_(False)


def velocity(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, ids = torch.randn(2, 4, 8, 8, generator=g), torch.randint(4, 300, (2, 6), generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([0.3, 0.7]), ids)[0]


def randomize_adapter(model, name: str, seed: int) -> None:
    """Non-zero lora_B (a fresh adapter's is 0), so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in adapter_state_dict(model, name).items():
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.2)


def make_adapter(folder, seed: int, rank: int = 4, alpha=None, targets=ATTENTION_TARGETS, **model_overrides):
    """Train-free stand-in for a trained adapter: (folder, the velocity of base + adapter)."""
    model = tiny_model(**model_overrides)
    add_lora(model, "trained", rank=rank, alpha=alpha, targets=targets)
    randomize_adapter(model, "trained", seed)
    return save_lora(model, folder), velocity(model)


def official_adapter(folder, rank: int = 8, **model_overrides):
    """An adapter as the official OmniGen fine-tuning script makes one: peft around the official module tree."""
    peft_model = get_peft_model(tiny_model(**model_overrides), LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["qkv_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft_model.save_pretrained(folder)
    return folder, velocity(peft_model)


@pytest.fixture(scope="module")
def style(tmp_path_factory):
    """A saved adapter on attention and MLP layers, and the output it gives."""
    return make_adapter(tmp_path_factory.mktemp("loras") / "style", seed=1, targets=ATTENTION_TARGETS + MLP_TARGETS)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("loras") / "sketch", seed=2, rank=2, alpha=6)


def snapshot(model) -> dict:
    """Everything a refused load must leave alone."""
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "types": {n: type(m) for n, m in model.named_modules()},
            "adapters": {n: {k: v.clone() for k, v in adapter_state_dict(model, n).items()}
                         for n in lora_scales(model)},
            "scales": lora_scales(model), "velocity": velocity(model)}


def assert_same(a: dict, b: dict) -> None:
    assert a["types"] == b["types"] and a["scales"] == b["scales"]
    assert a["state"].keys() == b["state"].keys() and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    for name in a["adapters"]:
        assert all(torch.equal(a["adapters"][name][k], b["adapters"][name][k]) for k in a["adapters"][name])
    assert torch.equal(a["velocity"], b["velocity"])


def test_save_then_load_gives_the_same_outputs(style):
    folder, expected = style
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 4
    assert sorted(config["target_modules"]) == sorted(ATTENTION_TARGETS + MLP_TARGETS)
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys, base = set(f.keys()), json.loads(f.metadata()["omnigen_base_model"])
    assert "base_model.model.llm.layers.0.self_attn.qkv_proj.lora_A.weight" in keys
    assert "base_model.model.llm.layers.1.mlp.down_proj.lora_B.weight" in keys and len(keys) == 2 * 2 * 4
    assert base["hidden_size"] == 64 and base["num_hidden_layers"] == 2 and base["vocab_size"] == 320

    model = tiny_model()
    plain = velocity(model)
    assert load_lora(model, folder) == "style"
    assert (velocity(model) - expected).abs().max() < 1e-6
    assert (velocity(model) - plain).abs().max() > 1e-3  # guards the line above: the adapter does something


def test_scale_zero_is_the_base_model_and_scales_change_the_output(style):
    folder, full = style
    model = tiny_model()
    plain = velocity(model)
    load_lora(model, folder, name="s", scale=0.0)
    assert torch.equal(velocity(model), plain) and active_lora_scales(model) == {}
    set_lora_scales(model, {"s": 0.5})
    half = velocity(model)
    assert (half - plain).abs().max() > 1e-3 and (half - full).abs().max() > 1e-3
    set_lora_scales(model, {"s": 1.0})
    assert (velocity(model) - full).abs().max() < 1e-6
    disable_lora(model)
    assert torch.equal(velocity(model), plain) and active_lora_scales(model) == {} and lora_scales(model) == {"s": 1.0}
    enable_lora(model)
    assert (velocity(model) - full).abs().max() < 1e-6


def test_two_adapters_combine(style, sketch):
    model, sketch_alone = tiny_model(), tiny_model()
    load_lora(model, style[0], scale=0.7)
    load_lora(model, sketch[0], scale=-0.5)
    load_lora(sketch_alone, sketch[0], scale=-0.5)
    assert lora_scales(model) == {"style": 0.7, "sketch": -0.5}
    both = velocity(model)
    assert (both - velocity(sketch_alone)).abs().max() > 1e-3

    # Merged, the weight changes by the sum over adapters of scale * alpha / r * B @ A.
    layer = "llm.layers.1.self_attn.qkv_proj.weight"
    before = model.state_dict()[layer].clone()
    merge_lora(model)
    delta = adapter_delta(style[0], layer, 0.7) + adapter_delta(sketch[0], layer, -0.5)
    assert (model.state_dict()[layer] - before - delta).abs().max() < 1e-6
    assert (velocity(model) - both).abs().max() < 1e-5
    unmerge_lora(model)

    set_lora_scales(model, {"style": 0.0})
    assert (velocity(model) - velocity(sketch_alone)).abs().max() < 1e-6


def adapter_delta(folder, weight_key: str, scale: float) -> torch.Tensor:
    config = json.loads((folder / "adapter_config.json").read_text())
    module = weight_key.removesuffix(".weight")
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        a, b = (f.get_tensor(f"base_model.model.{module}.lora_{p}.weight") for p in "AB")
    return scale * config["lora_alpha"] / config["r"] * b @ a


def test_merge_then_unmerge_restores_the_base_weights(style):
    model = tiny_model()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    load_lora(model, style[0])
    merge_lora(model)
    assert is_lora_merged(model)
    assert (velocity(model) - style[1]).abs().max() < 1e-5
    assert (model.state_dict()["llm.layers.0.mlp.gate_up_proj.weight"] - base["llm.layers.0.mlp.gate_up_proj.weight"]
            ).abs().max() > 1e-3
    set_lora_scales(model, {"style": 0.5})  # re-merged at the new scale
    merged_half = velocity(model)
    unmerge_lora(model)
    assert not is_lora_merged(model)
    assert (velocity(model) - merged_half).abs().max() < 1e-5
    assert all((v - base[k]).abs().max() < 1e-6 for k, v in model.state_dict().items())


def broken_rank(folder):
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 8, "lora_alpha": 8}))
    return folder


@pytest.mark.parametrize("make,message", [
    (lambda d, style: make_adapter(d / "wide", seed=3, hidden_size=128)[0], r"hidden_size 128 \(this model: 64\)"),
    (lambda d, style: official_adapter(d / "wide-peft", hidden_size=128)[0], r"lora_A \(8, 128\)"),
    (lambda d, style: official_adapter(d / "deep", num_hidden_layers=3)[0],
     "llm.layers.2.self_attn.qkv_proj, which this model does not have"),
    (lambda d, style: broken_rank(shutil.copytree(style[0], d / "rank")), "for rank 8"),
], ids=["another-hidden-size", "another-hidden-size-no-fingerprint", "more-layers", "rank-in-config"])
def test_an_adapter_for_another_model_is_refused_before_anything_changes(tmp_path, style, sketch, make, message):
    folder = make(tmp_path, style)
    model = tiny_model()
    load_lora(model, sketch[0])  # an adapter already attached must come through untouched too
    before = snapshot(model)
    with pytest.raises(LoraAdapterError, match=message):
        load_lora(model, folder)
    assert_same(before, snapshot(model))


def test_adapters_of_the_official_fine_tuning_load_and_ours_load_in_peft(tmp_path, style):
    folder, expected = official_adapter(tmp_path / "official")
    model = tiny_model()
    assert load_lora(model, folder) == "official"
    assert (velocity(model) - expected).abs().max() < 1e-6
    # The official pipeline loads adapters with PeftModel.from_pretrained: ours must work there too.
    assert (velocity(PeftModel.from_pretrained(tiny_model(), style[0])) - style[1]).abs().max() < 1e-6


def test_unload_restores_the_plain_modules_and_outputs(style, sketch):
    model, style_alone = tiny_model(), tiny_model()
    plain, qkv = velocity(model), model.llm.layers[0].self_attn.qkv_proj
    types = {n: type(m) for n, m in model.named_modules()}
    load_lora(model, style[0])
    load_lora(model, sketch[0])
    load_lora(style_alone, style[0])
    merge_lora(model)
    unload_lora(model, "sketch")
    assert lora_scales(model) == {"style": 1.0} and is_lora_merged(model)
    assert (velocity(model) - velocity(style_alone)).abs().max() < 1e-5
    unload_lora(model)
    assert {n: type(m) for n, m in model.named_modules()} == types and lora_scales(model) == {}
    assert model.llm.layers[0].self_attn.qkv_proj is qkv and type(qkv) is nn.Linear
    assert not [n for n, _ in model.named_parameters() if "lora" in n]
    assert (velocity(model) - plain).abs().max() < 1e-6


def test_state_dict_stays_the_official_checkpoint_while_adapters_are_attached(tmp_path, style):
    model = tiny_model()
    base, plain = {k: v.clone() for k, v in model.state_dict().items()}, velocity(model)
    load_lora(model, style[0])
    state = model.state_dict()
    assert list(state) == list(base) and all(torch.equal(state[k], base[k]) for k in base)
    model.load_state_dict(base, strict=True)  # an official checkpoint loads into the wrapped layers
    assert (velocity(model) - style[1]).abs().max() < 1e-6
    save_transformer(model, tmp_path / "base")
    assert (velocity(load_transformer(tmp_path / "base")) - plain).abs().max() < 1e-6
    merge_lora(model)  # merged, the base weights carry the adapter: a merged model is exported
    save_transformer(model, tmp_path / "merged")
    assert (velocity(load_transformer(tmp_path / "merged")) - style[1]).abs().max() < 1e-5


def test_add_lora_trains_only_the_adapter():
    model = tiny_model()
    plain = velocity(model)
    add_lora(model, "new", rank=2, alpha=4, targets=("qkv_proj",), dropout=0.1)
    assert torch.equal(velocity(model), plain)  # lora_B starts at 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.new." in n or ".lora_B.new." in n for n in trainable)
    assert all("qkv_proj" in n for n in trainable) and len(trainable) == 2 * 2
    model.train()
    g = torch.Generator().manual_seed(0)
    x, ids = torch.randn(1, 4, 8, 8, generator=g), torch.randint(4, 300, (1, 5), generator=g)
    out, _ = model(x, torch.tensor([0.5]), ids)
    out.square().mean().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    assert model.get_submodule("llm.layers.0.self_attn.qkv_proj").lora_B["new"].weight.grad.abs().max() > 0


def test_saved_weights_go_back_into_the_same_trainable_adapter(style, sketch):
    """What resuming a LoRA training run needs: the optimizer's parameters are filled, not replaced."""
    model = tiny_model()
    add_lora(model, "trained", rank=4, targets=ATTENTION_TARGETS + MLP_TARGETS)
    before = [p for p in model.parameters() if p.requires_grad]
    load_lora_weights(model, style[0], "trained")
    assert (velocity(model) - style[1]).abs().max() < 1e-6
    after = [p for p in model.parameters() if p.requires_grad]
    assert len(after) == len(before) == 16 and all(a is b for a, b in zip(after, before))
    with pytest.raises(LoraAdapterError, match=r"r \(2 saved, 4 attached\)"):
        load_lora_weights(model, sketch[0], "trained")


def test_bad_requests_are_refused(tmp_path, style):
    model = tiny_model()
    with pytest.raises(ValueError, match="nope_proj"):
        add_lora(model, targets=("qkv_proj", "nope_proj"))
    with pytest.raises(ValueError, match="name"):
        load_lora(model, style[0], name="a.b")
    with pytest.raises(ValueError, match="finite"):
        load_lora(model, style[0], scale=float("nan"))
    with pytest.raises(ValueError, match="'training' cannot name a LoRA adapter"):  # peft would crash on it
        load_lora(model, style[0], name="training")
    with pytest.raises(FileNotFoundError):
        load_lora(model, tmp_path / "missing")
    (tmp_path / "no-config").mkdir()
    shutil.copy(style[0] / "adapter_model.safetensors", tmp_path / "no-config")
    with pytest.raises(LoraAdapterError, match="adapter_config.json"):
        load_lora(model, tmp_path / "no-config")
    assert lora_scales(model) == {} and not [n for n, _ in model.named_parameters() if "lora" in n]
    load_lora(model, style[0])
    assert load_lora(model, style[0]) == "style_2"  # the folder name is taken: a free one
    with pytest.raises(ValueError, match="already loaded"):
        load_lora(model, style[0], name="style")
    with pytest.raises(ValueError, match="no LoRA adapter named 'other'"):
        set_lora_scales(model, {"style": 0.5, "other": 1.0})
    assert lora_scales(model) == {"style": 1.0, "style_2": 1.0}
    shutil.copytree(style[0], tmp_path / "training")
    assert load_lora(model, tmp_path / "training") == "training_2"  # a folder name peft cannot take


def test_pipeline_records_its_adapters_in_the_settings(tiny_model_dir, tmp_path):
    from omnigen import OmniGenPipeline
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu")  # not the shared tiny_pipe: it changes
    trained = load_transformer(tiny_model_dir)
    add_lora(trained, "x")
    randomize_adapter(trained, "x", seed=4)
    folder = save_lora(trained, tmp_path / "pixel-art")

    def generate():
        out = pipe("a red circle", height=32, width=32, num_inference_steps=2, seed=0, output_type="latent",
                   progress=False)
        return out.images[0], out.settings[0]["loras"]

    plain, recorded = generate()
    assert recorded == {}
    assert pipe.load_lora(folder, scale=0.8) == "pixel-art"
    styled, recorded = generate()
    assert recorded == {"pixel-art": 0.8} and (styled - plain).abs().max() > 1e-3
    pipe.set_lora_scales({"pixel-art": 0.0})
    image, recorded = generate()
    assert torch.equal(image, plain) and recorded == {}
    pipe.set_lora_scales({"pixel-art": 0.8})
    pipe.merge_lora()
    image, recorded = generate()
    assert (image - styled).abs().max() < 1e-4 and recorded == {"pixel-art": 0.8}
    pipe.unload_lora()  # takes the merged weights out again
    assert pipe.loras == {} and (generate()[0] - plain).abs().max() < 1e-4
