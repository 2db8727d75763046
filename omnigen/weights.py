"""Reading and writing OmniGen model folders (official and diffusers layouts), with key mapping.

Official layout (Shitao/OmniGen-v1): config.json, model.safetensors (or sharded model-*.safetensors with
model.safetensors.index.json), tokenizer files, vae/. Diffusers layout (Shitao/OmniGen-v1-diffusers):
transformer/{config.json, diffusion_pytorch_model*.safetensors}, tokenizer/, vae/, scheduler/.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .files import atomic_save, atomic_write_text
from .model import OmniGen, OmniGenConfig

OFFICIAL_WEIGHTS = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded: missing files, wrong keys or shapes."""


def resolve_model_dir(path_or_repo_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hugging Face Hub repo id, downloaded (or read from the cache)."""
    path = Path(os.path.expanduser(os.fspath(path_or_repo_id)))
    if path.is_dir():
        return path
    text = os.fspath(path_or_repo_id)
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise ModelFolderError(f"model {text!r} is neither a folder nor a Hugging Face repo id like 'Shitao/OmniGen-v1'")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                            "vae/*", "tokenizer/*", "transformer/*"]))
    except Exception as err:  # network, auth, unknown repo: say which and what to do
        raise ModelFolderError(f"could not get {text!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
                               "Check the repo id and your connection, or pass a local folder.") from err


def detect_layout(model_dir: Path) -> str:
    """'official' or 'diffusers', or a ModelFolderError saying what is missing."""
    if (model_dir / "transformer").is_dir():
        return "diffusers"
    if not (model_dir / "config.json").is_file():
        raise ModelFolderError(f"{model_dir} has no config.json (official layout) and no transformer/ folder "
                               "(diffusers layout): it is not an OmniGen model folder")
    return "official"


def weight_files(folder: Path, stem: str) -> list[Path]:
    """The safetensors files of a folder: `stem.safetensors`, or the shards its index json names."""
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelFolderError(f"{index} names shards that are missing: {', '.join(missing)}")
        return [folder / s for s in shards]
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.ckpt")):
        raise ModelFolderError(f"{folder} holds pickle weights; only safetensors are read (they cannot run code). "
                               "Convert them with safetensors.torch.save_file.")
    raise ModelFolderError(f"{folder} has no {stem}.safetensors (nor a sharded {stem}.safetensors.index.json)")


def read_safetensors(files: list[Path], dtype: torch.dtype | None, device: torch.device | str = "cpu",
                     ) -> dict[str, torch.Tensor]:
    """Tensors of all files, each cast on its own (fp8/bf16/fp16 upcast) so peak memory stays one model."""
    state = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                state[key] = tensor.to(device)
    return state


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


def diffusers_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, qkv = {}, {}
    inverse = [
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
    for key in list(state):
        tensor = state.pop(key)  # pop as we go: the old dict does not keep a second copy alive
        match = re.fullmatch(r"layers\.(\d+)\.self_attn\.to_([qkv])\.weight", key)
        if match:
            qkv.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
            continue
        new = key
        for pattern, repl in inverse:
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


def load_config(model_dir: Path) -> OmniGenConfig:
    layout = detect_layout(model_dir)
    path = model_dir / ("transformer/config.json" if layout == "diffusers" else "config.json")
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path} is not valid JSON: {err}") from err
    try:
        return OmniGenConfig.from_dict(diffusers_config_to_official(data) if layout == "diffusers" else data)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFolderError(f"{path} is not an OmniGen config ({err})") from err


def check_state_dict(model: OmniGen, state: dict[str, torch.Tensor], layout: str, source: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise ModelFolderError(f"{source} does not match its config.json (read as the {layout} layout): "
                               + "; ".join(problems) + ". Is the config.json from the same model?")


def load_transformer(model_dir: str | os.PathLike, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> OmniGen:
    """Build on the meta device and assign the stored tensors, so the weights exist once in memory."""
    model_dir = Path(model_dir)
    layout = detect_layout(model_dir)
    config = load_config(model_dir)
    if layout == "diffusers":
        files = weight_files(model_dir / "transformer", "diffusion_pytorch_model")
        state = diffusers_to_official(read_safetensors(files, dtype, device))
    else:
        files = weight_files(model_dir, "model")
        state = read_safetensors(files, dtype, device)
    with torch.device("meta"):
        model = OmniGen.from_config(config)
    if "pos_embed" not in state:  # some conversions drop the fixed table; it is a function of the config
        state["pos_embed"] = model.build_pos_embed().to(device=device, dtype=dtype)
    check_state_dict(model, state, layout, files[0].parent)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """A safetensors file written atomically (see omnigen.files): a good file is never half-overwritten."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_save(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


def save_transformer(model: OmniGen, model_dir: str | os.PathLike, layout: str = "official",
                     dtype: torch.dtype | None = None) -> None:
    """Write config.json + weights in the official (default) or diffusers layout."""
    model_dir = Path(model_dir)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             for k, v in model.state_dict().items()}
    if layout == "official":
        atomic_save_file(state, model_dir / OFFICIAL_WEIGHTS, metadata={"format": "pt"})
        atomic_write_text(model_dir / "config.json", json.dumps(model.config.to_dict(), indent=2))
    elif layout == "diffusers":
        atomic_save_file(official_to_diffusers(state, model.config), model_dir / "transformer" / DIFFUSERS_WEIGHTS,
                         metadata={"format": "pt"})
        atomic_write_text(model_dir / "transformer" / "config.json",
                          json.dumps(official_config_to_diffusers(model.config), indent=2))
    else:
        raise ValueError(f"layout must be 'official' or 'diffusers', not {layout!r}")
