"""Writing files and folders so that no reader ever finds half of one.

Every file the library writes over a good one goes through here: the new content is written under a
hidden temporary name in the same folder (so the rename stays on one file system), then renamed over the
target with `os.replace`, which is atomic. A failure or an interruption removes the temporary file and
leaves the old target untouched. Temporary files get the permissions a plain `open()` gives (the umask's).

    with atomic_write(path, "w") as file:          # a file object: write text or bytes into it
        json.dump(record, file)
    atomic_write_text(path, json.dumps(record))    # the same for a ready string (atomic_write_bytes for bytes)
    atomic_save(path, lambda tmp: torch.save(state, tmp))             # a writer that wants a path:
    atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))      # torch.save, safetensors' save_file,
                                                                      # PIL's save, ... (name the format:
                                                                      # the temporary name ends in .tmp)
    with atomic_folder(folder) as scratch:         # a whole folder: write into `scratch`; on success it
        model.save_pretrained(scratch)             # replaces `folder` at once (see replace_folder)
    replace_folder(scratch, folder)                # the swap alone, for a scratch folder made elsewhere
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any


def escapes_folder(name: str) -> bool:
    """Whether an archive member's name would land outside the folder it is unpacked into: an absolute path, a
    drive letter, or a '..' part (either slash counts, as zips made on Windows use backslashes)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or bool(re.match(r"[A-Za-z]:", name))


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden name beside `path` (`.<name>.<random>.tmp`), for a file that will be renamed to `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` in `mode` ("wb" or "w"); when the block ends without an error it is
    closed and renamed over `path`, otherwise removed. The parent folder is created when missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole new file: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, mode.replace("w", "x"), encoding=encoding) as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """Call `writer(temporary_path)` (e.g. `lambda tmp: torch.save(state, tmp)`), then rename the file it wrote
    over `path`; on any error the temporary file is removed and `path` keeps what it held. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        writer(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically."""
    with atomic_write(path, "w", encoding=encoding) as file:
        file.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as file:
        file.write(data)
    return Path(path)


def scratch_folder(target: str | os.PathLike) -> Path:
    """The hidden folder `.<name>.tmp` beside `target` where its next version is assembled. The name is fixed, so
    that every process of a distributed run finds the same one, and a leftover of a crashed write is reused."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp")


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished folder `source` to `target`. An existing `target` is first moved aside (to
    `.<name>.old`) and deleted only once the new one is in place: never is there no good folder at `target`
    for longer than between two renames."""
    source, target = Path(source), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


@contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty scratch folder beside `target` (see `scratch_folder`); when the block ends without an error
    the scratch folder replaces `target` (see `replace_folder`), otherwise it is deleted and `target` stays."""
    target = Path(target)
    scratch = scratch_folder(target)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        replace_folder(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
