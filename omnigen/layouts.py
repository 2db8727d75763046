"""The official and the diffusers names of the same OmniGen weights and config, both ways, and OmniGen-v1's own
config.json (what a single weights file of its shapes is loaded with when no base names one).

Official: Shitao/OmniGen-v1 (`llm.layers.N.self_attn.qkv_proj`, ...); diffusers: Shitao/OmniGen-v1-diffusers
(`transformer/`, `layers.N.self_attn.to_q`, ...), where q, k and v are separate and fused here.
"""

from __future__ import annotations

import re

import torch

from .errors import ModelFolderError
from .model import OmniGenConfig


# Official name -> diffusers name; q/k/v are split in diffusers and fused (qkv_proj) here.
_RENAMES = [
    (r"^x_embedder\.proj\.", "patch_embedding.output_image_proj."),
    (r"^input_x_embedder\.proj\.", "patch_embedding.input_image_proj."),
    (r"^pos_embed$", "patch_embedding.pos_embed"),
    (r"^(time_token|t_embedder)\.mlp\.0\.", r"\1.linear_1."),
    (r"^(time_token|t_embedder)\.mlp\.2\.", r"\1.linear_2."),
    (r"^llm\.embed_tokens\.", "embed_tokens."),
    (r"^llm\.norm\.", "norm."),
    (r"^llm\.layers\.(\d+)\.self_attn\.o_proj\.", r"layers.\1.self_attn.to_out.0."),
    (r"^llm\.layers\.", "layers."),
    (r"^final_layer\.adaLN_modulation\.1\.", "norm_out.linear."),
    (r"^final_layer\.linear\.", "proj_out."),
]


def official_to_diffusers(state: dict[str, torch.Tensor], config: OmniGenConfig) -> dict[str, torch.Tensor]:
    out = {}
    head_dim = config.hidden_size // config.num_attention_heads
    q_size, kv_size = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    for key, tensor in state.items():
        match = re.fullmatch(r"llm\.layers\.(\d+)\.self_attn\.qkv_proj\.weight", key)
        if match:
            q, k, v = tensor.split([q_size, kv_size, kv_size], dim=0)
            prefix = f"layers.{match.group(1)}.self_attn."
            out[prefix + "to_q.weight"], out[prefix + "to_k.weight"], out[prefix + "to_v.weight"] = q, k, v
            continue
        new = key
        for pattern, repl in _RENAMES:
            new, count = re.subn(pattern, repl, new)
            if count:
                break
        out[new] = tensor
    return out


_INVERSE = [  # diffusers name -> official name (q/k/v apart)
    (r"^patch_embedding\.output_image_proj\.", "x_embedder.proj."),
    (r"^patch_embedding\.input_image_proj\.", "input_x_embedder.proj."),
    (r"^patch_embedding\.pos_embed$", "pos_embed"),
    (r"^(time_token|t_embedder)\.linear_1\.", r"\1.mlp.0."),
    (r"^(time_token|t_embedder)\.linear_2\.", r"\1.mlp.2."),
    (r"^embed_tokens\.", "llm.embed_tokens."),
    (r"^norm\.", "llm.norm."),
    (r"^layers\.(\d+)\.self_attn\.to_out\.0\.", r"llm.layers.\1.self_attn.o_proj."),
    (r"^layers\.", "llm.layers."),
    (r"^norm_out\.linear\.", "final_layer.adaLN_modulation.1."),
    (r"^proj_out\.", "final_layer.linear."),
]


