"""Training examples: the `Example` record and the official OmniGen fine-tuning JSONL format.

One JSON object per line:

    {"instruction": "<img><|image_1|></img> make the sky red", "input_images": ["in/0.png"],
     "output_image": "out/0.png"}

`input_images` may be missing, null or empty (text-to-image). Paths are relative to `image_root`
(by default the folder of the JSONL file). Blank lines are ignored. `JsonlDataset.validate()` checks
every line before training starts and reports every problem as "file:line: what is wrong".

The trainer also accepts any other sequence of `Example` (reused every epoch) or any iterable of
`Example`, such as an endless generator of synthetic tasks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

from ..processor import load_image, parse_image_tags

# How many problems a DatasetError's message spells out; all of them are in `.problems`.
MAX_PROBLEMS_IN_MESSAGE = 100


@dataclass
class Example:
    """One training example: an instruction whose `<|image_k|>` tags refer to `input_images`, and the answer."""

    instruction: str
    input_images: list[Image.Image]
    output_image: Image.Image


TrainingData = Union[Sequence[Example], Iterable[Example]]


class DatasetError(ValueError):
    """A training dataset with bad lines; `problems` holds one "file:line: what is wrong" per problem."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path = os.fspath(path)
        self.problems = list(problems)
        shown = problems[:MAX_PROBLEMS_IN_MESSAGE]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {problem}" for problem in shown)
        tail = f"\n  ... and {more} more (see DatasetError.problems)" if more else ""
        super().__init__(f"{len(problems)} problem(s) in the training data {self.path}; fix them and start again:\n"
                         f"{lines}{tail}")


@dataclass
class _Record:
    line: int
    instruction: str
    input_images: list[str]
    output_image: str


class JsonlDataset:
    """The official OmniGen fine-tuning JSONL: a finite, indexable sequence of `Example`s read from disk."""

    def __init__(self, jsonl_path: str | os.PathLike, image_root: str | os.PathLike | None = None):
        self.path = Path(jsonl_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"training data file not found: {str(self.path)!r}; check the path")
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"image folder not found: {str(self.image_root)!r}; "
                                    "image paths in the JSONL are relative to it")
        self._records: list[_Record] | None = None

    def validate(self) -> "JsonlDataset":
        """Check every line (JSON, keys, types, image files, `<|image_k|>` tags); raise one DatasetError
        listing all problems. Returns the dataset, so `JsonlDataset(path).validate()` chains."""
        records, problems = [], []
        for line_number, text in self._lines():
            record, line_problems = self._check_line(text, line_number)
            problems.extend(f"{self.path}:{line_number}: {problem}" for problem in line_problems)
            if record is not None and not line_problems:
                records.append(record)
        if not problems and not records:
            problems.append(f"{self.path}: the file has no examples (every line is blank)")
        if problems:
            raise DatasetError(self.path, problems)
        self._records = records
        return self

    def __len__(self) -> int:
        return len(self._checked_records())

    def __getitem__(self, index: int) -> Example:
        record = self._checked_records()[index]
        try:
            inputs = [load_image(self.image_root / path) for path in record.input_images]
            output = load_image(self.image_root / record.output_image)
        except ValueError as error:  # the file changed since validate(): still say which line
            raise DatasetError(self.path, [f"{self.path}:{record.line}: {error}"]) from None
        return Example(record.instruction, inputs, output)

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]

    def _checked_records(self) -> list[_Record]:
        if self._records is None:
            self.validate()
        return self._records

    def _lines(self) -> Iterable[tuple[int, str]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            problem = f"{self.path}: the file is not UTF-8 text ({error}); save it as UTF-8"
            raise DatasetError(self.path, [problem]) from None
        for line_number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield line_number, line

    def _check_line(self, text: str, line_number: int) -> tuple[_Record | None, list[str]]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return None, [f"malformed JSON ({error.msg} at column {error.colno})"]
        if not isinstance(data, dict):
            return None, ['expected a JSON object {"instruction": ..., "output_image": ...}, '
                          f"got {type(data).__name__}"]
        problems = []
        instruction = data.get("instruction")
        if "instruction" not in data:
            problems.append('missing key "instruction"')
        elif not isinstance(instruction, str) or not instruction.strip():
            problems.append(f'"instruction" must be a non-empty string, got {_describe(instruction)}')
        input_images = data.get("input_images")
        input_images = [] if input_images is None else input_images
        if not isinstance(input_images, list) or not all(isinstance(p, str) and p for p in input_images):
            problems.append('"input_images" must be a list of image paths (or null), '
                            f'got {_describe(data.get("input_images"))}')
            input_images = []
        output_image = data.get("output_image")
        if "output_image" not in data:
            problems.append('missing key "output_image"')
        elif not isinstance(output_image, str) or not output_image:
            problems.append(f'"output_image" must be an image path, got {_describe(output_image)}')
        if isinstance(instruction, str) and instruction.strip():
            try:
                parse_image_tags(instruction, len(input_images))
            except ValueError as error:
                problems.append(f"instruction and input_images do not match: {error}")
        paths = [("input image", p) for p in input_images]
        if isinstance(output_image, str) and output_image:
            paths.append(("output image", output_image))
        problems.extend(problem for role, path in paths if (problem := self._check_image(role, path)))
        if problems:
            return None, problems
        return _Record(line_number, instruction, list(input_images), output_image), []

    def _check_image(self, role: str, relative_path: str) -> str | None:
        path = self.image_root / relative_path
        if not path.is_file():
            return f"{role} {relative_path!r} not found (looked for {str(path)!r})"
        try:
            with Image.open(path) as picture:
                picture.verify()  # reads the whole file's structure without decoding the pixels
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            return f"{role} {relative_path!r} is not a readable image ({error})"
        return None


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return f"{type(value).__name__} {text[:60]}"


def is_finite_dataset(data: Any) -> bool:
    """True for data the trainer can index and reuse every epoch (a list, a JsonlDataset, ...)."""
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, dict))
