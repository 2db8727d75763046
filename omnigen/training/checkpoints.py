"""Checkpoints of a run: out_dir/checkpoints/step-NNNNNN, each whole or absent (assembled in a hidden folder,
then renamed); listing, pruning and resuming them, the random states of every process, and the checks that a
fresh run does not mix into an old one and that a resumed run trains what its checkpoint holds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..files import atomic_folder, atomic_save, replace_folder, scratch_folder
from .config import LoraSettings, TrainConfig
from .sharding import FsdpPlan, gather_weights, load_optimizer_state, optimizer_state
from .trainable import save_model_weights

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"  # out_dir/adapter: the latest good LoRA adapter
TRAINER_STATE = "trainer_state.json"


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (their trainer_state.json, written last, exists), oldest first."""
    folder = Path(out_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if (p / TRAINER_STATE).is_file()), key=lambda p: p.name)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))


def save_checkpoint(accelerator, model: nn.Module, optimizer, scheduler, trainer_state: dict, out_dir: Path,
                    config: TrainConfig, plan: FsdpPlan | None = None, parts: tuple | None = None) -> Path:
    """Write a checkpoint into a hidden temporary folder, then rename it: a checkpoint is whole or absent.

    Every process takes part: each writes its RNG state, and under FSDP the weights (and the AdamW state, or
    each process's shard of it) are gathered from all. `parts` (vae, processor) of a full fine-tuning run
    make the checkpoint a model folder that OmniGenPipeline.from_pretrained loads as it is."""
    folder = checkpoint_dir(out_dir, trainer_state["step"])
    scratch = scratch_folder(folder)  # a fixed name: every process writes into the same folder
    main, rank = accelerator.is_main_process, accelerator.process_index
    if main:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), scratch / f"rng_state_{rank}.pt")
    gathered, optimizer_file = None, optimizer.state_dict() if plan is None else None
    if plan is not None:
        gathered = gather_weights(model, trainable_only=config.lora is not None)
        optimizer_file = optimizer_state(model, optimizer.optimizer, plan)
        if plan.state_dict_type == "SHARDED_STATE_DICT":
            torch.save(optimizer_file, scratch / f"optimizer_{rank}.pt")
    accelerator.wait_for_everyone()
    if main:
        save_model_weights(accelerator.unwrap_model(model), scratch, config, gathered)
        if parts is not None:
            write_model_parts(scratch, *parts)
        if plan is None or plan.state_dict_type == "FULL_STATE_DICT":
            torch.save(optimizer_file, scratch / "optimizer.pt")
        torch.save(scheduler.state_dict(), scratch / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), scratch / "scaler.pt")
        (scratch / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
        replace_folder(scratch, folder)  # a re-run of the same step: the old one goes only once the new is in
        _prune_checkpoints(out_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return folder


def write_model_parts(folder: Path, vae, processor) -> None:
    """The tokenizer files and vae/ beside config.json + model.safetensors: a complete model folder."""
    processor.tokenizer.save_pretrained(folder)
    vae.save_pretrained(folder / "vae", safe_serialization=True)


def copy_adapter(checkpoint: Path, target: Path) -> None:
    """A LoRA checkpoint's adapter files into `target`: a new folder appears whole, and in an existing one each
    file is replaced atomically, so a reader (or a kill) never meets half an adapter."""
    from ..lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    def copy_into(folder: Path) -> None:
        for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            atomic_save(folder / name, lambda temporary, name=name: shutil.copyfile(checkpoint / name, temporary))

    if target.exists():
        copy_into(target)
    else:
        with atomic_folder(target) as scratch:
            copy_into(scratch)


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_training_state(folder: Path, accelerator, model: nn.Module, optimizer, scheduler,
                        plan: FsdpPlan | None) -> dict:
    """Restore optimizer, scheduler and scaler (the weights were restored before the model was prepared, see
    `load_model_weights`); returns the trainer state (step, elapsed_s). The RNG states are restored by
    `load_rng_state` once the data stream is positioned (it may draw from them)."""
    read = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    if plan is None:
        optimizer.load_state_dict(read(folder / "optimizer.pt"))
    else:
        sharded = not (folder / "optimizer.pt").is_file()  # as it was saved (check_resumable: by as many)
        main = accelerator.is_main_process
        state = (read(folder / f"optimizer_{accelerator.process_index}.pt") if sharded
                 else read(folder / "optimizer.pt") if main else {})
        load_optimizer_state(model, optimizer.optimizer, state, sharded)
    scheduler.load_state_dict(read(folder / "scheduler.pt"))
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(read(folder / "scaler.pt"))
    return json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))