def diffusers_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, qkv = {}, {}
    for key in list(state):
        tensor = state.pop(key)  # pop as we go: the old dict does not keep a second copy alive
        match = re.fullmatch(r"layers\.(\d+)\.self_attn\.to_([qkv])\.weight", key)
        if match:
            qkv.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
            continue
        new = key
        for pattern, repl in _INVERSE:
            new, count = re.subn(pattern, repl, new)
            if count:
                break
        out[new] = tensor
    for layer, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ModelFolderError(f"layer {layer} of the diffusers checkpoint lacks to_{({'q', 'k', 'v'} - set(parts)).pop()}")
        out[f"llm.layers.{layer}.self_attn.qkv_proj.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def diffusers_config_to_official(data: dict) -> dict:
    """A diffusers OmniGenTransformer2DModel config.json as the Phi-3 style config this loader uses."""
    return {
        "hidden_size": data["hidden_size"], "num_hidden_layers": data["num_layers"],
        "num_attention_heads": data["num_attention_heads"], "num_key_value_heads": data.get("num_key_value_heads"),
        "intermediate_size": data["intermediate_size"], "vocab_size": data["vocab_size"],
        "rms_norm_eps": data.get("rms_norm_eps", 1e-5), "rope_theta": data.get("rope_base", 10000),
        "rope_scaling": data.get("rope_scaling"), "max_position_embeddings": data.get("max_position_embeddings", 131072),
        "original_max_position_embeddings": data.get("original_max_position_embeddings", 4096),
        "pad_token_id": data.get("pad_token_id", 32000), "patch_size": data.get("patch_size", 2),
        "in_channels": data.get("in_channels", 4), "pos_embed_max_size": data.get("pos_embed_max_size", 192),
        **({"native_image_size": data["native_image_size"]} if "native_image_size" in data else {}),
    }


def official_config_to_diffusers(config: OmniGenConfig) -> dict:
    return {
        "_class_name": "OmniGenTransformer2DModel", "in_channels": config.in_channels,
        "patch_size": config.patch_size, "hidden_size": config.hidden_size, "rms_norm_eps": config.rms_norm_eps,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "intermediate_size": config.intermediate_size, "num_layers": config.num_hidden_layers,
        "pad_token_id": config.pad_token_id, "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "original_max_position_embeddings": config.original_max_position_embeddings,
        "rope_base": config.rope_theta, "rope_scaling": config.rope_scaling,
        "pos_embed_max_size": config.pos_embed_max_size, "native_image_size": config.native_image_size,
    }


# The config.json of Shitao/OmniGen-v1 (a Phi-3-vision-128k-instruct text config): what a single weights file
# of OmniGen-v1's shapes is loaded with when its base names no config. The rope factors are the ones the
# model was trained with (as written in diffusers' first OmniGen pipeline test). It states no pad_token_id:
# OmniGenConfig's default, 32000 (Phi-3's <|endoftext|>), holds.
OMNIGEN_V1_CONFIG = {
    "_name_or_path": "Phi-3-vision-128k-instruct", "architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 3072,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072,
    "model_type": "phi3", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "long_factor": [1.0299999713897705, 1.0499999523162842, 1.0499999523162842, 1.0799999237060547,
                        1.2299998998641968, 1.2299998998641968, 1.2999999523162842, 1.4499999284744263,
                        1.5999999046325684, 1.6499998569488525, 1.8999998569488525, 2.859999895095825,
                        3.68999981880188, 5.419999599456787, 5.489999771118164, 5.489999771118164,
                        9.09000015258789, 11.579999923706055, 15.65999984741211, 15.769999504089355,
                        15.789999961853027, 18.360000610351562, 21.989999771118164, 23.079999923706055,
                        30.009998321533203, 32.35000228881836, 32.590003967285156, 35.56000518798828,
                        39.95000457763672, 53.840003967285156, 56.20000457763672, 57.95000457763672,
                        59.29000473022461, 59.77000427246094, 59.920005798339844, 61.190006256103516,
                        61.96000671386719, 62.50000762939453, 63.3700065612793, 63.48000717163086,
                        63.48000717163086, 63.66000747680664, 63.850006103515625, 64.08000946044922,
                        64.760009765625, 64.80001068115234, 64.81001281738281, 64.81001281738281],
        "short_factor": [1.05, 1.05, 1.05, 1.1, 1.1, 1.1, 1.2500000000000002, 1.2500000000000002,
                         1.4000000000000004, 1.4500000000000004, 1.5500000000000005, 1.8500000000000008,
                         1.9000000000000008] + [2.000000000000001] * 19
                        + [2.1000000000000005, 2.1000000000000005, 2.2, 2.3499999999999996, 2.3499999999999996,
                           2.3499999999999996, 2.3499999999999996, 2.3999999999999995, 2.3999999999999995,
                           2.6499999999999986, 2.6999999999999984, 2.8999999999999977, 2.9499999999999975,
                           3.049999999999997, 3.049999999999997, 3.049999999999997],
        "type": "su",
    },
    "rope_theta": 10000.0, "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.38.1", "use_cache": True, "vocab_size": 32064, "_attn_implementation": "sdpa",
}
V1_HEAD_DIM = 96  # Phi-3's; not recoverable from the fused qkv_proj shape alone


def official_name(key: str) -> str:
    for pattern, repl in _INVERSE:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return key
