"""Fine-tuning OmniGen: datasets (JSONL, image folders, studio rows), the training collator, the rectified-flow
loss, the trainer (every weight or a LoRA adapter) and `python -m omnigen train`.

    from omnigen.training import JsonlDataset, TrainConfig, train
    result = train(model, vae, processor, JsonlDataset("data.jsonl"), TrainConfig(out_dir="runs/x", steps=2000))

    from omnigen.training import LoraSettings, TrainConfig, train_lora
    result = train_lora(pipe, "data.jsonl", TrainConfig(out_dir="adapters/x", steps=500, lora=LoraSettings(rank=8)))
    pipe.load_lora(result.adapter)
"""

from .checkpoints import latest_checkpoint, list_checkpoints
from .collator import TrainingBatch, TrainingCollator
from .config import LORA_TARGETS, LoraSettings, TrainConfig, TrainResult
from .dataset import (DatasetError, Example, ImageFolderDataset, JsonlDataset, RowsDataset, StudioRow,
                      open_training_data)
from .lora_training import train_lora
from .loss import edit_weight_map, flow_matching_loss, noisy_latents
from .loss_log import read_loss_log
from .trainable import prepare_model, trainable_parameters
from .trainer import train

__all__ = ["DatasetError", "Example", "ImageFolderDataset", "JsonlDataset", "LORA_TARGETS", "LoraSettings",
           "RowsDataset", "StudioRow", "TrainConfig", "TrainResult", "TrainingBatch", "TrainingCollator",
           "edit_weight_map", "flow_matching_loss", "latest_checkpoint", "list_checkpoints", "noisy_latents",
           "open_training_data", "prepare_model", "read_loss_log", "train", "train_lora", "trainable_parameters"]
