"""Fully sharded data parallel training (FSDP): each process holds 1/N of every weight, gradient and AdamW
state, and gathers one decoder layer at a time to compute it.

FSDP is asked for the accelerate way: `accelerate launch --config_file configs/accelerate/fsdp.yaml` or
`--use_fsdp --fsdp_...` flags, whose settings reach every process as FSDP_* environment variables
(`FsdpPlan.from_env`). The trainer then shards the model itself with torch's FSDP2
(`torch.distributed.fsdp.fully_shard`), one unit per `DecoderLayer` and one for the rest, and accelerate only
launches and joins the processes, supplies autocast and averages the logged loss. Why not accelerate's own
FSDP: it shards only on GPUs (on CPU processes it trains unsharded copies, or single processes), so a CPU
test of it would prove nothing about what a GPU runs. This way the one code path runs on CPUs (gloo, the
tests) and GPUs (NCCL).

The official fine-tuning guide's options map onto FSDP2 as follows (anything else is refused by `check`):
    FULL_SHARD / SHARD_GRAD_OP   reshard_after_forward True / False (FSDP2's fsdp_reshard_after_forward too)
    TRANSFORMER_BASED_WRAP       units: each DecoderLayer (the guide's Phi3DecoderLayer is the same layer)
    FULL_STATE_DICT              checkpoints gather everything on the main process (portable)
    SHARDED_STATE_DICT           model weights still gathered (the folder must load); AdamW states per process
    use_orig_params              always: FSDP2 shards each parameter as it is
    sync_module_states           the main process's weights are broadcast after sharding
    cpu_ram_efficient_loading    only the main process reads the weights file; the others build on "meta"
    offload_params               FSDP2's CPUOffloadPolicy
    activation_checkpointing     the model's gradient checkpointing
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

LAYER_CLASSES = ("DecoderLayer", "Phi3DecoderLayer")  # ours; the official guide names the same Phi-3 layer
STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP")
STATE_DICT_TYPES = ("FULL_STATE_DICT", "SHARDED_STATE_DICT")
# accelerate writes FSDP1 strategies as names or as their enum numbers (1 FULL_SHARD, 2 SHARD_GRAD_OP, ...).
STRATEGY_NUMBERS = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD",
                    "5": "HYBRID_SHARD_ZERO2"}


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    return env.get(name, str(default)).strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class FsdpPlan:
    """What an FSDP launch asked for, in the terms of the official guide (see the module docstring)."""

    strategy: str = "FULL_SHARD"
    state_dict_type: str = "FULL_STATE_DICT"
    wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    layer_classes: tuple[str, ...] = ("DecoderLayer",)
    use_orig_params: bool = True
    sync_module_states: bool = True
    cpu_ram_efficient_loading: bool = False
    offload_params: bool = False
    activation_checkpointing: bool = False
    activation_offload: bool = False
    ignored_modules: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "FsdpPlan | None":
        """The plan of an `accelerate launch --use_fsdp ...` (or an FSDP config), or None when FSDP was not
        asked for. Not checked: call `check`."""
        env = os.environ if env is None else env
        if not _flag(env, "ACCELERATE_USE_FSDP"):
            return None
        if env.get("FSDP_VERSION", "1").strip() == "2":  # FSDP2 configs state the resharding, not a strategy
            strategy = "FULL_SHARD" if _flag(env, "FSDP_RESHARD_AFTER_FORWARD", True) else "SHARD_GRAD_OP"
        else:
            raw = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
            strategy = STRATEGY_NUMBERS.get(raw, raw)
        classes = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "DecoderLayer").split(",")
                        if c.strip())
        return cls(strategy=strategy,
                   state_dict_type=env.get("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT").strip().upper(),
                   wrap_policy=env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").strip().upper(),
                   layer_classes=classes, use_orig_params=_flag(env, "FSDP_USE_ORIG_PARAMS", True),
                   sync_module_states=_flag(env, "FSDP_SYNC_MODULE_STATES", True),
                   cpu_ram_efficient_loading=_flag(env, "FSDP_CPU_RAM_EFFICIENT_LOADING"),
                   offload_params=_flag(env, "FSDP_OFFLOAD_PARAMS"),
                   activation_checkpointing=_flag(env, "FSDP_ACTIVATION_CHECKPOINTING"),
                   activation_offload=_flag(env, "FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD"),
                   ignored_modules=env.get("FSDP_IGNORED_MODULES", "").strip())

    @property
    def reshard_after_forward(self) -> bool:
        return self.strategy == "FULL_SHARD"

    @property
    def main_process_loads(self) -> bool:
        """Only the main process reads the weights file; the others build the model on the meta device."""
        return self.cpu_ram_efficient_loading

    def problems(self) -> list[str]:
        """Each option this trainer cannot honour, with what to set instead."""
        found = []
        if self.strategy not in STRATEGIES:
            hint = ("use a DDP config (configs/accelerate/ddp.yaml) for NO_SHARD" if self.strategy == "NO_SHARD"
                    else "shard within one group of processes")
            found.append(f"fsdp_sharding_strategy {self.strategy} is not supported: use FULL_SHARD or SHARD_GRAD_OP "
                         f"({hint})")
        if self.wrap_policy != "TRANSFORMER_BASED_WRAP":
            found.append(f"fsdp_auto_wrap_policy {self.wrap_policy} is not supported: use TRANSFORMER_BASED_WRAP "
                         "(each decoder layer is one unit)")
        wrong = [c for c in self.layer_classes if c not in LAYER_CLASSES]
        if wrong or not self.layer_classes:
            found.append(f"fsdp_transformer_layer_cls_to_wrap {','.join(self.layer_classes) or '(empty)'} is not a "
                         "layer of this model: use DecoderLayer")
        if self.state_dict_type not in STATE_DICT_TYPES:
            found.append(f"fsdp_state_dict_type {self.state_dict_type} is not supported: use FULL_STATE_DICT or "
                         "SHARDED_STATE_DICT")
        if not self.use_orig_params:
            found.append("fsdp_use_orig_params false is not supported: the optimizer decays matrices only, so it "
                         "needs the original parameters; set it to true")
        if self.cpu_ram_efficient_loading and not self.sync_module_states:
            found.append("fsdp_cpu_ram_efficient_loading needs fsdp_sync_module_states true (the other processes "
                         "receive the main process's weights)")
        if self.activation_offload:
            found.append("fsdp_activation_checkpointing_offload is not supported: use fsdp_activation_checkpointing "
                         "(or --gradient-checkpointing) alone")
        if self.ignored_modules:
            found.append("fsdp_ignored_modules is not supported: every module of the model is sharded")
        return found

    def check(self) -> None:
        found = self.problems()
        if found:
            raise ValueError("this FSDP launch asks for what the trainer cannot do: " + "; ".join(found)
                             + " (configs/accelerate/fsdp.yaml is a working config; docs/training.md)")

    def describe(self) -> dict:
        """What a checkpoint records of how it was sharded."""
        return {"fsdp": self.strategy, "state_dict_type": self.state_dict_type}


def wrapped_layers(model: nn.Module) -> list[nn.Module]:
    """The units FSDP gathers one at a time: the decoder layers (whichever of LAYER_CLASSES the plan names)."""
    return [m for m in model.modules() if type(m).__name__ == "DecoderLayer"]


def shard_model(model: nn.Module, plan: FsdpPlan, device: torch.device) -> nn.Module:
    """Shard `model` in place across all processes: each decoder layer one unit, the rest the root unit. With
    sync_module_states the main process's weights (loaded or resumed there) are copied to all; a model on
    the meta device (cpu_ram_efficient_loading) is materialised first."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    if not dist.is_initialized():  # one process (accelerate joins none): FSDP over a group of one
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    on_meta = any(p.device.type == "meta" for p in model.parameters())
    main = dist.get_rank() == 0
    # Parameter names, not state_dict(): an attached LoRA keeps the state dict to the official keys.
    main_weights = {name: p.detach() for name, p in model.named_parameters()} if main else {}
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options = dict(mesh=mesh, reshard_after_forward=plan.reshard_after_forward,
                   offload_policy=CPUOffloadPolicy() if plan.offload_params else OffloadPolicy())
    for layer in wrapped_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    # A batch without input images leaves input_x_embedder unused on that process only: every process must still
    # join each reduce-scatter with the same tensors (the DDP counterpart is find_unused_parameters).
    model.set_reduce_scatter_unused_params(True)
    if on_meta:
        model.to_empty(device="cpu" if plan.offload_params else device)
    if plan.sync_module_states:
        copy_main_weights(model, main_weights)
    return model


