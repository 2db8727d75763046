"""Training examples: the `Example` record and the official OmniGen fine-tuning JSONL format.

One JSON object per line:

    {"instruction": "<img><|image_1|></img> make the sky red", "input_images": ["in/0.png"],
     "output_image": "out/0.png"}

`input_images` may be missing, null or empty (text-to-image). Paths are relative to `image_root`
(by default the folder of the JSONL file). Blank lines are ignored. `JsonlDataset.validate()` checks
every line before training starts and reports every problem as "file:line: what is wrong".

Two more finite sources, validated the same way (`open_training_data` picks one):

- `ImageFolderDataset`: a folder of images, each with a same-named .txt holding its instruction
  (text-to-image pairs: `cat.png` + `cat.txt`). Problems are reported as "folder/cat.png: ...".
- `RowsDataset`: rows built in the studio, `(instruction, [input images], output image)` with each
  image a path or a PIL image. Problems are reported as "row 3: ...", counted from 1.

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

from ..images import load_image
from ..processor import parse_image_tags

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

    def __init__(self, jsonl_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 confined: bool = False):
        """`confined`: every image must lie inside `image_root` (no '..', absolute paths or links out of it),
        for data that came from outside, such as an upload: its paths must not name the server's files."""
        self.path = Path(jsonl_path)
        self.confined = confined
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

    @property
    def validated(self) -> bool:
        return self._records is not None

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
        if self.confined and not path.resolve().is_relative_to(self.image_root.resolve()):  # before touching it
            return (f"{role} {relative_path!r} is outside the dataset's folder; name each image by its path "
                    "inside the upload")
        return image_file_problem(role, relative_path, path)


