"""Training rows for the Train tab: built one by one in the page, read from an upload, or the example
(assets/examples/lora-rectangle, with its recommended settings).

A row is `[instruction, [input image files], output image file]`, exactly what
omnigen.training.RowsDataset trains on; the page keeps a list of them per session and shows each as a
thumbnail of its target. Every file a row names lies in the studio's output folder (the only folder the
page serves), under `lora-datasets/`, so thumbnails show and nothing depends on Gradio's upload cache.

An upload is one of: a .zip (holding a .jsonl with its images, or images with same-named .txt
instructions), a .jsonl with its images (matched by file name, since a browser sends no folders), or
images with their .txt files. Problems come back as one DatasetError that names the line, file or row.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

from omnigen.files import escapes_folder
from omnigen.presets import DEFAULT_EXAMPLES_DIR
from omnigen.training import DatasetError, ImageFolderDataset, JsonlDataset, RowsDataset, TrainConfig

Row = list  # [instruction: str, inputs: list[str], output: str]; lists, since gr.State round-trips them

DATASETS = "lora-datasets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_ZIP_BYTES = 2 << 30  # unpacked; a zip bomb is refused before anything is written
# The one-click example: data.jsonl, images/ and its recommended settings (omnigen/mini/lora_example.py wrote them).
EXAMPLE_DIR = DEFAULT_EXAMPLES_DIR / "lora-rectangle"
EXAMPLE_SETTINGS = "train_settings.json"


def dataset_folder(output_dir: Path, kind: str, key: str | None = None) -> Path:
    """output_dir/lora-datasets/<kind>-<key>, made if missing; a fresh one when no key is given."""
    folder = Path(output_dir) / DATASETS / f"{kind}-{key or uuid.uuid4().hex[:10]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def example_rows(output_dir: Path) -> list[Row]:
    """The one-click example's rows (assets/examples/lora-rectangle), copied once per output folder (the only
    folder the page serves): into a temporary folder first, so a page reading it never sees half of it."""
    folder = Path(output_dir) / DATASETS / "example-rectangle"
    if not (folder / "data.jsonl").is_file():
        temporary = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
        shutil.copytree(EXAMPLE_DIR, temporary, ignore=shutil.ignore_patterns(EXAMPLE_SETTINGS))
        try:
            temporary.rename(folder)
        except OSError:  # another page made it meanwhile
            shutil.rmtree(temporary, ignore_errors=True)
    return rows_from_jsonl(folder / "data.jsonl")


def example_config() -> TrainConfig:
    """The example's recommended training settings, as its folder states them (a TrainConfig's fields)."""
    settings = json.loads((EXAMPLE_DIR / EXAMPLE_SETTINGS).read_text(encoding="utf-8"))
    return TrainConfig(**{**settings, "out_dir": "unused"})


def without_folder(problems: Sequence[str], folder: Path) -> list[str]:
    """Problems as the user knows the files: 'data.jsonl:3: ...', not the server's path to them."""
    prefix = str(folder) + os.sep
    return [problem.replace(prefix, "") for problem in problems]


def problems_message(error: DatasetError, folder: Path | None = None, limit: int = 12) -> str:
    """A DatasetError as one readable paragraph: how many problems, then each, by line, file or row."""
    problems = without_folder(error.problems, folder) if folder is not None else list(error.problems)
    shown = problems[:limit]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s) in the training data: " + "; ".join(shown) + more + ". Fix them and try again."


# ----------------------------------------------------------------------------- one row from the page


def check_row(instruction: str, inputs: Sequence[str], output: str | None) -> None:
    """Raise a DatasetError ('this row: ...') for a row that cannot train; nothing is copied before."""
    try:
        RowsDataset([(instruction or "", list(inputs), output)], name="the new row").validate()
    except DatasetError as error:
        raise DatasetError("the new row", [p.replace("row 1: ", "", 1) for p in error.problems]) from None


def stored_row(instruction: str, inputs: Sequence[str], output: str, folder: Path) -> Row:
    """The row with copies of its pictures in `folder` (uploads live in a cache that is emptied)."""
    def keep(path: str) -> str:
        target = folder / f"{uuid.uuid4().hex[:8]}-{Path(path).name}"
        shutil.copyfile(path, target)
        return str(target)

    return [instruction.strip(), [keep(p) for p in inputs], keep(output)]


# ----------------------------------------------------------------------------- datasets on disk


def rows_from_jsonl(jsonl: Path, image_root: Path | None = None) -> list[Row]:
    """Every example of a JSONL file (validated: a DatasetError lists each bad line) as rows. Its images must
    lie inside its folder: a browser's upload never names the server's own files."""
    dataset = JsonlDataset(jsonl, image_root, confined=True).validate()
    rows = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            inputs = [str(dataset.image_root / p) for p in record.get("input_images") or []]
            rows.append([record["instruction"], inputs, str(dataset.image_root / record["output_image"])])
    return rows