def load_rng_state(folder: Path, rank: int) -> None:
    rng_file = folder / f"rng_state_{rank}.pt"
    if rng_file.is_file():
        restore_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))


def check_out_dir(out_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to mix a fresh run into an old one."""
    latest = latest_checkpoint(out_dir)
    if resume:
        return latest
    if latest is not None:
        raise ValueError(f"{out_dir} already holds checkpoints of a run (latest {latest.name}); pass resume=True "
                         "to continue it, or choose another out_dir")
    if (out_dir / ADAPTER).exists():
        raise ValueError(f"{out_dir} already holds an adapter ({out_dir / ADAPTER}); choose another out_dir, or "
                         "move that adapter away before training a new one there")
    return None


def saved_lora_settings(checkpoint: Path) -> LoraSettings | None:
    """The LoRA settings a checkpoint was trained with (None: every weight was trained)."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    saved = state.get("config", {}).get("lora")
    return LoraSettings(**saved) if saved else None


MODEL_SHAPE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
               "vocab_size", "patch_size", "in_channels")


def run_record(model: nn.Module, plan: FsdpPlan | None, num_processes: int) -> dict:
    """What trainer_state.json notes of the model and the sharding, for `check_resumable`."""
    config = model.config.to_dict()
    return {"model": {k: config.get(k) for k in MODEL_SHAPE},
            "sharding": {**(plan.describe() if plan else {"fsdp": None, "state_dict_type": None}),
                         "num_processes": num_processes}}


def check_resumable(checkpoint: Path, config: TrainConfig, model: nn.Module, plan: FsdpPlan | None,
                    num_processes: int) -> None:
    """Before any step: a resumed run trains what its checkpoint holds (`check_same_kind_of_run`), a model of the
    same shape, and reads the optimizer state the way it was written (FSDP or not; a sharded AdamW state by as
    many processes)."""
    check_same_kind_of_run(checkpoint, config)
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    now = run_record(model, plan, num_processes)
    saved_model = state.get("model")
    if saved_model is not None and saved_model != now["model"]:
        differ = ", ".join(f"{k} {saved_model.get(k)} there, {now['model'][k]} here" for k in MODEL_SHAPE
                           if saved_model.get(k) != now["model"][k])
        raise ValueError(f"{checkpoint} belongs to another model ({differ}); resume with the --model that run "
                         "trained, or start a new run in another out_dir")
    saved = state.get("sharding")
    if saved is None:
        return
    how = lambda s: f"FSDP {s['fsdp']}" if s["fsdp"] else "without FSDP (one process or DDP)"  # noqa: E731
    if bool(saved["fsdp"]) != bool(now["sharding"]["fsdp"]):
        raise ValueError(f"{checkpoint} was written by a run {how(saved)}, and this run is launched "
                         f"{how(now['sharding'])}: their optimizer states are laid out differently. Launch it as "
                         "that run was, or start a new run from the checkpoint's weights in another out_dir")
    if saved["state_dict_type"] == "SHARDED_STATE_DICT" and saved["num_processes"] != num_processes:
        raise ValueError(f"{checkpoint} holds an AdamW state sharded across {saved['num_processes']} processes "
                         f"(SHARDED_STATE_DICT); resume it with {saved['num_processes']} processes, not "
                         f"{num_processes} (FULL_STATE_DICT checkpoints resume on any number)")


def check_same_kind_of_run(checkpoint: Path, config: TrainConfig) -> None:
    """A resumed run must train what the checkpoint holds: LoRA or not, with the same rank, alpha and layers."""
    saved, wanted = saved_lora_settings(checkpoint), config.lora
    describe = lambda s: ("every weight" if s is None else  # noqa: E731
                          f"a LoRA of rank {s.rank}, alpha {s.effective_alpha}, targets {'+'.join(s.target_modules())}")
    shape = lambda s: None if s is None else (s.rank, s.effective_alpha, sorted(s.target_modules()))  # noqa: E731
    same = shape(saved) == shape(wanted)
    if not same:
        raise ValueError(f"{checkpoint} trained {describe(saved)}, but this run asks for {describe(wanted)}; resume "
                         "with the run's own settings, or start a new run in another out_dir")
