"""Model folders: official and diffusers layouts, stored dtypes, shards, and the errors of bad folders."""

import json

import pytest
import torch
from safetensors.torch import save_file

from omnigen.model import OmniGen
from omnigen.weights import ModelFolderError, load_transformer, save_transformer

from test_model import build_batch, make_inputs, randomise, su_scaling, tiny_config, ROWS


@pytest.fixture()
def model():
    return randomise(OmniGen.from_config(tiny_config(rope_scaling=su_scaling(16))))


def outputs(model):
    rows, latents, n_out, x, t = make_inputs(model, ROWS)
    input_ids, mask, pos, spans = build_batch(rows, n_out)
    with torch.no_grad():
        return model(x, t, input_ids, [l for r in latents for l in r], spans, mask, pos)[0]


def assert_same_weights(a, b, atol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=atol), k


@pytest.mark.parametrize("layout", ["official", "diffusers"])
def test_round_trip(tmp_path, model, layout):
    save_transformer(model, tmp_path, layout=layout)
    loaded = load_transformer(tmp_path)
    assert_same_weights(model, loaded)
    assert torch.equal(outputs(model), outputs(loaded))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_bf16_stored_weights_load_as_requested_dtype(tmp_path, model):
    save_transformer(model, tmp_path, dtype=torch.bfloat16)
    loaded = load_transformer(tmp_path, dtype=torch.float32)
    assert loaded.dtype == torch.float32
    assert_same_weights(model, loaded, atol=2e-3)
    as_bf16 = load_transformer(tmp_path, dtype=torch.bfloat16)
    assert as_bf16.dtype == torch.bfloat16


def test_fp8_stored_weights_are_upcast(tmp_path, model):
    state = {k: v.to(torch.float8_e4m3fn) for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    loaded = load_transformer(tmp_path, dtype=torch.float32)
    assert loaded.dtype == torch.float32
    expected = model.llm.layers[0].mlp.down_proj.weight.to(torch.float8_e4m3fn).float()
    assert torch.equal(loaded.llm.layers[0].mlp.down_proj.weight, expected)


def test_sharded_checkpoint(tmp_path, model):
    state = model.state_dict()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, str(tmp_path / name))
        weight_map.update({k: name for k in shard_keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    assert_same_weights(model, load_transformer(tmp_path))


def test_missing_config(tmp_path, model):
    save_transformer(model, tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="no config.json"):
        load_transformer(tmp_path)


def test_missing_weights(tmp_path, model):
    save_transformer(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="no model.safetensors"):
        load_transformer(tmp_path)


def test_checkpoint_of_another_shape(tmp_path, model):
    save_transformer(model, tmp_path)
    other = json.loads((tmp_path / "config.json").read_text())
    other["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(other))
    with pytest.raises(ModelFolderError, match=r"shape mismatches: llm\.layers\.0\.mlp\.down_proj\.weight"):
        load_transformer(tmp_path)


def test_unexpected_and_missing_keys_are_listed(tmp_path, model):
    state = dict(model.state_dict())
    state["llm.layers.9.extra.weight"] = torch.zeros(2)
    del state["llm.norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    with pytest.raises(ModelFolderError) as err:
        load_transformer(tmp_path)
    message = str(err.value)
    assert "missing keys: llm.norm.weight" in message
    assert "unexpected keys: llm.layers.9.extra.weight" in message
    assert "official layout" in message


def test_not_a_folder_nor_repo_id():
    from omnigen.weights import resolve_model_dir
    with pytest.raises(ModelFolderError, match="neither a folder nor"):
        resolve_model_dir("/no/such/folder/anywhere")