def rows_from_image_folder(folder: Path) -> list[Row]:
    """Text-to-image rows from images with same-named .txt instructions (validated first)."""
    ImageFolderDataset(folder).validate()
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return [[p.with_suffix(".txt").read_text(encoding="utf-8").strip(), [], str(p)] for p in images]


def rows_from_folder(folder: Path) -> list[Row]:
    """A folder holding one .jsonl (with its images), or images + .txt files (possibly one folder down)."""
    jsonls = sorted(p for p in folder.rglob("*.jsonl") if not p.name.startswith("."))
    if len(jsonls) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in jsonls)
        raise DatasetError(folder, [f"found {len(jsonls)} .jsonl files ({names}); upload one dataset at a time"])
    if jsonls:
        return rows_from_jsonl(jsonls[0])
    holders = sorted({p.parent for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES})
    if not holders:
        raise DatasetError(folder, ["no .jsonl file and no images: upload a .jsonl with its images, images with "
                                    "same-named .txt instructions, or a .zip of either"])
    return [row for holder in holders for row in rows_from_image_folder(holder)]


# ----------------------------------------------------------------------------- uploads


def rows_from_upload(files: Sequence[str], folder: Path) -> list[Row]:
    """Rows from uploaded files (a .zip, or a .jsonl and images, or images and .txt files), kept in `folder`.
    Raises DatasetError naming each problem by line or file as the user named them."""
    if not files:
        raise DatasetError("the upload", ["no files: choose a .zip, or a .jsonl with its images, or images with "
                                          "their .txt instructions"])
    zips = [f for f in files if f.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise DatasetError("the upload", ["upload a .zip on its own (it holds the whole dataset)"])
    try:
        if zips:
            unpack_zip(Path(zips[0]), folder)
        else:
            copy_flat(files, folder)
        return rows_from_folder(folder)
    except DatasetError as error:
        raise DatasetError("the upload", without_folder(error.problems, folder)) from None


def copy_flat(files: Sequence[str], folder: Path) -> None:
    """Copy the uploads side by side; a .jsonl's image paths are pointed at the uploaded file of that name
    (a browser sends files, not folders, so 'images/00.png' arrives as '00.png')."""
    names = [Path(f).name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(folder, [f"two uploaded files are named {n!r}; rename one" for n in twice])
    for path in files:
        shutil.copyfile(path, folder / Path(path).name)
    for jsonl in folder.glob("*.jsonl"):
        jsonl.write_text("".join(repoint_line(line, folder) + "\n"
                                 for line in jsonl.read_text(encoding="utf-8").splitlines()), encoding="utf-8")


def repoint_line(line: str, folder: Path) -> str:
    """One JSONL line with each image path that does not exist under `folder` replaced by its file name,
    when a file of that name was uploaded. Lines that are not JSON objects stay as they are (and are then
    reported by line)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(record, dict):
        return line

    def repoint(path):
        if not isinstance(path, str) or not path:
            return path
        inside = (folder / path).resolve().is_relative_to(folder.resolve())  # an absolute path or '..' is not
        if not (inside and (folder / path).is_file()) and (folder / Path(path).name).is_file():
            return Path(path).name
        return path

    if isinstance(record.get("input_images"), list):
        record["input_images"] = [repoint(p) for p in record["input_images"]]
    if "output_image" in record:
        record["output_image"] = repoint(record["output_image"])
    return json.dumps(record)


def unpack_zip(archive: Path, folder: Path) -> None:
    """Unpack into `folder`, refusing members that would land outside it and archives too large unpacked."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            bad = [m.filename for m in members if escapes_folder(m.filename)]
            if bad:
                raise DatasetError(archive.name, [f"{name}: a path outside the archive's folder" for name in bad])
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise DatasetError(archive.name, [f"unpacks to more than {MAX_ZIP_BYTES >> 30} GB"])
            for member in members:
                zipped.extract(member, folder)
    except zipfile.BadZipFile as error:
        raise DatasetError(archive.name, [f"{archive.name} is not a readable zip file ({error})"]) from None


# ----------------------------------------------------------------------------- shown in the page


def row_caption(number: int, row: Row) -> str:
    instruction, inputs, _ = row
    text = re.sub(r"\s+", " ", instruction).strip()
    text = text if len(text) <= 90 else text[:87] + "..."
    extra = f" [+{len(inputs)} input image{'s' if len(inputs) > 1 else ''}]" if inputs else ""
    return f"{number}. {text}{extra}"


def gallery_items(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """The rows as thumbnails of their targets, captioned with their number and instruction."""
    return [(row[2], row_caption(number, row)) for number, row in enumerate(rows, start=1)]


def rows_summary(rows: Sequence[Row]) -> str:
    if not rows:
        return "No training rows yet: add rows above, upload a dataset, or load the example."
    with_inputs = sum(1 for row in rows if row[1])
    kinds = f" ({with_inputs} with input images)" if with_inputs else " (text-to-image)"
    return f"**{len(rows)} training row(s)**{kinds}. Click a thumbnail to select a row to remove."
