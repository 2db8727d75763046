"""LoRA adapters for the OmniGen transformer: attach, save, load, scale, merge, unload (with peft).

    add_lora(model, "style", rank=8)                      # a new trainable adapter; the base is frozen
    save_lora(model, "loras/style", "style")              # adapter_config.json + adapter_model.safetensors
    name = load_lora(model, "loras/style", scale=0.8)     # several at once, each under its own name
    set_lora_scales(model, {name: 0.5}); merge_lora(model); unmerge_lora(model); unload_lora(model)

Adapters are peft LoRA layers (`peft.inject_adapter_in_model`) wrapped around the decoder's linear
layers, so `llm.layers.N.self_attn.qkv_proj` stays where it is. A folder is laid out as peft saves it,
with the keys the official OmniGen fine-tuning script writes
(`base_model.model.llm.layers.0.self_attn.qkv_proj.lora_A.weight`): its adapters load as they are, and
ours load with `peft.PeftModel.from_pretrained` (what the official pipeline's `merge_lora` does).

While adapters are attached, `model.state_dict()` holds exactly the official checkpoint keys and
shapes (adapter weights left out, `base_layer.` taken out of the names), so `save_transformer` writes a
clean model folder and `load_state_dict` takes an official checkpoint. After `merge_lora` the base
weights carry the merged adapters: `merge_lora` then `save_transformer` exports a merged model.
Adapter weights travel through `save_lora` / `load_lora` (or `adapter_state_dict`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from torch import nn

from .files import atomic_folder, atomic_write_text
from .weights import ModelFolderError, atomic_save_file, resolve_model_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what peft's save_pretrained writes before each module name
ATTENTION_TARGETS = ("qkv_proj", "o_proj")  # what the official OmniGen fine-tuning adapts
MLP_TARGETS = ("gate_up_proj", "down_proj")
# The base model's shapes, kept in the weights file's metadata: adapter_config.json stays plain peft.
FINGERPRINT_KEY = "omnigen_base_model"
FINGERPRINT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "intermediate_size", "vocab_size")
# peft options that compute something other than plain LoRA on linear layers: refused, not half-applied.
UNSUPPORTED_OPTIONS = ("use_dora", "lora_bias", "fan_in_fan_out", "modules_to_save", "layer_replication",
                       "target_parameters", "trainable_token_indices", "use_bdlora", "alora_invocation_tokens")
PEFT_DEFAULTS = {"r": 8, "lora_alpha": 8, "use_rslora": False, "lora_dropout": 0.0}  # what peft assumes when unsaid
_WEIGHT_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])\.weight")
_ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]+")
_STATE_ATTR = "_lora_state"


class LoraAdapterError(ValueError):
    """An adapter that cannot be read or does not fit the model; the model was left as it was."""


@dataclass
class Adapter:
    """One attached adapter: its adapter_config.json contents, its scale and whether it is being trained."""

    config: dict
    scale: float = 1.0
    trainable: bool = False


@dataclass
class LoraState:
    """What the LoRA layers of a model should do; `sync` makes every layer follow it."""

    adapters: dict[str, Adapter] = field(default_factory=dict)
    enabled: bool = True
    merged: bool = False


@dataclass
class LoraFile:
    """An adapter folder as read from disk, before it touches any model."""

    folder: Path
    config: dict
    weights: dict[str, dict[str, torch.Tensor]]  # module name -> {"A": (r, in), "B": (out, r)}
    base: dict | None  # the base model's shapes, when the adapter recorded them


# ----------------------------------------------------------------------------- attaching adapters


def add_lora(model: nn.Module, name: str = "default", rank: int = 8, alpha: float | None = None,
             targets: tuple[str, ...] | list[str] = ATTENTION_TARGETS, dropout: float = 0.0) -> None:
    """Attach a new trainable adapter (B = 0, so the output is unchanged until it learns) and freeze the base.

    `targets` are names of linear layers, matched as peft does (`qkv_proj` matches every
    `llm.layers.N.self_attn.qkv_proj`); add MLP_TARGETS to adapt the feed-forward layers too. `alpha`
    defaults to `rank`, as in the official fine-tuning script.
    """
    check_new_name(model, name)
    if isinstance(targets, str):
        targets = (targets,)
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a whole number of at least 1, got {rank!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    state = lora_state(model)
    if state is not None and state.merged:
        raise ValueError("adapters are merged into the base weights: call unmerge_lora before adding a trainable one")
    modules = modules_for_targets(model, targets)
    config = new_adapter_config(rank, rank if alpha is None else alpha, targets, dropout)
    attach(model, name, config, modules, weights=None, scale=1.0, trainable=True)


def new_adapter_config(rank: int, alpha: float, targets, dropout: float) -> dict:
    """adapter_config.json of a new adapter: only keys that every peft version knows (an older one may refuse
    keys it does not know, and the official OmniGen code pins peft 0.13.2), set as its fine-tuning sets them."""
    return {"peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": alpha, "target_modules": sorted(targets),
            "lora_dropout": dropout, "bias": "none", "fan_in_fan_out": False, "init_lora_weights": "gaussian",
            "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None,
            "inference_mode": False, "base_model_name_or_path": None, "revision": None}


def load_lora(model: nn.Module, path: str | os.PathLike, name: str | None = None, scale: float = 1.0,
              trainable: bool = False) -> str:
    """Attach the adapter in `path` (a folder, its adapter_model.safetensors, or a Hub repo id) and return
    its name (by default the folder's). An adapter that does not fit this model raises LoraAdapterError
    saying what differs, before anything in the model changes. `trainable` makes it learn (base frozen)."""
    scale = check_scale(name or str(path), scale)
    lora = read_lora_folder(path)
    if name is None:
        name = free_name(model, default_adapter_name(path))
    check_new_name(model, name)
    weights = match_adapter(model, lora)
    attach(model, name, lora.config, sorted(weights), weights=weights, scale=scale, trainable=trainable)
    return name


def load_lora_weights(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Copy a saved adapter's weights into the attached adapter `name`, which must have the same modules,
    ranks and alpha: resuming a training run keeps the very parameters its optimizer holds."""
    lora = read_lora_folder(path)
    weights = match_adapter(model, lora)
    mine = require_state(model).adapters.get(name)
    if mine is None:
        raise ValueError(f"no LoRA adapter named {name!r}; attached: {', '.join(lora_scales(model))}")
    attached = {m for m, layer in lora_layers(model).items() if name in layer.lora_A}
    differ = [f"modules ({len(weights)} saved, {len(attached)} attached)"] if set(weights) != attached else []
    for key in ("r", "lora_alpha", "use_rslora"):
        saved, own = config_value(lora.config, key), config_value(mine.config, key)
        differ += [f"{key} ({saved} saved, {own} attached)"] if saved != own else []
    if differ:
        raise LoraAdapterError(f"{lora.folder} is not a saved state of adapter {name!r}: "
                               f"its {', '.join(differ)} differ")
    unmerge_layers(model)  # merged deltas must come out with the weights that put them in
    copy_weights(model, name, weights)
    sync(model)


def attach(model: nn.Module, name: str, config: dict, modules: list[str],
           weights: dict[str, dict[str, torch.Tensor]] | None, scale: float, trainable: bool) -> None:
    """Inject adapter `name` into exactly `modules`, fill in `weights`, and record it; undone if anything fails."""
    state = lora_state(model) or LoraState()
    model.__dict__[_STATE_ATTR] = state  # a plain attribute: not a parameter, not in state_dict
    unmerge_layers(model)
    try:
        inject_adapter_in_model(injection_config(config, modules, init=weights is None), model, adapter_name=name)
        model.__dict__.pop("peft_config", None)  # peft's note of the last injection only; LoraState is the record
        for layer in lora_layers(model).values():
            keep_official_keys(layer)
        if weights is not None:
            copy_weights(model, name, weights)
        state.adapters[name] = Adapter(config=config, scale=scale, trainable=trainable)
    except BaseException:
        remove_adapter(model, name)
        if not state.adapters:
            model.__dict__.pop(_STATE_ATTR, None)
        else:
            sync(model)
        raise
    sync(model)
    if trainable:  # only adapters learn, whatever the base did before
        for param_name, param in model.named_parameters():
            if ".lora_" not in param_name:
                param.requires_grad_(False)


def injection_config(config: dict, modules: list[str], init: bool) -> LoraConfig:
    """The peft config that puts this adapter on exactly `modules`, with its ranks, alphas and scaling rule."""
    return LoraConfig(r=config_value(config, "r"), lora_alpha=config_value(config, "lora_alpha"),
                      target_modules=list(modules), rank_pattern=dict(config.get("rank_pattern") or {}),
                      alpha_pattern=dict(config.get("alpha_pattern") or {}),
                      use_rslora=bool(config_value(config, "use_rslora")),
                      lora_dropout=config_value(config, "lora_dropout"),
                      init_lora_weights=config.get("init_lora_weights", True) if init else False)


def config_value(config: dict, key: str):
    value = config.get(key)
    return PEFT_DEFAULTS[key] if value is None else value


def copy_weights(model: nn.Module, name: str, weights: dict[str, dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for module_name, parts in weights.items():
            layer = model.get_submodule(module_name)
            layer.lora_A[name].weight.copy_(parts["A"])
            layer.lora_B[name].weight.copy_(parts["B"])


# ----------------------------------------------------------------------------- scales, merging, removal


def set_lora_scales(model: nn.Module, scales: dict[str, float]) -> None:
    """Set the scale of each named adapter (0 switches it off; others keep theirs)."""
    state = require_state(model)
    unknown = [n for n in scales if n not in state.adapters]
    if unknown:
        raise ValueError(f"no LoRA adapter named {', '.join(map(repr, unknown))}; loaded: {', '.join(state.adapters)}")
    checked = {n: check_scale(n, s) for n, s in scales.items()}
    for n, s in checked.items():
        state.adapters[n].scale = s
    sync(model)


def lora_scales(model: nn.Module) -> dict[str, float]:
    """Every attached adapter and its scale."""
    state = lora_state(model)
    return {n: a.scale for n, a in state.adapters.items()} if state else {}


def active_lora_scales(model: nn.Module) -> dict[str, float]:
    """The adapters that change the output now: enabled, with a scale other than 0."""
    state = lora_state(model)
    if state is None or not state.enabled:
        return {}
    return {n: a.scale for n, a in state.adapters.items() if a.scale != 0.0}


def disable_lora(model: nn.Module) -> None:
    """Switch every adapter off (the model computes the base output); their scales are kept for enable_lora."""
    set_enabled(model, False)


def enable_lora(model: nn.Module) -> None:
    set_enabled(model, True)


def set_enabled(model: nn.Module, enabled: bool) -> None:
    state = lora_state(model)
    if state is not None:
        state.enabled = enabled
        sync(model)


def merge_lora(model: nn.Module) -> None:
    """Add the active adapters, at their scales, into the base weights: the forward pass costs what the base
    costs. Changing scales or adapters later keeps them merged. In bf16/fp16 `unmerge_lora` restores the base
    only up to rounding; in fp32 to about 1e-7."""
    require_state(model).merged = True
    sync(model)


def unmerge_lora(model: nn.Module) -> None:
    state = lora_state(model)
    if state is not None:
        state.merged = False
        sync(model)


def is_lora_merged(model: nn.Module) -> bool:
    return any(layer.merged for layer in lora_layers(model).values())


def unload_lora(model: nn.Module, name: str | None = None) -> None:
    """Remove one adapter (or all): merged weights are taken out first, and a layer left with no adapter is
    the original nn.Linear again."""
    state = lora_state(model)
    if state is None:
        if name is None:
            return
        raise ValueError(f"no LoRA adapter named {name!r} is loaded")
    if name is not None and name not in state.adapters:
        raise ValueError(f"no LoRA adapter named {name!r}; loaded: {', '.join(state.adapters)}")
    unmerge_layers(model)
    for n in list(state.adapters) if name is None else [name]:
        remove_adapter(model, n)
        del state.adapters[n]
    if state.adapters:
        sync(model)
    else:
        model.__dict__.pop(_STATE_ATTR, None)


def remove_adapter(model: nn.Module, name: str) -> None:
    for module_name, layer in lora_layers(model).items():
        if name not in layer.lora_A:
            continue
        layer.set_adapter([a for a in layer.active_adapters if a != name])
        layer.delete_adapter(name)
        if not layer.lora_A:
            parent_name, _, child = module_name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, layer.get_base_layer())


def sync(model: nn.Module) -> None:
    """Make every LoRA layer follow the model's LoraState: which adapters run, their scales, which ones
    learn, and whether they sit merged in the base weights."""
    state = require_state(model)
    unmerge_layers(model)  # scales and active sets may only change while nothing is merged
    layers = list(lora_layers(model).values())
    active = [n for n, a in state.adapters.items() if state.enabled and a.scale != 0.0]
    trainable = [n for n, a in state.adapters.items() if a.trainable]
    for layer in layers:
        layer.set_adapter(active)
        for n, adapter in state.adapters.items():
            layer.set_scale(n, adapter.scale)
        for part in (layer.lora_A, layer.lora_B):  # after set_adapter, which makes every active one trainable
            for n, module in part.items():
                module.requires_grad_(n in trainable)
        if state.merged:
            layer.merge()


def unmerge_layers(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        if layer.merged:
            layer.unmerge()


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_state(model: nn.Module) -> LoraState | None:
    return model.__dict__.get(_STATE_ATTR)


def require_state(model: nn.Module) -> LoraState:
    state = lora_state(model)
    if state is None:
        raise ValueError("no LoRA adapter is attached to this model: load_lora or add_lora first")
    return state


# ----------------------------------------------------------------------------- the official key names


def keep_official_keys(layer: LoraLayer) -> None:
    """Make the wrapped layer save and load under the plain layer's keys (`qkv_proj.weight`, no adapter
    weights), so the model's state_dict stays the official checkpoint. Once per layer."""
    if getattr(layer, "_keeps_official_keys", False):
        return
    layer.register_state_dict_post_hook(official_state_dict)
    layer.register_load_state_dict_pre_hook(load_official_state_dict)
    layer._keeps_official_keys = True


def official_state_dict(layer: LoraLayer, state: dict, prefix: str, local_metadata: dict) -> None:
    own = [k for k in state if k.startswith(prefix)]  # this layer's keys, the last ones added
    values = [state.pop(k) for k in own]
    for key, value in zip(own, values):
        rest = key[len(prefix):]
        if rest.startswith("base_layer."):
            state[prefix + rest[len("base_layer."):]] = value


def load_official_state_dict(layer: LoraLayer, state: dict, prefix: str, local_metadata, strict, missing_keys,
                             unexpected_keys, error_msgs) -> None:
    if layer.merged:
        raise RuntimeError(f"{prefix.rstrip('.')} holds merged LoRA weights: call unmerge_lora before load_state_dict")
    for param_name in ("weight", "bias"):
        if prefix + param_name in state and prefix + "base_layer." + param_name not in state:
            state[prefix + "base_layer." + param_name] = state.pop(prefix + param_name)
    for name, tensor in layer.named_parameters():  # adapters are not part of the checkpoint: keep them as they are
        if not name.startswith("base_layer."):
            state.setdefault(prefix + name, tensor)


# ----------------------------------------------------------------------------- saving


def adapter_state_dict(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter `name`'s weights under peft's saved key names."""
    tensors = {}
    for module_name, layer in lora_layers(model).items():
        if name in layer.lora_A:
            tensors[f"{PEFT_PREFIX}{module_name}.lora_A.weight"] = layer.lora_A[name].weight
            tensors[f"{PEFT_PREFIX}{module_name}.lora_B.weight"] = layer.lora_B[name].weight
    if not tensors:
        raise ValueError(f"no LoRA adapter named {name!r}; loaded: {', '.join(lora_scales(model)) or 'none'}")
    return tensors


def save_lora(model: nn.Module, folder: str | os.PathLike, name: str | None = None,
              base_model: str | None = None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write adapter `name` (by default the only one attached) as adapter_config.json +
    adapter_model.safetensors, peft's layout. A new folder appears whole (written aside, then renamed);
    in an existing one each file is replaced atomically. `base_model` is noted as base_model_name_or_path.
    `tensors`: the adapter's weights under peft's saved names when they were gathered elsewhere (a model
    sharded across processes); by default they are read from the model."""
    if name is None:
        names = list(lora_scales(model))
        if len(names) != 1:
            raise ValueError(f"say which LoRA adapter to save: {', '.join(names) or 'none'} attached")
        name = names[0]
    tensors = adapter_state_dict(model, name) if tensors is None else tensors
    config = {**require_state(model).adapters[name].config, "inference_mode": True}  # as peft saves adapters
    if base_model is not None:
        config["base_model_name_or_path"] = base_model
    metadata = {"format": "pt", FINGERPRINT_KEY: json.dumps(base_fingerprint(model))}
    folder = Path(folder)
    if folder.exists():
        _write_adapter_files(folder, tensors, config, metadata)
    else:
        with atomic_folder(folder) as scratch:
            _write_adapter_files(scratch, tensors, config, metadata)
    return folder


def _write_adapter_files(folder: Path, tensors: dict[str, torch.Tensor], config: dict, metadata: dict) -> None:
    atomic_save_file(tensors, folder / ADAPTER_WEIGHTS, metadata=metadata)
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(config, indent=2, sort_keys=True))


def base_fingerprint(model: nn.Module) -> dict:
    config = model.config
    return {f: getattr(config, f) for f in FINGERPRINT_FIELDS}


# ----------------------------------------------------------------------------- reading and checking


def read_lora_folder(path: str | os.PathLike) -> LoraFile:
    """Read and sanity-check an adapter folder: its config, its lora_A/lora_B pairs, its base fingerprint."""
    folder = adapter_folder(path)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        pickled = [p.name for p in folder.glob("adapter_model.*") if p.suffix in (".bin", ".pt", ".pth")]
        hint = (f"; {pickled[0]} is a pickle file, which is not read (it can run code): save the adapter with "
                "safetensors" if pickled else "")
        raise LoraAdapterError(f"{folder} has no {ADAPTER_WEIGHTS}{hint}")
    if not config_path.is_file():
        raise LoraAdapterError(f"{folder} has no {ADAPTER_CONFIG}: without it the adapter's rank and alpha are unknown")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LoraAdapterError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise LoraAdapterError(f"{config_path} is not a LoRA adapter (peft_type is "
                               f"{config.get('peft_type') if isinstance(config, dict) else None!r}, not 'LORA')")
    used = [option for option in UNSUPPORTED_OPTIONS if config.get(option)]
    if used:
        raise LoraAdapterError(f"{config_path} uses {', '.join(used)}; only plain LoRA on linear layers is supported")
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # a truncated or foreign file: say which
        raise LoraAdapterError(f"{weights_path} is not a readable safetensors file ({err})") from err
    weights, strange = {}, []
    for key, tensor in tensors.items():
        match = _WEIGHT_KEY.fullmatch(key.removeprefix(PEFT_PREFIX))
        if match is None:
            strange.append(key)
            continue
        weights.setdefault(match["module"], {})[match["part"]] = tensor
    if strange:
        raise LoraAdapterError(f"{weights_path} holds weights other than LoRA pairs ({', '.join(strange[:4])}"
                               f"{', ...' if len(strange) > 4 else ''}); only lora_A/lora_B weights are supported")
    halves = [f"{m} has lora_{'B' if 'A' in parts else 'A'} missing" for m, parts in weights.items() if len(parts) != 2]
    if not weights or halves:
        raise LoraAdapterError(f"{weights_path}: " + ("; ".join(halves) if halves else "no LoRA weights"))
    try:
        base = json.loads(metadata[FINGERPRINT_KEY]) if FINGERPRINT_KEY in metadata else None
    except json.JSONDecodeError:
        base = None
    return LoraFile(folder, config, weights, base)


def match_adapter(model: nn.Module, lora: LoraFile) -> dict[str, dict[str, torch.Tensor]]:
    """The adapter's weights by module, once every one is known to fit this model: the base fingerprint,
    each target module's existence and type, and each lora_A/lora_B shape against the layer and the
    configured rank. Everything that does not fit is reported at once."""
    problems = []
    if lora.base:
        mine = base_fingerprint(model)
        differ = [f"{k} {lora.base[k]} (this model: {mine[k]})" for k in FINGERPRINT_FIELDS
                  if k in lora.base and lora.base[k] != mine[k]]
        if differ:
            problems.append("it was made for a base model with " + ", ".join(differ))
    modules = dict(model.named_modules())
    r_default, rank_pattern = config_value(lora.config, "r"), lora.config.get("rank_pattern") or {}
    for module_name, parts in sorted(lora.weights.items()):
        layer = modules.get(module_name)
        if isinstance(layer, LoraLayer):
            layer = layer.get_base_layer()
        if layer is None:
            problems.append(f"it adapts {module_name}, which this model does not have")
            continue
        if not isinstance(layer, nn.Linear):
            problems.append(f"it adapts {module_name}, a {type(layer).__name__}, not a linear layer")
            continue
        rank = pattern_value(rank_pattern, module_name, r_default)
        a, b = tuple(parts["A"].shape), tuple(parts["B"].shape)
        if a != (rank, layer.in_features) or b != (layer.out_features, rank):
            problems.append(f"{module_name}: lora_A {a} / lora_B {b}, but this model's layer needs "
                            f"({rank}, {layer.in_features}) / ({layer.out_features}, {rank}) for rank {rank}")
    if problems:
        shown = problems[:6] + ([f"... ({len(problems)} problems in all)"] if len(problems) > 6 else [])
        raise LoraAdapterError(f"LoRA adapter {lora.folder} does not fit this model: " + "; ".join(shown)
                               + ". Load it on the base model it was trained for.")
    return lora.weights


def pattern_value(patterns: dict, module_name: str, default):
    """peft's rank_pattern/alpha_pattern rule: the first key that matches the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def modules_for_targets(model: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Module names that the target names match (peft's rule: the name or its last dotted parts)."""
    linear = {n: m.get_base_layer() if isinstance(m, LoraLayer) else m for n, m in model.named_modules()
              if isinstance(m, (nn.Linear, LoraLayer))}
    linear = {n: m for n, m in linear.items() if ".base_layer" not in n and ".lora_" not in n}
    found, missing = [], []
    for target in targets:
        hits = [n for n in linear if n == target or n.endswith("." + target)]
        (found.extend(hits) if hits else missing.append(target))
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear if n.startswith("llm.")})
        raise ValueError(f"LoRA target {', '.join(map(repr, missing))} matches no linear layer of this model; "
                         f"the decoder's are {', '.join(names)}")
    return sorted(set(found))


def adapter_folder(path: str | os.PathLike) -> Path:
    local = Path(os.path.expanduser(os.fspath(path)))
    if local.is_file() and local.suffix == ".safetensors":
        return local.parent
    if local.is_dir():
        return local
    try:
        return resolve_model_dir(path)  # a Hub repo id
    except ModelFolderError as err:
        raise FileNotFoundError(f"LoRA adapter {os.fspath(path)!r} is not a folder here ({err})") from None


def default_adapter_name(path: str | os.PathLike) -> str:
    local = Path(os.fspath(path))
    stem = local.parent.name if local.suffix == ".safetensors" else local.name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "lora"


def shadows_module_attribute(name: str) -> bool:
    """peft keys its layers' ModuleDicts by the adapter name, which must not be a module attribute ('training')."""
    return hasattr(nn.ModuleDict(), name)


def free_name(model: nn.Module, name: str) -> str:
    """`name`, or `name_2`, `name_3`, ... when it is loaded already or cannot name an adapter (see check_new_name)."""
    taken = lora_scales(model)
    if name not in taken and not shadows_module_attribute(name):
        return name
    return next(f"{name}_{i}" for i in range(2, len(taken) + 3) if f"{name}_{i}" not in taken)


def check_new_name(model: nn.Module, name: str) -> None:
    if not isinstance(name, str) or not _ADAPTER_NAME.fullmatch(name):
        raise ValueError(f"a LoRA adapter name is letters, digits, '_' and '-', got {name!r}")
    if name in lora_scales(model):
        raise ValueError(f"a LoRA adapter named {name!r} is already loaded: unload it or choose another name")
    if shadows_module_attribute(name):
        raise ValueError(f"{name!r} cannot name a LoRA adapter: torch modules already use that name; choose "
                         f"another, such as '{name}_lora'")


def check_scale(name: str, scale) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"the scale of LoRA adapter {name!r} must be a finite number, got {scale!r}")
    return value
