"""Fine-tuning OmniGen: JSONL datasets, the training collator, the rectified-flow loss and the trainer.

    from omnigen.training import JsonlDataset, TrainConfig, train
    result = train(model, vae, processor, JsonlDataset("data.jsonl"), TrainConfig(out_dir="runs/x", steps=2000))
"""

from .collator import TrainingBatch, TrainingCollator
from .dataset import DatasetError, Example, JsonlDataset
from .loss import edit_weight_map, flow_matching_loss, noisy_latents
from .trainer import (TrainConfig, TrainResult, latest_checkpoint, list_checkpoints, prepare_model, read_loss_log,
                      train, trainable_parameters)

__all__ = ["DatasetError", "Example", "JsonlDataset", "TrainConfig", "TrainResult", "TrainingBatch",
           "TrainingCollator", "edit_weight_map", "flow_matching_loss", "latest_checkpoint", "list_checkpoints",
           "noisy_latents", "prepare_model", "read_loss_log", "train", "trainable_parameters"]
