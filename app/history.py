"""The session history: every run's prompt, images, page settings and results, as plain JSON-able dicts.

It lives in a gr.State (per browser tab, gone on reload), so it holds file paths and small dicts only.
"""

from __future__ import annotations

from typing import Any

from .engine import DoneEvent


def new_entry(preset: str, prompt: str, images: list[str], ui: dict[str, Any], done: DoneEvent) -> dict[str, Any]:
    return {"preset": preset, "prompt": prompt, "images": list(images), "ui": dict(ui), "before": done.before,
            "results": [{"path": r.path, "settings": r.settings} for r in done.images]}


def caption(result: dict[str, Any]) -> str:
    s = result["settings"]
    return f"{s.get('preset') or 'prompt'} · seed {s.get('seed')} · {s.get('width')}x{s.get('height')}"


def flat_items(history: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(entry, result) of every picture in the history gallery: newest run first."""
    return [(e, r) for e in reversed(range(len(history))) for r in range(len(history[e]["results"]))]


def gallery_value(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(history[e]["results"][r]["path"], caption(history[e]["results"][r])) for e, r in flat_items(history)]


def lookup(history: list[dict[str, Any]], selection: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(entry, result) for a selection [entry, result], or None when it points nowhere."""
    if not selection or len(selection) != 2:
        return None
    e, r = selection
    if not (0 <= e < len(history) and 0 <= r < len(history[e]["results"])):
        return None
    return history[e], history[e]["results"][r]
