"""Weights kept quantized in memory (omnigen/quantize.py, torchao): int8 and fp8 loads, their error against
fp32, fp8-stored weights kept as stored, LoRA on a quantized model, and the errors a user can cause."""

import sys

import pytest
import torch

from conftest import build_tiny_model_dir
from omnigen import OmniGenPipeline, lora
from omnigen.pipeline import initial_noise
from omnigen.quantize import QuantizationError, check_quantize
from omnigen.weights import load_transformer, save_transformer

pytest.importorskip("torchao")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Relative L2 error, against fp32, of what two guided 64x64 steps of the hidden-256 model add to the noise
# (measured here: int8 0.0003, fp8 0.0011); the bounds leave 10x for other machines' kernels.
INT8_BOUND = 0.003
FP8_BOUND = 0.011


@pytest.fixture(scope="module")
def mid_model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("mid-omnigen"), hidden=256, layers=2)


def latents(pipe, prompt="a red circle at the top left"):
    """What two sampling steps added to the starting noise (the noise itself would hide the model's error)."""
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt, height=64, width=64, num_inference_steps=2, seed=0, output_type="latent").images[0]
    return out - initial_noise(1, out.shape[0], 8, 8, [0], None)[0]


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.slow
@pytest.mark.parametrize("mode, bound", [("int8", INT8_BOUND), ("fp8", FP8_BOUND)])
def test_quantized_generation_stays_close_to_fp32(mid_model_dir, mode, bound):
    reference = latents(OmniGenPipeline.from_pretrained(mid_model_dir, device="cpu", dtype="float32"))
    pipe = OmniGenPipeline.from_pretrained(mid_model_dir, device="cpu", dtype="float32", quantize=mode)
    weight = pipe.transformer.llm.layers[0].mlp.gate_up_proj.weight
    assert type(weight).__name__ == ("Int8Tensor" if mode == "int8" else "Float8Tensor")
    assert weight.qdata.dtype == (torch.int8 if mode == "int8" else torch.float8_e4m3fn)
    assert pipe.transformer.llm.embed_tokens.weight.dtype == torch.float32  # only decoder linears
    error = relative_error(latents(pipe), reference)
    assert 0 < error < bound, f"{mode}: relative error {error:.4f}"


def test_int8_in_bf16_generates_an_image(tiny_model_dir):
    pipe = OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16", quantize="int8")
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle", height=64, width=64, num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64)
    assert pipe.quantize == "int8" and pipe.transformer.quantization == "int8"


def test_fp8_stored_weights_stay_fp8_bit_for_bit(tmp_path, tiny_model_dir):
    model = load_transformer(tiny_model_dir)
    save_transformer(model, tmp_path, dtype=torch.float8_e4m3fn)
    stored = model.llm.layers[1].self_attn.qkv_proj.weight.to(torch.float8_e4m3fn)
    loaded = load_transformer(tmp_path, dtype=torch.bfloat16, quantize="fp8")
    weight = loaded.llm.layers[1].self_attn.qkv_proj.weight
    assert weight.qdata.dtype == torch.float8_e4m3fn
    assert torch.equal(weight.qdata.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(weight.dequantize().float(), stored.float())
    assert loaded.llm.norm.weight.dtype == torch.bfloat16  # the rest is upcast to the compute dtype


def make_adapter(base_dir, folder):
    model = load_transformer(base_dir)
    lora.add_lora(model, "style", rank=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    lora.save_lora(model, folder, "style")


@pytest.mark.slow
def test_lora_loads_merges_and_unloads_on_an_int8_model(tmp_path, mid_model_dir):
    make_adapter(mid_model_dir, tmp_path / "style")
    full = OmniGenPipeline.from_pretrained(mid_model_dir, device="cpu", dtype="float32")
    full.load_lora(tmp_path / "style")
    reference = latents(full)
    pipe = OmniGenPipeline.from_pretrained(mid_model_dir, device="cpu", dtype="float32", quantize="int8")
    plain = latents(pipe)
    pipe.load_lora(tmp_path / "style")
    adapted = latents(pipe)
    assert relative_error(adapted, plain) > 3 * INT8_BOUND  # the adapter changes the picture ...
    assert relative_error(adapted, reference) < INT8_BOUND  # ... as it does on the fp32 model
    pipe.merge_lora()  # peft dequantises, adds, re-quantises with the same torchao config
    assert type(pipe.transformer.llm.layers[0].self_attn.qkv_proj.base_layer.weight).__name__ == "Int8Tensor"
    assert relative_error(latents(pipe), reference) < 3 * INT8_BOUND  # merged weights are rounded to int8 too
    pipe.unmerge_lora()
    pipe.unload_lora()
    assert relative_error(latents(pipe), plain) < INT8_BOUND  # the base was re-quantised twice on the way


def test_unknown_quantize_value_is_named(tiny_model_dir):
    with pytest.raises(QuantizationError, match=r"quantize must be one of none, int8, fp8; got 'int4'"):
        OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu", quantize="int4")


def test_unknown_quantize_flag_is_refused_by_the_cli(capsys):
    from omnigen.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--prompt", "x", "--quantize", "int4"])
    assert exit_.value.code == 2
    assert "--quantize: invalid choice: 'int4'" in capsys.readouterr().err


def test_cli_quantize_flag_reaches_the_pipeline(tmp_path, tiny_model_dir, monkeypatch):
    from omnigen import cli
    seen = {}
    original = OmniGenPipeline.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)
    monkeypatch.setattr(OmniGenPipeline, "from_pretrained", classmethod(spy))
    assert cli.main(["generate", "--model", str(tiny_model_dir), "--quantize", "int8", "--show-settings"]) == 0
    assert seen["quantize"] == "int8"


def test_quantize_on_an_unsupported_device_is_refused_before_loading():
    with pytest.raises(QuantizationError, match="runs on CPU and CUDA devices.*not on mps"):
        check_quantize("int8", torch.device("mps"), torch.float16)


def test_quantize_without_torchao_says_how_to_install(monkeypatch, tiny_model_dir):
    for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    with pytest.raises(QuantizationError, match=r"needs torchao.*pip install torchao \(from a checkout: pip install -e \"\.\[quantize\]\"\)"):
        OmniGenPipeline.from_pretrained(tiny_model_dir, device="cpu", quantize="int8")


def test_studio_flag_reaches_the_pipeline():
    from app.main import parse_args
    args = parse_args(["--model", "x", "--quantize", "fp8"])
    assert args.quantize == "fp8" and args.base is None
