"""The history of each browser: every run's prompt, input pictures, page settings and results, kept in the output
folder so that it survives a reload and a restart.

    store = HistoryStore(output_dir, limit=200)
    store.add(browser, new_entry(store, browser, preset, prompt, images, ui, done))   # newest first after
    store.entries(browser)             # newest first; another browser's id sees none of them
    store.delete(browser, entry_id)    # the entry and its files

A browser is named by a random id the page keeps in gr.BrowserState (see new_browser_id); its index is
`output_dir/history/<id>.jsonl` (one entry a line, oldest first, rewritten atomically) and the copies of its
input pictures are in `output_dir/history/<id>/` (Gradio's upload cache is emptied on restart). Only the newest
`limit` entries are kept: older ones are removed with their files. Entries are JSON-able dicts.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnigen.files import atomic_write_text

if TYPE_CHECKING:
    from .jobs import DoneEvent

BROWSER_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
DEFAULT_LIMIT = 200


def new_browser_id() -> str:
    return secrets.token_urlsafe(24)


def valid_browser(browser: Any) -> str | None:
    """The id if it is one this studio could have made (it names files), else None."""
    return browser if isinstance(browser, str) and BROWSER_ID.fullmatch(browser) else None


class HistoryStore:
    """Each browser's history, on disk: input copies under `output_dir/history/<id>/` (served to the page),
    the indexes and the BrowserState key under `output_dir/.history-private/` (never served: see
    app.ui.launch_options' blocked_paths)."""

    def __init__(self, output_dir: str | Path, limit: int | None = DEFAULT_LIMIT):
        self.output_dir = Path(output_dir).resolve()
        self.folder = self.output_dir / "history"
        self.private = self.output_dir / ".history-private"
        self.limit = limit or None  # 0 or None: keep everything
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def secret(self) -> str:
        """The key gr.BrowserState encrypts the browser's id with: fixed per output folder, so ids stay readable
        after a restart."""
        path = self.private / "browser-secret"
        with self._guard:
            if not path.is_file():
                atomic_write_text(path, secrets.token_hex(16))
            return path.read_text().strip()

    def _lock(self, browser: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(browser, threading.Lock())

    def index(self, browser: str) -> Path:
        return self.private / f"{browser}.jsonl"

    def inputs_folder(self, browser: str) -> Path:
        return self.folder / browser

    def entries(self, browser: str | None) -> list[dict[str, Any]]:
        """The browser's entries, newest first ([] for no or a malformed id)."""
        return list(reversed(self._read(browser))) if valid_browser(browser) else []

    def _read(self, browser: str) -> list[dict[str, Any]]:
        try:
            lines = self.index(browser).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        kept = []
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line costs that entry, not the history
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("results"), list):
                kept.append(entry)
        return kept

    def _write(self, browser: str, entries: list[dict[str, Any]]) -> None:
        atomic_write_text(self.index(browser), "".join(json.dumps(e, default=str) + "\n" for e in entries))

    def add(self, browser: str | None, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """Append an entry, drop (with their files) those past the limit; the entries after, newest first."""
        if not valid_browser(browser):
            return [entry]
        with self._lock(browser):
            entries = self._read(browser) + [entry]
            dropped = entries[:-self.limit] if self.limit and len(entries) > self.limit else []
            entries = entries[len(dropped):]
            self._write(browser, entries)
            for old in dropped:
                self._remove_files(browser, old, entries)
        return list(reversed(entries))

    def delete(self, browser: str | None, entry_id: str) -> list[dict[str, Any]]:
        """Remove one entry and its files (results, the before picture, input copies no other entry uses)."""
        if not valid_browser(browser):
            return []
        with self._lock(browser):
            entries = self._read(browser)
            gone = [e for e in entries if e["id"] == entry_id]
            entries = [e for e in entries if e["id"] != entry_id]
            if gone:
                self._write(browser, entries)
                self._remove_files(browser, gone[0], entries)
        return list(reversed(entries))

    def _remove_files(self, browser: str, entry: dict[str, Any], remaining: list[dict[str, Any]]) -> None:
        still_used = {path for e in remaining for path in e.get("images", [])}
        paths = [r.get("path") for r in entry["results"] if isinstance(r, dict)] + [entry.get("before")]
        paths += [p for p in entry.get("images", []) if p not in still_used]
        for path in paths:
            if isinstance(path, str) and self.owns(path):
                Path(path).unlink(missing_ok=True)
        folder = self.inputs_folder(browser)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def owns(self, path: str) -> bool:
        """Whether a path is a file in the output folder (an index names nothing else, but it is checked)."""
        resolved = Path(path).resolve()
        return resolved.is_relative_to(self.output_dir) and resolved.is_file()

    def keep_input(self, browser: str | None, path: str) -> str:
        """A copy of an input picture beside the browser's index (named by its content), or the path itself
        when there is no browser to keep it for."""
        if not valid_browser(browser):
            return path
        source = Path(path)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:24]
        target = self.inputs_folder(browser) / f"{digest}{source.suffix.lower() or '.png'}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return str(target)


# ----------------------------------------------------------------------------- entries


def new_entry(store: HistoryStore, browser: str | None, preset: str, prompt: str, images: list[str],
              ui: dict[str, Any], done: "DoneEvent") -> dict[str, Any]:
    kept = [store.keep_input(browser, path) for path in images]
    return {"id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "preset": preset, "prompt": prompt,
            "images": kept, "ui": dict(ui), "before": done.before,
            "results": [{"path": r.path, "settings": r.settings} for r in done.images]}


def caption(result: dict[str, Any]) -> str:
    s = result.get("settings") or {}
    adapters = " · " + "+".join(s["loras"]) if s.get("loras") else ""
    return f"{s.get('preset') or 'prompt'} · seed {s.get('seed')} · {s.get('width')}x{s.get('height')}{adapters}"


def flat_items(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(entry id, result index) of every picture in the history gallery that is still on disk, in the entries'
    order (newest first)."""
    return [(e["id"], r) for e in entries for r, result in enumerate(e["results"])
            if isinstance(result, dict) and Path(str(result.get("path"))).is_file()]


def gallery_value(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = {e["id"]: e for e in entries}
    results = [found[e]["results"][r] for e, r in flat_items(entries)]
    return [(result["path"], caption(result)) for result in results]


def lookup(entries: list[dict[str, Any]], selection: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(entry, result) for a selection [entry id, result index], or None when it points nowhere."""
    if not selection or len(selection) != 2:
        return None
    entry_id, r = selection
    entry = next((e for e in entries if e["id"] == entry_id), None)
    if entry is None or not isinstance(r, int) or not 0 <= r < len(entry["results"]):
        return None
    return entry, entry["results"][r]
