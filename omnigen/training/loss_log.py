"""out_dir/loss.csv: the loss curve of a run, written as it goes and read back by the studio and the CLI."""

from __future__ import annotations

import csv
import os
from pathlib import Path

class LossLog:
    """out_dir/loss.csv (step, loss, lr, elapsed_s), flushed per row so a UI can plot it during the run."""

    HEADER = ["step", "loss", "lr", "elapsed_s"]

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.file = None
        if not enabled:
            return
        rows = read_loss_log(path) if resume_step is not None and path.is_file() else []
        kept = [row for row in rows if row["step"] <= resume_step] if resume_step is not None else []
        self.file = open(path, "w", newline="", encoding="utf-8")  # rows past the checkpoint are redone
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.HEADER)
        for row in kept:
            self.writer.writerow([row[name] for name in self.HEADER])
        self.file.flush()

    def write(self, step: int, loss: float, lr: float, elapsed_s: float) -> None:
        if self.file is not None:
            self.writer.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{elapsed_s:.2f}"])
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def read_loss_log(path: str | os.PathLike) -> list[dict]:
    """The rows of a loss.csv as dicts with int step and float loss, lr and elapsed_s."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"step": int(row["step"]), "loss": float(row["loss"]), "lr": float(row["lr"]),
                 "elapsed_s": float(row["elapsed_s"])} for row in csv.DictReader(f)]
