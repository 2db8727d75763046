"""Reading and writing OmniGen model folders (official and diffusers layouts), with key mapping.

Official layout (Shitao/OmniGen-v1): config.json, model.safetensors (or sharded model-*.safetensors with
model.safetensors.index.json), tokenizer files, vae/. Diffusers layout (Shitao/OmniGen-v1-diffusers):
transformer/{config.json, diffusion_pytorch_model*.safetensors}, tokenizer/, vae/, scheduler/.
A single `.safetensors` file (either key naming) is read too: its config is inferred from the tensors' shapes.

Tensors are read one at a time with plain file reads (no memory map), cast, and assigned to a model built
on the meta device: loading a 15.5 GB fp32 file into bf16 holds the bf16 model plus one tensor, never the
file. Headers are checked before any data is read, so a truncated file or another model's file is named
and refused at once.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .files import atomic_save, atomic_write_text
from .errors import ModelFolderError
from .layouts import (OMNIGEN_V1_CONFIG, V1_HEAD_DIM, diffusers_config_to_official, official_config_to_diffusers,
                      official_name, official_to_diffusers)
from .model import OmniGen, OmniGenConfig

OFFICIAL_WEIGHTS = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


def resolve_model_dir(path_or_repo_id: str | os.PathLike, weights: bool = True) -> Path:
    """A local folder as is; otherwise a Hugging Face Hub repo id, downloaded (or read from the cache).
    weights=False fetches only what a single weights file borrows: configs, tokenizer and vae/."""
    path = Path(os.path.expanduser(os.fspath(path_or_repo_id)))
    if path.is_dir():
        return path
    text = os.fspath(path_or_repo_id)
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise ModelFolderError(f"model {text!r} is neither a folder nor a Hugging Face repo id like 'Shitao/OmniGen-v1'")
    from huggingface_hub import snapshot_download
    try:
        patterns = ["*.json", "*.model", "*.txt", "vae/*", "tokenizer/*"]
        return Path(snapshot_download(text, allow_patterns=patterns + (["*.safetensors", "transformer/*"]
                                                                        if weights else [])))
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


# safetensors dtype names -> torch dtypes (the format is little-endian, as every machine torch runs on).
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies in a safetensors file: absolute byte range, dtype and shape."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def corrupt_file(file: Path, why: str) -> ModelFolderError:
    return ModelFolderError(f"{file} is not a complete safetensors file: {why}. If it was downloaded or copied, "
                            "do it again (an interrupted transfer leaves a truncated file).")


def read_header(file: Path) -> dict[str, StoredTensor]:
    """The tensors a safetensors file holds, checked against the file's size before any data is read."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise corrupt_file(file, f"it has only {size} bytes")
        length = int.from_bytes(head, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise corrupt_file(file, f"its header claims {length:,} bytes but the file has {size:,}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise corrupt_file(file, f"its header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise corrupt_file(file, "its header is not a JSON object")
    base, tensors = 8 + length, {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            name, shape, (start, end) = info["dtype"], tuple(int(n) for n in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise corrupt_file(file, f"the header entry of {key!r} is malformed ({err!r})") from err
        if name not in SAFETENSORS_DTYPES:
            raise ModelFolderError(f"{file}: tensor {key!r} is stored as {name}, which this loader does not read "
                                   f"(it reads {', '.join(SAFETENSORS_DTYPES)})")
        dtype = SAFETENSORS_DTYPES[name]
        if end - start != math.prod(shape) * dtype.itemsize or start < 0:
            raise corrupt_file(file, f"the header gives tensor {key!r} {end - start} bytes for shape {list(shape)}")
        if base + end > size:
            raise corrupt_file(file, f"it is truncated: tensor {key!r} ends at byte {base + end:,} but the file "
                               f"has {size:,} bytes")
        tensors[key] = StoredTensor(file, dtype, shape, base + start, base + end)
    return tensors


def read_stored(stored: StoredTensor, handle) -> torch.Tensor:
    """One tensor read into fresh CPU memory (no memory map: nothing of the file stays resident)."""
    buffer = torch.empty(stored.end - stored.start, dtype=torch.uint8)
    handle.seek(stored.start)
    if buffer.numel() and handle.readinto(memoryview(buffer.numpy())) != buffer.numel():
        raise corrupt_file(stored.file, "it ended while being read (was it changed meanwhile?)")
    return buffer.view(stored.dtype).reshape(stored.shape)


def read_safetensors(files: list[Path], dtype: torch.dtype | None, device: torch.device | str = "cpu",
                     ) -> dict[str, torch.Tensor]:
    """Tensors of all files, each cast on its own (fp8/bf16/fp16 upcast) so peak memory stays one model."""
    state = {}
    for file in files:
        with open(file, "rb") as handle:
            for key, stored in read_header(file).items():
                tensor = read_stored(stored, handle)
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                state[key] = tensor.to(device)
    return state


_DIFFUSERS_QKV = re.compile(r"layers\.(\d+)\.self_attn\.to_([qkv])\.weight")


class Checkpoint:
    """The tensors of one or more safetensors files under their official names, read one at a time.

    Diffusers names are mapped on the fly (to_q/to_k/to_v become one qkv_proj read as three parts)."""

    def __init__(self, files: list[Path], layout: str | None = None):
        self.files = files
        self.stored: dict[str, StoredTensor] = {}
        for file in files:
            for key, stored in read_header(file).items():
                if key in self.stored:
                    raise ModelFolderError(f"{key!r} is stored twice: in {self.stored[key].file} and in {file}")
                self.stored[key] = stored
        self.layout = layout or guess_layout(files[0], self.stored)
        self.sources: dict[str, list[str]] = {}  # official key -> the stored keys it is made of
        for key in self.stored:
            match = _DIFFUSERS_QKV.fullmatch(key) if self.layout == "diffusers" else None
            if match:
                name = f"llm.layers.{match.group(1)}.self_attn.qkv_proj.weight"
                self.sources.setdefault(name, [])
                self.sources[name].append(key)
                self.sources[name].sort(key=lambda k: "qkv".index(k[-8]))
            else:
                self.sources[official_name(key) if self.layout == "diffusers" else key] = [key]
        self._handles: dict[Path, object] = {}

    def shape(self, key: str) -> tuple[int, ...]:
        parts = [self.stored[k].shape for k in self.sources[key]]
        return parts[0] if len(parts) == 1 else (sum(p[0] for p in parts), *parts[0][1:])

    def stored_dtype(self, key: str) -> torch.dtype:
        return self.stored[self.sources[key][0]].dtype

    def incomplete_qkv(self) -> list[str]:
        return [k for k, parts in self.sources.items() if k.endswith("qkv_proj.weight") and self.layout ==
                "diffusers" and len(parts) != 3]

    def read(self, key: str) -> torch.Tensor:
        """The stored tensor (its stored dtype) on the CPU."""
        parts = []
        for name in self.sources[key]:
            stored = self.stored[name]
            if stored.file not in self._handles:
                self._handles[stored.file] = open(stored.file, "rb")
            parts.append(read_stored(stored, self._handles[stored.file]))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def guess_layout(file: Path, stored: dict) -> str:
    """'official' or 'diffusers' from the key names, or an error saying whose checkpoint this looks like."""
    keys = list(stored)
    if any(k.startswith("llm.layers.") for k in keys):
        return "official"
    if any(k.startswith(("patch_embedding.", "layers.")) for k in keys) and any("to_q" in k for k in keys):
        return "diffusers"
    sample = ", ".join(sorted(keys)[:4]) + (", ..." if len(keys) > 4 else "")
    hint = (" It looks like a language model, not OmniGen." if any(k.startswith(("model.layers.", "lm_head"))
                                                                   for k in keys) else "")
    raise ModelFolderError(f"{file} is not an OmniGen checkpoint: none of its {len(keys)} tensors ({sample}) has "
                           "OmniGen's names (official: llm.layers.N..., diffusers: layers.N.self_attn.to_q...)."
                           + hint)


def open_checkpoint(source: Path) -> Checkpoint:
    """The checkpoint of a model folder (either layout) or of a single .safetensors file."""
    if source.is_file():
        return Checkpoint([source])
    layout = detect_layout(source)
    if layout == "diffusers":
        return Checkpoint(weight_files(source / "transformer", "diffusion_pytorch_model"), "diffusers")
    return Checkpoint(weight_files(source, "model"), "official")


def is_weights_file(path_or_id: str | os.PathLike) -> bool:
    path = Path(os.path.expanduser(os.fspath(path_or_id)))
    return path.suffix == ".safetensors" and not path.is_dir()


def infer_config(checkpoint: Checkpoint, base: OmniGenConfig | None = None) -> OmniGenConfig:
    """The config of a single weights file: from its shapes with OmniGen-v1's constants (Phi-3's head size,
    rope factors, pad id), or `base` (the config of the folder that lends tokenizer and VAE) when the shapes
    agree with it."""
    need = ("llm.embed_tokens.weight", "llm.layers.0.self_attn.qkv_proj.weight", "llm.layers.0.mlp.gate_up_proj.weight",
            "x_embedder.proj.weight")
    missing = [k for k in need if k not in checkpoint.sources]
    if missing:
        raise ModelFolderError(f"{checkpoint.files[0]} lacks {', '.join(missing)}: it is not a whole OmniGen "
                               "transformer checkpoint (an adapter or a partial file?)")
    vocab, hidden = checkpoint.shape("llm.embed_tokens.weight")
    qkv_rows = checkpoint.shape("llm.layers.0.self_attn.qkv_proj.weight")[0]
    layers = 1 + max(int(k.split(".")[2]) for k in checkpoint.sources if k.startswith("llm.layers."))
    _, in_channels, patch, _ = checkpoint.shape("x_embedder.proj.weight")
    shapes = dict(hidden_size=hidden, vocab_size=vocab, num_hidden_layers=layers, in_channels=in_channels,
                  patch_size=patch, intermediate_size=checkpoint.shape("llm.layers.0.mlp.gate_up_proj.weight")[0] // 2)
    if "pos_embed" in checkpoint.sources:
        shapes["pos_embed_max_size"] = math.isqrt(checkpoint.shape("pos_embed")[1])
    if base is not None and all(getattr(base, k) == v for k, v in shapes.items()) and \
            qkv_rows == hidden + 2 * base.num_key_value_heads * (hidden // base.num_attention_heads):
        return base
    if hidden % V1_HEAD_DIM or (qkv_rows - hidden) % (2 * V1_HEAD_DIM):
        raise ModelFolderError(f"{checkpoint.files[0]}: hidden size {hidden} is not a multiple of OmniGen-v1's head "
                               f"size {V1_HEAD_DIM}, so its head count cannot be inferred; give a base folder whose "
                               "config.json describes this model")
    data = dict(OMNIGEN_V1_CONFIG, **shapes, num_attention_heads=hidden // V1_HEAD_DIM,
                num_key_value_heads=(qkv_rows - hidden) // (2 * V1_HEAD_DIM))
    if vocab <= OmniGenConfig.pad_token_id:  # OmniGen-v1's config.json states none: the dataclass default holds
        data["pad_token_id"] = None
    return OmniGenConfig.from_dict(data)


def has_config(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() or (model_dir / "transformer" / "config.json").is_file()


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


def check_shapes(expected: dict[str, tuple], found: dict[str, tuple], layout: str, source: Path,
                 against: str = "its config.json") -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: file {found[k]} vs model {expected[k]}"
             for k in sorted(set(expected) & set(found)) if found[k] != expected[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise ModelFolderError(f"{source} does not match {against} (read as the {layout} layout): "
                               + "; ".join(problems) + ". Are they from the same model?")


def check_state_dict(model: OmniGen, state: dict[str, torch.Tensor], layout: str, source: Path) -> None:
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in state.items()}, layout, source)


def load_groups(keys: Sequence[str]) -> list[list[str]]:
    """Keys in the order they are read: one group per decoder layer (so a quantized load never holds more than
    one layer in full precision), then the rest."""
    layers: dict[int, list[str]] = {}
    rest = []
    for key in keys:
        match = re.match(r"llm\.layers\.(\d+)\.", key)
        (layers.setdefault(int(match.group(1)), []) if match else rest).append(key)
    return [layers[i] for i in sorted(layers)] + [rest]


def load_transformer(source: str | os.PathLike, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", quantize: str | None = None,
                     config: OmniGenConfig | None = None, keep_in_fp32: Sequence[str] = ()) -> OmniGen:
    """Build on the meta device and assign the stored tensors one by one, so the weights exist once in memory.

    `source` is a model folder (either layout) or a single .safetensors file (then `config`, or one inferred
    from its shapes). `quantize` ('int8' or 'fp8', see omnigen.quantize) quantizes each decoder layer as soon
    as it is read. Modules whose class is named in `keep_in_fp32` are read in fp32 whatever `dtype` is."""
    source = Path(source)
    with open_checkpoint(source) as checkpoint:
        if source.is_dir():
            config = config or load_config(source)
        elif config is None:
            config = infer_config(checkpoint)
        with torch.device("meta"):
            model = OmniGen.from_config(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: checkpoint.shape(k) for k in checkpoint.sources}
        found.setdefault("pos_embed", expected["pos_embed"])  # some conversions drop the fixed table
        for key in checkpoint.incomplete_qkv():
            raise ModelFolderError(f"{key} of {source} lacks some of to_q, to_k, to_v")
        check_shapes(expected, found, checkpoint.layout, checkpoint.files[0] if len(checkpoint.files) == 1
                     else checkpoint.files[0].parent, "its config" if source.is_file() else "its config.json")
        fp32_keys = {f"{name}.{key}" if name else key for name, module in model.named_modules()
                     if type(module).__name__ in keep_in_fp32 for key in module.state_dict()}
        quantizer = None
        if quantize is not None:
            from .quantize import Quantizer
            quantizer = Quantizer(quantize, dtype, device)
        for group in load_groups(list(expected)):
            state = {}
            for key in group:
                target = torch.float32 if key in fp32_keys else dtype
                if key not in checkpoint.sources:
                    tensor = model.build_pos_embed()
                else:
                    tensor = checkpoint.read(key)
                    if quantizer is not None and quantizer.keeps_stored(key, tensor):
                        target = tensor.dtype
                if tensor.is_floating_point():
                    tensor = tensor.to(target)
                state[key] = tensor.to(device)
            model.load_state_dict(state, strict=False, assign=True)
            if quantizer is not None:
                quantizer.quantize_group(model, group)
            del state
    if quantizer is not None:
        quantizer.mark(model)
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
