"""Weights kept quantized in memory, chosen at load time (torchao, weight-only).

    OmniGenPipeline.from_pretrained(path, quantize="int8")   # int8 weights, per output channel
    OmniGenPipeline.from_pretrained(path, quantize="fp8")    # float8 e4m3 weights

Only the decoder's linear layers (qkv_proj, o_proj, gate_up_proj, down_proj: 97% of OmniGen-v1's parameters)
are quantized; embeddings, norms, the time embedders and the final layer keep the pipeline's dtype.
Activations stay in that dtype too (bf16, fp16 or fp32): each matmul dequantizes its weight, so no int8 or
fp8 matmul hardware is needed; on a CPU that costs time, on a GPU it saves memory at a small cost.

A layer stored in fp8 (e4m3) and loaded with quantize="fp8" keeps its stored bytes exactly (scale 1); any
other layer is quantized with a per-row scale. LoRA adapters attach through peft's torchao support; merging
one re-quantizes the merged weight.
"""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import torch
from torch import nn

QUANTIZE_MODES = ("int8", "fp8")
INSTALL_HINT = "pip install torchao (from a checkout: pip install -e \".[quantize]\")"


class QuantizationError(ValueError):
    """A quantisation this machine or the installed libraries cannot do."""


def check_quantize(mode: str | None, device: torch.device, dtype: torch.dtype) -> str | None:
    """The quantisation to apply (None for none), or a QuantizationError saying why it cannot be done here."""
    if mode in (None, "none", "None", ""):
        return None
    if mode not in QUANTIZE_MODES:
        raise QuantizationError(f"quantize must be one of none, {', '.join(QUANTIZE_MODES)}; got {mode!r}")
    import_torchao(mode)
    if device.type not in ("cpu", "cuda"):
        raise QuantizationError(f"quantize={mode!r} runs on CPU and CUDA devices (torchao), not on {device.type}; "
                                f"load without quantize (e.g. dtype='float16') or on another device")
    if dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise QuantizationError(f"quantize={mode!r} computes in bfloat16, float16 or float32, not {dtype}")
    if mode == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise QuantizationError(f"quantize='fp8' needs a GPU with float8 support (compute capability 8.9+: "
                                f"Ada, Hopper or newer); {name} has {torch.cuda.get_device_capability(device)}. "
                                "Use quantize='int8'.")
    return mode


def import_torchao(mode: str = "int8"):
    """torchao, imported quietly (it logs about CUDA kernels a CPU build lacks), or a QuantizationError."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig  # noqa: F401
    except ImportError as err:
        raise QuantizationError(f"quantize={mode!r} needs torchao, which is not installed or does not work with "
                                f"torch {torch.__version__} ({err}): {INSTALL_HINT}") from err
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    return torchao


def torchao_config(mode: str):
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return Int8WeightOnlyConfig() if mode == "int8" else Float8WeightOnlyConfig()


def is_quantized_weight(key: str) -> bool:
    """Decoder linear weights: what quantize= applies to."""
    return key.startswith("llm.layers.") and key.endswith("_proj.weight")


class Quantizer:
    """Quantizes a model as load_transformer assigns it, one decoder layer at a time."""

    def __init__(self, mode: str, dtype: torch.dtype, device: torch.device | str):
        self.mode = check_quantize(mode, torch.device(device), dtype)
        self.dtype = dtype

    def keeps_stored(self, key: str, tensor: torch.Tensor) -> bool:
        """fp8-stored weights stay as they are stored when fp8 is asked for."""
        return self.mode == "fp8" and tensor.dtype == torch.float8_e4m3fn and is_quantized_weight(key)

    def quantize_group(self, model: nn.Module, keys: list[str]) -> None:
        from torchao.quantization import quantize_

        for name in sorted({k.rsplit(".", 1)[0] for k in keys if is_quantized_weight(k)}):
            linear = model.get_submodule(name)
            if linear.weight.dtype == torch.float8_e4m3fn:
                linear.weight = nn.Parameter(stored_fp8(linear.weight.data, self.dtype), requires_grad=False)
            else:
                quantize_(linear, torchao_config(self.mode), filter_fn=None)

    def mark(self, model: nn.Module) -> None:
        """What peft reads to re-quantize a layer after merging a LoRA adapter (the attribute a transformers
        model quantized with TorchAoConfig carries), and what was done."""
        config = SimpleNamespace(get_apply_tensor_subclass=lambda: torchao_config(self.mode))
        model.hf_quantizer = SimpleNamespace(quantization_config=config)
        model.quantization = self.mode


def stored_fp8(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A torchao float8 weight holding the stored e4m3 bytes as they are (per-row scale 1), computing in dtype."""
    from torchao.quantization import Float8Tensor

    rows, cols = weight.shape
    scale = torch.ones(rows, 1, dtype=torch.float32, device=weight.device)
    return Float8Tensor(weight, scale, block_size=[1, cols], dtype=dtype)


def quantization_of(model: nn.Module) -> str | None:
    return getattr(model, "quantization", None)
