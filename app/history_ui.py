"""The Generate tab's results and this browser's history: selecting a picture, and what the buttons under them do
with it (use as input, reuse prompt, images and settings, download, delete the run). The history itself is
app.history.HistoryStore, in the output folder, one per browser id (gr.BrowserState).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from omnigen.png import python_snippet

from . import history as hist
from .engine import MAX_INPUT_IMAGES, Studio
from .i18n import text

SLOTS = range(1, MAX_INPUT_IMAGES + 1)


def wire_history(studio: Studio, page: dict, shown: dict, page_values: Callable) -> None:
    """Selecting a result or a history picture, and what the buttons under them do with it."""
    browser, selection, slots, panel = shown["browser"], shown["selection"], page["slots"], page["panel"]
    picked = [selection, shown["settings_json"], shown["code"], shown["download"]]
    quiet = dict(api_visibility="private")

    def on_result(b: str | None, latest: str | None, evt: gr.SelectData):
        return selected_outputs(studio.history.entries(b), [latest, evt.index] if latest else None)

    def on_history(b: str | None, evt: gr.SelectData):
        entries = studio.history.entries(b)
        items = hist.flat_items(entries)
        return selected_outputs(entries, list(items[evt.index]) if 0 <= evt.index < len(items) else None)

    shown["results"].select(on_result, [browser, shown["latest"]], picked, **quiet)
    shown["history_gallery"].select(on_history, browser, picked, **quiet)
    shown["use_as_input"].click(lambda chosen, b, slot: send_to_slot(studio, chosen, b, slot),
                                [selection, browser, shown["use_slot"]], slots, **quiet)
    shown["reuse"].click(lambda chosen, b: reuse_entry(studio, chosen, b, page_values), [selection, browser],
                         [page["preset"], page["prompt"], *slots, *panel.values()], **quiet)
    cleared = [shown["history_gallery"], *picked, shown["results"], shown["preview"], shown["latest"]]
    shown["delete"].click(lambda chosen, b, latest: delete_entry(studio, chosen, b, latest),
                          [selection, browser, shown["latest"]], cleared, **quiet)


def selected_outputs(entries: list, chosen: list | None):
    found = hist.lookup(entries, chosen)
    if found is None:
        return None, None, "", gr.DownloadButton(visible=False)
    entry, result = found
    return (chosen, result["settings"], python_snippet(result["settings"], [Path(p).name for p in entry["images"]]),
            gr.DownloadButton(value=result["path"], visible=True))


SELECT_FIRST = "error_select_first"  # app/i18n.py keys: said in the language of the request being handled


def send_to_slot(studio: Studio, chosen, browser: str | None, slot: int):
    found = hist.lookup(studio.history.entries(browser), chosen)
    if found is None or not Path(found[1]["path"]).is_file():
        raise gr.Error(text(SELECT_FIRST))
    return [found[1]["path"] if k == int(slot) else gr.skip() for k in SLOTS]


def reuse_entry(studio: Studio, chosen, browser: str | None, page_values: Callable):
    found = hist.lookup(studio.history.entries(browser), chosen)
    if found is None:
        raise gr.Error(text(SELECT_FIRST))
    entry, result = found
    present = [path if Path(path).is_file() else None for path in entry["images"]]
    if None in present:
        gr.Warning(text("warning_inputs_gone"))
    slots = (present + [None] * MAX_INPUT_IMAGES)[:MAX_INPUT_IMAGES]
    return [entry["preset"], entry["prompt"], *slots,
            *page_values(result["settings"], entry["ui"], studio.pipe.max_image_side)]


def delete_entry(studio: Studio, chosen, browser: str | None, latest: str | None):
    """Remove the selected run (its pictures too) from this browser's history; clear what showed it."""
    found = hist.lookup(studio.history.entries(browser), chosen)
    if found is None:
        raise gr.Error(text("error_select_delete"))
    entry_id = found[0]["id"]
    entries = studio.history.delete(browser, entry_id)
    gr.Info(text("info_deleted", time=found[0].get("time") or text("info_that_time"), count=len(found[0]["results"])))
    shown_gone = latest == entry_id
    return [hist.gallery_value(entries), None, None, "", gr.DownloadButton(visible=False),
            [] if shown_gone else gr.skip(), None if shown_gone else gr.skip(), None if shown_gone else gr.skip()]