def copy_main_weights(model: nn.Module, main_weights: dict[str, torch.Tensor]) -> None:
    """Every process's shard of each parameter, and each buffer, from the main process's whole tensors (one
    tensor at a time travels)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for name, param in model.named_parameters():
            local = param.to_local()
            whole = (main_weights[name].to(local.device, local.dtype) if name in main_weights
                     else torch.empty(param.shape, dtype=local.dtype, device=local.device))
            if isinstance(param, DTensor):
                local.copy_(distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=0).to_local())
            else:
                dist.broadcast(whole, src=0)
                local.copy_(whole)
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def gather_weights(model: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The whole weights (persistent buffers included), or only the trained parameters, on the main process's
    CPU, by parameter name; every process must call it, and the others get an empty dict. One tensor at a
    time is gathered."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    main = dist.get_rank() == 0
    gathered = {}
    for name, param in model.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        whole = param.full_tensor() if isinstance(param, DTensor) else param
        if main:
            gathered[name] = whole.detach().cpu()
    if not trainable_only and main:
        persistent = set(model.state_dict(keep_vars=True)) - set(gathered)
        gathered.update({name: b.detach().cpu() for name, b in model.named_buffers() if name in persistent})
    return gathered


def forget_unused_input_embedder(model: nn.Module, used_here: bool) -> None:
    """After a reduce-scatter: when no process's batch had input images this step, drop the input image
    embedder's gradients (the zeros `set_reduce_scatter_unused_params` stood in with), so AdamW skips it exactly
    as it does without FSDP instead of moving it on its old momentum. Every process must call it."""
    import torch.distributed as dist

    used = torch.tensor([float(used_here)], device=next(model.parameters()).device)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    if not used.item():
        for param in model.input_x_embedder.parameters():
            param.grad = None


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, plan: FsdpPlan) -> dict:
    """FULL_STATE_DICT: the whole AdamW state on the main process (others: {}); SHARDED_STATE_DICT: this
    process's shard of it, as plain tensors. Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = plan.state_dict_type == "FULL_STATE_DICT"
    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=full,
                                                                                 cpu_offload=full))
    if not full:
        state["state"] = {name: {k: _local(v) for k, v in values.items()} for name, values in state["state"].items()}
    return state


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, sharded: bool) -> None:
    """The inverse of `optimizer_state`: a full state is read by the main process and broadcast; a sharded
    one is each process's own (written by as many processes, sharded alike)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not sharded:
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    else:
        params = dict(model.named_parameters())
        state = {**state, "state": {name: {k: _like(v, params[name]) for k, v in values.items()}
                                    for name, values in state["state"].items()}}
        options = StateDictOptions(full_state_dict=False, strict=False)
    set_optimizer_state_dict(model, optimizer, state, options=options)


def _local(value):
    from torch.distributed.tensor import DTensor

    return value.to_local().cpu() if isinstance(value, DTensor) else value


def _like(value, param):
    """A saved shard as a DTensor laid out like `param` (AdamW's moments); scalars (the step) stay as they are."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor) or not torch.is_tensor(value) or value.shape != param.to_local().shape:
        return value
    return DTensor.from_local(value.to(param.device), param.device_mesh, param.placements, run_check=False,
                              shape=param.shape, stride=param.stride())
