"""Which examples each micro-batch holds, on every process, from any step on.

A finite dataset (a list or JsonlDataset) is read in seeded epoch-wise permutations (`DataOrder`), optionally
grouped by length, and its micro-batches can be built by DataLoader workers (`FiniteMicroBatches`); an
iterable is read in order (`streamed_batches`). Both yield (global micro-batch number, TrainingBatch) for
this process only, starting at any optimizer step, so a resumed run continues the very same sequence.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..processor import PATCH_PIXELS
from .collator import TrainingBatch, TrainingCollator
from .config import TrainConfig, resolution_at
from .dataset import Example, is_finite_dataset
from .seeds import DATA_ORDER, DROPOUT, derived_seed

class DataOrder:
    """Which examples global micro-batch g holds: epoch-wise permutations of a finite dataset.

    With `lengths` (one sequence-length estimate per example) each epoch's permutation is cut into windows
    of GROUP_WINDOW batches, each window sorted by length before it is split into batches, and the batches
    are then shuffled: a batch pads to its longest example, so batches of like lengths waste far less work
    (a mixed set with a few long few-shot prompts trains about twice as fast). Every example still comes
    once per epoch, but the remainder that does not fill a whole batch waits for a later epoch.
    """

    GROUP_WINDOW = 50

    def __init__(self, dataset_size: int, batch_size: int, seed: int, lengths: Sequence[float] | None = None):
        if dataset_size == 0:
            raise ValueError("the training data is empty; give at least one example")
        if lengths is not None and len(lengths) != dataset_size:
            raise ValueError(f"{len(lengths)} lengths for {dataset_size} examples")
        self.size, self.batch_size, self.seed = dataset_size, batch_size, seed
        # Grouping needs at least two batches per epoch to choose from.
        self.lengths = list(lengths) if lengths is not None and dataset_size >= 2 * batch_size else None
        self._epoch, self._permutation, self._batches = -1, None, None

    def indices(self, g: int) -> list[int]:
        if self.lengths is not None:
            per_epoch = self.size // self.batch_size
            return self._grouped_batches(g // per_epoch)[g % per_epoch]
        return [self.index_at(position) for position in range(g * self.batch_size, (g + 1) * self.batch_size)]

    def index_at(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, self._epoch_permutation(epoch)
        return self._permutation[position % self.size]

    def _epoch_permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, DATA_ORDER))
        return torch.randperm(self.size, generator=generator).tolist()

    def _grouped_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            order = self._epoch_permutation(epoch)
            order = order[: len(order) // self.batch_size * self.batch_size]
            window = self.GROUP_WINDOW * self.batch_size
            batches = []
            for start in range(0, len(order), window):
                chunk = sorted(order[start: start + window], key=self.lengths.__getitem__)
                batches += [chunk[i: i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            shuffle = torch.Generator().manual_seed(derived_seed(self.seed, epoch, DATA_ORDER) + 1)
            self._epoch, self._batches = epoch, [batches[i] for i in torch.randperm(len(batches),
                                                                                      generator=shuffle).tolist()]
        return self._batches


def example_length(example: Example) -> float:
    """About how many tokens an example takes: its images' 16x16-pixel patches plus ~4 characters a token."""
    pixels = sum(image.width * image.height for image in [*example.input_images, example.output_image])
    return pixels / PATCH_PIXELS**2 + len(example.instruction) / 4


@dataclass
class BatchPlan:
    """What every process agrees on to build micro-batch g: sizes, counts, seeds and stages."""

    batch_size: int
    grad_accumulation: int
    num_processes: int
    rank: int
    seed: int
    stages: list[tuple[int, int]]

    def micro_batches(self, start_step: int, end_step: int) -> list[int]:
        """This process's global micro-batch numbers for optimizer steps start_step..end_step-1, in order."""
        per_step = self.grad_accumulation * self.num_processes
        return [g for g in range(start_step * per_step, end_step * per_step) if g % self.num_processes == self.rank]

    def step_of(self, g: int) -> int:
        return g // (self.grad_accumulation * self.num_processes)


class FiniteMicroBatches(torch.utils.data.Dataset):
    """Item g is global micro-batch g of a finite dataset; a DataLoader's workers can build them."""

    def __init__(self, data: Any, collator: TrainingCollator, plan: BatchPlan,
                 lengths: Sequence[float] | None = None):
        self.data, self.collator, self.plan = data, collator, plan
        self.order = DataOrder(len(data), plan.batch_size, plan.seed, lengths)

    def __getitem__(self, g: int) -> tuple[int, TrainingBatch]:
        indices = self.order.indices(g)
        rng = random.Random(derived_seed(self.plan.seed, g, DROPOUT))
        size = resolution_at(self.plan.stages, self.plan.step_of(g))
        return g, self.collator([self.data[i] for i in indices], size, rng, example_keys=indices)


def _unchanged(item: Any) -> Any:
    return item


def finite_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int, end_step: int,
                   num_workers: int, lengths: Sequence[float] | None = None) -> Iterator[tuple[int, TrainingBatch]]:
    source = FiniteMicroBatches(data, collator, plan, lengths)
    numbers = plan.micro_batches(start_step, end_step)
    if num_workers == 0:
        return (source[g] for g in numbers)
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=numbers, num_workers=num_workers,
                                         collate_fn=_unchanged)
    return iter(loader)


def streamed_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int,
                     end_step: int) -> Iterator[tuple[int, TrainingBatch]]:
    """Micro-batches of an iterable read in order. Every process reads the whole stream and keeps its own
    micro-batches; a resumed run first skips (now, not lazily) the examples already used."""
    examples = iter(data)
    per_step = plan.grad_accumulation * plan.num_processes
    _take(examples, start_step * per_step * plan.batch_size)
    return _stream(examples, collator, plan, range(start_step * per_step, end_step * per_step))


def _stream(examples: Iterator[Example], collator: TrainingCollator, plan: BatchPlan,
            numbers: range) -> Iterator[tuple[int, TrainingBatch]]:
    for g in numbers:
        batch = _take(examples, plan.batch_size)
        if g % plan.num_processes == plan.rank:
            rng = random.Random(derived_seed(plan.seed, g, DROPOUT))
            yield g, collator(batch, resolution_at(plan.stages, plan.step_of(g)), rng)


def _take(examples: Iterator[Example], count: int) -> list[Example]:
    taken = [example for _, example in zip(range(count), examples)]
    if len(taken) < count:
        raise ValueError("the training data ran out; pass a list or JsonlDataset (reused every epoch) or an "
                         "endless iterable of Examples")
    return taken


def make_batches(data: Any, collator: TrainingCollator, plan: BatchPlan, start_step: int, config: TrainConfig):
    if is_finite_dataset(data):
        lengths = [example_length(data[i]) for i in range(len(data))] if config.group_by_length else None
        return finite_batches(data, collator, plan, start_step, config.steps, config.num_workers, lengths)
    return streamed_batches(data, collator, plan, start_step, config.steps)
