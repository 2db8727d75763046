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

from ..files import replace_folder, scratch_folder
from .config import LoraSettings, TrainConfig
from .trainable import load_model_weights, save_model_weights

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
                    config: TrainConfig) -> Path:
    """Write a checkpoint into a hidden temporary folder, then rename it: a checkpoint is whole or absent."""
    folder = checkpoint_dir(out_dir, trainer_state["step"])
    scratch = scratch_folder(folder)  # a fixed name: every process writes its RNG state into the same folder
    if accelerator.is_main_process:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), scratch / f"rng_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model_weights(accelerator.unwrap_model(model), scratch, config)
        torch.save(optimizer.state_dict(), scratch / "optimizer.pt")
        torch.save(scheduler.state_dict(), scratch / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), scratch / "scaler.pt")
        (scratch / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
        replace_folder(scratch, folder)  # a re-run of the same step: the old one goes only once the new is in
        _prune_checkpoints(out_dir, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return folder


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, accelerator, model: nn.Module, optimizer, scheduler, config: TrainConfig) -> dict:
    """Restore model, optimizer, scheduler and scaler; returns the trainer state (step, elapsed_s). The RNG
    states are restored by `load_rng_state` once the data stream is positioned (it may draw from them)."""
    load_model_weights(accelerator.unwrap_model(model), folder, config)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True))
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(torch.load(folder / "scaler.pt", map_location="cpu", weights_only=True))
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