def image_file_problem(role: str, shown: str, path: Path) -> str | None:
    """What is wrong with an image file (missing, unreadable), or None; `shown` is how the user wrote it."""
    if not path.is_file():
        return f"{role} {shown!r} not found (looked for {str(path)!r})"
    try:
        with Image.open(path) as picture:
            picture.verify()  # reads the whole file's structure without decoding the pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{role} {shown!r} is not a readable image ({error})"
    return None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageFolderDataset:
    """Text-to-image pairs from a folder: every image with a same-named .txt that holds its instruction."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder)
        if not self.path.is_dir():
            raise FileNotFoundError(f"training image folder not found: {str(self.path)!r}; check the path")
        self._pairs: list[tuple[Path, str]] | None = None

    def validate(self) -> "ImageFolderDataset":
        """Check every image and text file; raise one DatasetError listing all problems, by file name."""
        files = sorted(p for p in self.path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        image_stems = {p.stem for p in images}
        pairs, problems = [], []
        for image in images:
            text_file = image.with_suffix(".txt")
            image_problems = [problem] if (problem := image_file_problem("image", image.name, image)) else []
            instruction, text_problem = self._read_instruction(text_file)
            image_problems += [text_problem] if text_problem else []
            problems.extend(f"{self.path / image.name}: {p}" for p in image_problems)
            if not image_problems:
                pairs.append((image, instruction))
        for text_file in (p for p in files if p.suffix.lower() == ".txt" and p.stem not in image_stems):
            problems.append(f"{text_file}: no image named {text_file.stem}.png (or .jpg, .jpeg, .webp, .bmp) "
                            "next to it; add the image or remove the text file")
        if not problems and not pairs:
            problems.append(f"{self.path}: no images ({', '.join(IMAGE_SUFFIXES)}) with .txt instructions in the "
                            "folder")
        if problems:
            raise DatasetError(self.path, problems)
        self._pairs = pairs
        return self

    def _read_instruction(self, text_file: Path) -> tuple[str, str | None]:
        if not text_file.is_file():
            return "", f"no instruction: add {text_file.name} with the text that describes the image"
        try:
            instruction = text_file.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as error:
            return "", f"{text_file.name} is not UTF-8 text ({error}); save it as UTF-8"
        if not instruction:
            return "", f"{text_file.name} is empty; write the image's instruction into it"
        try:
            parse_image_tags(instruction, 0)
        except ValueError as error:
            return "", (f"{text_file.name} refers to input images, which a folder of text-to-image pairs cannot "
                        f"give ({error}); use a JSONL file for examples with input images")
        return instruction, None

    @property
    def validated(self) -> bool:
        return self._pairs is not None

    def _checked_pairs(self) -> list[tuple[Path, str]]:
        if self._pairs is None:
            self.validate()
        return self._pairs

    def __len__(self) -> int:
        return len(self._checked_pairs())

    def __getitem__(self, index: int) -> Example:
        image, instruction = self._checked_pairs()[index]
        try:
            return Example(instruction, [], load_image(image))
        except ValueError as error:
            raise DatasetError(self.path, [f"{image}: {error}"]) from None

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


# A studio row: (instruction, [input images], output image), each image a path or a PIL image.
StudioRow = tuple[str, Sequence[Union[str, os.PathLike, Image.Image]], Union[str, os.PathLike, Image.Image]]


class RowsDataset:
    """Rows built in the studio: (instruction, [input images], output image); images are paths or PIL images.

    Relative paths are read from `image_root` (by default the working folder). Dicts with the JSONL keys
    ("instruction", "input_images", "output_image") are accepted as rows too.
    """

    def __init__(self, rows: Sequence[StudioRow | dict], image_root: str | os.PathLike | None = None,
                 name: str = "the studio rows"):
        self.rows = list(rows)
        self.image_root = Path(image_root) if image_root is not None else None
        self.name = name
        self._examples: list[tuple[str, list, Any]] | None = None

    def validate(self) -> "RowsDataset":
        """Check every row; raise one DatasetError listing all problems as "row N: ...", counted from 1."""
        examples, problems = [], []
        for number, row in enumerate(self.rows, start=1):
            parts, row_problems = self._check_row(row)
            problems.extend(f"row {number}: {problem}" for problem in row_problems)
            if not row_problems:
                examples.append(parts)
        if not problems and not examples:
            problems.append("there are no rows; add at least one example")
        if problems:
            raise DatasetError(self.name, problems)
        self._examples = examples
        return self

    def _check_row(self, row: Any) -> tuple[tuple | None, list[str]]:
        if isinstance(row, dict):
            row = (row.get("instruction"), row.get("input_images"), row.get("output_image"))
        if not isinstance(row, (tuple, list)) or len(row) != 3:
            return None, ["expected (instruction, [input images], output image), got "
                          f"{type(row).__name__} of length {len(row) if hasattr(row, '__len__') else '?'}"]
        instruction, inputs, output = row
        inputs = [] if inputs is None else inputs
        problems = []
        if not isinstance(instruction, str) or not instruction.strip():
            problems.append(f"the instruction must be non-empty text, got {_describe_object(instruction)}")
        if isinstance(inputs, (str, os.PathLike, Image.Image)) or not isinstance(inputs, (list, tuple)):
            problems.append("the input images must be a list (empty for text-to-image), got "
                            f"{_describe_object(inputs)}")
            inputs = []
        elif isinstance(instruction, str) and instruction.strip():
            try:
                parse_image_tags(instruction, len(inputs))
            except ValueError as error:
                problems.append(f"instruction and input images do not match: {error}")
        images = [(f"input image {k}", image) for k, image in enumerate(inputs, start=1)]
        if output is None:
            problems.append("no output image: add the target picture")
        else:
            images.append(("output image", output))
        problems.extend(problem for role, image in images if (problem := self._image_problem(role, image)))
        return (instruction, list(inputs), output), problems

    def _image_problem(self, role: str, image: Any) -> str | None:
        if isinstance(image, Image.Image):
            return None
        if not isinstance(image, (str, os.PathLike)) or not os.fspath(image):
            return f"{role} must be a file path or a PIL image, got {_describe_object(image)}"
        return image_file_problem(role, os.fspath(image), self._resolve(image))

    def _resolve(self, image: str | os.PathLike) -> Path:
        path = Path(image)
        return self.image_root / path if self.image_root is not None and not path.is_absolute() else path

    @property
    def validated(self) -> bool:
        return self._examples is not None

    def __len__(self) -> int:
        if self._examples is None:
            self.validate()
        return len(self._examples)

    def __getitem__(self, index: int) -> Example:
        if self._examples is None:
            self.validate()
        instruction, inputs, output = self._examples[index]
        read = lambda image: load_image(image if isinstance(image, Image.Image) else self._resolve(image))  # noqa: E731
        try:
            return Example(instruction, [read(image) for image in inputs], read(output))
        except ValueError as error:
            raise DatasetError(self.name, [f"row {index + 1}: {error}"]) from None

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]


def open_training_data(data: Any, image_root: str | os.PathLike | None = None) -> Any:
    """The dataset for what a user gave: a .jsonl path (images under `image_root`, by default its folder), a
    folder of images with .txt instructions, a list of studio rows, or Examples (a list or an iterable)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            return ImageFolderDataset(path)
        if path.is_file():
            return JsonlDataset(path, image_root)
        raise FileNotFoundError(f"training data {str(path)!r} not found: give a .jsonl file or a folder of images "
                                "with same-named .txt instructions")
    if isinstance(data, (list, tuple)) and data and not all(isinstance(item, Example) for item in data):
        return RowsDataset(data, image_root)
    if isinstance(data, (list, tuple)) and not data:
        raise ValueError("the training data is empty; give at least one example")
    return data


def _describe_object(value: Any) -> str:
    if isinstance(value, Image.Image):
        return "a PIL image"
    return f"{type(value).__name__} {str(value)[:60]!r}"


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return f"{type(value).__name__} {text[:60]}"


def is_finite_dataset(data: Any) -> bool:
    """True for data the trainer can index and reuse every epoch (a list, a JsonlDataset, ...)."""
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, dict))
