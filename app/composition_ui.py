"""Saved compositions in the Generate tab (omnigen.composition): save the whole tab (prompt, pictures, settings,
adapters by name and strength, preset) as one zip, load one back, and make one from any history item.

A loaded composition fills the tab as "Reuse" does, with its exact seed; its adapters get their strengths (one
that is not loaded is named in a warning) and every other loaded adapter strength 0, so that Generate makes the
picture `omnigen.composition.generate` makes in Python.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import gradio as gr

from omnigen.composition import Composition, CompositionError, load_composition, save_composition
from omnigen.errors import sentence
from omnigen.presets import PRESETS
from omnigen.settings import GenerationSettings

from . import history as hist
from .adapters import AdapterSourceError, loaded_adapters, set_strength
from .adapters_ui import adapter_view, view_outputs
from .engine import MAX_INPUT_IMAGES, Studio
from .i18n import t, text, translator
from .jobs import PipelineBusy

log = logging.getLogger("omnigen.studio")


def build_composition_panel() -> dict[str, Any]:
    """The accordion's widgets: save, the file to download, and the upload that loads one."""
    panel: dict[str, Any] = {}
    with gr.Accordion(t("composition_accordion"), open=False, elem_id="composition"):
        with gr.Row():
            panel["save"] = gr.Button(t("composition_save"), elem_id="composition-save")
            panel["download"] = gr.DownloadButton(t("composition_download"), visible=False,
                                                  elem_id="composition-download")
        panel["load"] = gr.File(label=t("composition_load"), file_types=[".zip"], elem_id="composition-load")
    return panel


def wire_composition(studio: Studio, page: dict[str, Any], shown: dict[str, Any], fields: tuple[str, ...],
                     settings_of: Callable[[Studio, dict[str, Any]], GenerationSettings],
                     page_values: Callable[..., list[Any]]) -> None:
    """`fields`: the settings panel's names in order; `settings_of(studio, values)`: the settings the panel says;
    `page_values(record, ui, top)`: the panel's values that restore a record (the Generate tab's own)."""
    panel, slots = page["composition"], page["slots"]
    quiet = dict(api_visibility="private")

    def save(preset: str, prompt: str, *rest):
        values = {**dict(zip(fields, rest[MAX_INPUT_IMAGES:])), "randomize_seed": False}  # the seed shown is kept
        composition = Composition(prompt or "", [p for p in rest[:MAX_INPUT_IMAGES] if p], settings_of(studio, values),
                                  loaded_adapters(studio), preset or "")
        return written(studio, composition)

    def load(path: str | None):
        if not path:
            return [gr.skip()] * (2 + MAX_INPUT_IMAGES + len(fields)) + adapter_view(studio)
        tr = translator()
        try:
            composition = load_composition(path)
        except CompositionError as error:
            raise gr.Error(tr(sentence(str(error)))) from None
        files = unpacked_pictures(studio, composition)
        apply_adapters(studio, composition.adapters)
        gr.Info(text("info_composition_loaded", count=len(files)))
        preset = composition.preset if composition.preset in PRESETS else gr.skip()
        return [preset, composition.prompt, *(files + [None] * MAX_INPUT_IMAGES)[:MAX_INPUT_IMAGES],
                *page_values(composition.settings.as_dict(), None, studio.pipe.max_image_side), *adapter_view(studio)]

    panel["save"].click(save, [page["preset"], page["prompt"], *slots, *page["panel"].values()], panel["download"],
                        **quiet)
    panel["load"].upload(load, panel["load"], [page["preset"], page["prompt"], *slots, *page["panel"].values(),
                                               *view_outputs(page["adapters"])], **quiet)
    shown["to_composition"].click(lambda chosen, browser: from_history(studio, chosen, browser),
                                  [shown["selection"], shown["browser"]], panel["download"], **quiet)


def written(studio: Studio, composition: Composition) -> gr.DownloadButton:
    """The composition saved in the output folder, offered for download."""
    folder = studio.output_dir / "compositions" / uuid.uuid4().hex[:12]
    tr = translator()
    try:
        path = save_composition(folder / "composition.omnigen.zip", composition)
    except CompositionError as error:
        raise gr.Error(tr(sentence(str(error)))) from None
    except OSError as error:  # the output folder's disk or permissions: nothing the page can change
        log.error("writing a composition failed", exc_info=error)
        raise gr.Error(tr("error_composition_not_saved")) from None
    return gr.DownloadButton(value=str(path), visible=True)


def from_history(studio: Studio, chosen: Any, browser: str | None) -> gr.DownloadButton:
    """The composition of a history item: its prompt, input copies, exact settings, adapters and preset."""
    found = hist.lookup(studio.history.entries(browser), chosen)
    if found is None:
        raise gr.Error(text("error_select_first"))
    entry, result = found
    record = result["settings"]
    settings = GenerationSettings.from_record(record, studio.defaults()).replace(num_images_per_prompt=1)
    return written(studio, Composition(entry["prompt"], list(entry["images"]), settings,
                                       dict(record.get("loras") or {}), entry.get("preset") or ""))


def unpacked_pictures(studio: Studio, composition: Composition) -> list[str]:
    """The composition's pictures as PNG files in the output folder (the page shows and sends files)."""
    folder = studio.output_dir / "compositions" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    files = []
    for k, picture in enumerate(composition.images, start=1):
        target = folder / f"image-{k}.png"
        picture.save(target, format="PNG")
        files.append(str(target))
    return files


def apply_adapters(studio: Studio, wanted: dict[str, float]) -> None:
    """The composition's strengths on the loaded adapters, 0 on the others; a missing one is named."""
    loaded = loaded_adapters(studio)
    for name, strength in wanted.items():
        if name not in loaded:
            gr.Warning(text("warning_adapter_missing", name=name, strength=strength))
    for name, strength in loaded.items():
        target = wanted.get(name, 0.0)
        if strength != target:
            try:
                set_strength(studio, name, target)
            except (AdapterSourceError, PipelineBusy) as error:
                gr.Warning(translator()(sentence(str(error))))

