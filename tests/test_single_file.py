"""A single .safetensors file wherever a model folder goes (official or diffusers names, config from the
tensors' shapes, tokenizer and VAE from `base`), and the bad checkpoint files a user can hand over."""

import json

import pytest
import torch
from safetensors.torch import save_file

from omnigen import OmniGenPipeline
from omnigen.model import OmniGen, OmniGenConfig
from omnigen.weights import (OMNIGEN_V1_CONFIG, Checkpoint, ModelFolderError, infer_config, load_transformer,
                             save_transformer)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def velocity(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe("a red circle", height=64, width=64, num_inference_steps=2, seed=0, output_type="latent").images[0]


@pytest.fixture(scope="module")
def folder_result(tiny_model_dir):
    return velocity(OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu"))


@pytest.mark.parametrize("layout, name", [("official", "model.safetensors"),
                                          ("diffusers", "transformer/diffusion_pytorch_model.safetensors")])
def test_single_file_loads_like_the_folder(tmp_path, tiny_model_dir, folder_result, layout, name):
    save_transformer(load_transformer(tiny_model_dir), tmp_path, layout=layout)
    pipe = OmniGenPipeline.from_pretrained(tmp_path / name, device="cpu", base=tiny_model_dir)
    assert torch.equal(velocity(pipe), folder_result)


def test_single_file_without_base_is_refused_with_what_to_do(tmp_path, tiny_model_dir):
    save_transformer(load_transformer(tiny_model_dir), tmp_path)
    with pytest.raises(ModelFolderError, match=r"model\.safetensors is a single weights file.*base=.*--base"):
        OmniGenPipeline.from_pretrained(tmp_path / "model.safetensors", device="cpu")


def test_cli_takes_a_file_and_base(tmp_path, tiny_model_dir, capsys):
    from omnigen.cli import main
    save_transformer(load_transformer(tiny_model_dir), tmp_path)
    assert main(["generate", "--model", str(tmp_path / "model.safetensors"), "--base", str(tiny_model_dir),
                 "--show-settings"]) == 0
    assert json.loads(capsys.readouterr().out)["num_inference_steps"] == 50
    assert main(["generate", "--model", str(tmp_path / "model.safetensors"), "--show-settings"]) == 2
    assert "--base" in capsys.readouterr().err


def test_config_inferred_from_shapes_with_v1_constants(tmp_path):
    """No base config: heads from Phi-3's head size 96, OmniGen-v1's rope factors and pad id."""
    config = OmniGenConfig.from_dict(dict(OMNIGEN_V1_CONFIG, hidden_size=192, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, intermediate_size=256,
                                          vocab_size=32064, pos_embed_max_size=16))
    save_transformer(OmniGen.from_config(config), tmp_path)
    with Checkpoint([tmp_path / "model.safetensors"]) as checkpoint:
        inferred = infer_config(checkpoint)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "pos_embed_max_size", "pad_token_id", "rope_scaling"):
        assert getattr(inferred, key) == getattr(config, key), key
    assert len(inferred.rope_scaling["long_factor"]) == len(inferred.rope_scaling["short_factor"]) == 48


def write_truncated(tmp_path, tiny_model_dir, keep: float):
    save_transformer(load_transformer(tiny_model_dir), tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_file_is_named(tmp_path, tiny_model_dir):
    path = write_truncated(tmp_path, tiny_model_dir, 0.6)
    with pytest.raises(ModelFolderError, match=rf"{path} is not a complete safetensors file: it is truncated: "
                                               r"tensor '.+' ends at byte"):
        load_transformer(tmp_path)
    with pytest.raises(ModelFolderError, match="download it again|do it again"):
        OmniGenPipeline.from_pretrained(path, device="cpu", base=tiny_model_dir)


def test_file_cut_inside_its_header_is_named(tmp_path, tiny_model_dir):
    path = write_truncated(tmp_path, tiny_model_dir, 0.0005)
    with pytest.raises(ModelFolderError, match=rf"{path} is not a complete safetensors file: its header claims"):
        load_transformer(tmp_path)


def test_corrupt_header_is_named(tmp_path, tiny_model_dir):
    save_transformer(load_transformer(tiny_model_dir), tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe{["
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=rf"{path} is not a complete safetensors file: its header is not"):
        load_transformer(tmp_path)


def test_file_of_another_model_is_refused(tmp_path, tiny_model_dir):
    path = tmp_path / "phi3.safetensors"
    save_file({"model.layers.0.self_attn.qkv_proj.weight": torch.zeros(12, 4),
               "model.embed_tokens.weight": torch.zeros(10, 4), "lm_head.weight": torch.zeros(10, 4)}, str(path))
    with pytest.raises(ModelFolderError, match=r"phi3\.safetensors is not an OmniGen checkpoint.*language model"):
        OmniGenPipeline.from_pretrained(path, device="cpu", base=tiny_model_dir)


def test_omnigen_file_of_other_shapes_than_its_base_is_refused(tmp_path, tiny_model_dir):
    """Shapes that fit neither the base's config nor OmniGen-v1's head size: said before anything is read."""
    other = OmniGenConfig(hidden_size=40, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          vocab_size=320, pad_token_id=3, pos_embed_max_size=8)
    save_transformer(OmniGen.from_config(other), tmp_path)
    with pytest.raises(ModelFolderError, match=r"hidden size 40 is not a multiple of OmniGen-v1's head size 96"):
        OmniGenPipeline.from_pretrained(tmp_path / "model.safetensors", device="cpu", base=tiny_model_dir)


def test_folder_whose_file_has_another_models_shapes(tmp_path, tiny_model_dir):
    save_transformer(load_transformer(tiny_model_dir), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, hidden_size=96, num_attention_heads=4)))
    with pytest.raises(ModelFolderError, match=r"does not match its config\.json .*shape mismatches"):
        load_transformer(tmp_path)


def test_missing_weights_file_is_named(tmp_path, tiny_model_dir):
    with pytest.raises(ModelFolderError, match="weights file not found"):
        OmniGenPipeline.from_pretrained(tmp_path / "nothing.safetensors", device="cpu", base=tiny_model_dir)
