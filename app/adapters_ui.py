"""The Generate tab's Adapters accordion: load LoRA adapters into the shared pipeline from an upload, a Hugging
Face Hub id or (where the host allows it) a server folder; several at once, each with a strength slider; unload
one or all.

The list shows what the pipeline holds (app.adapters.loaded_adapters, i.e. omnigen.lora.lora_scales): adapters
loaded by the Train tab's "Use in Generate tab", or by another page, appear too. It is refreshed on page load,
when the Generate tab or the accordion opens, after every change here and after every generation. Every image
lists the adapters it used under `loras` in its settings.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.errors import sentence

from .adapters import (MAX_ADAPTERS, adapter_source, hub_adapter, load_adapter, loaded_adapters, server_adapter,
                       set_strength, staged_upload, unload_adapter)
from .engine import GPU_QUEUE, Studio
from .i18n import t, text, translate

STRENGTH = dict(minimum=-1.0, maximum=2.0, step=0.05)


def build_adapters_panel(studio: Studio) -> dict[str, Any]:
    """The accordion's widgets (not yet wired): sources, name and strength, the loaded list."""
    ad: dict[str, Any] = {"names": gr.State([])}
    with gr.Accordion(t("adapters"), open=False, elem_id="adapters") as ad["accordion"]:
        ad["summary"] = gr.Markdown(summary_text(studio), elem_id="adapters-summary")
        with gr.Row():
            ad["name"] = gr.Textbox(label=t("adapter_name"), placeholder=t("adapter_name_placeholder"), max_lines=1,
                                    elem_id="adapter-name", scale=2)
            ad["strength"] = gr.Slider(value=1.0, label=t("strength"), elem_id="adapter-strength", scale=2, **STRENGTH)
        with gr.Tabs():
            with gr.Tab(t("adapter_upload_tab"), id="adapter-upload-tab"):
                ad["files"] = gr.File(label=t("adapter_files"), file_count="multiple",
                                      file_types=[".zip", ".safetensors", ".json"], elem_id="adapter-upload")
                ad["load_upload"] = gr.Button(t("adapter_load_upload"), elem_id="adapter-load-upload")
            with gr.Tab(t("adapter_hub_tab"), id="adapter-hub-tab"):
                ad["hub_id"] = gr.Textbox(label=t("adapter_hub_id"), placeholder=t("adapter_hub_placeholder"),
                                          max_lines=1,
                                          elem_id="adapter-hub")
                ad["load_hub"] = gr.Button(t("adapter_load_hub"), elem_id="adapter-load-hub")
            with gr.Tab(t("adapter_server_tab"), id="adapter-server-tab", visible=studio.allow_server_adapters):
                ad["path"] = gr.Textbox(label=t("adapter_server_path"), max_lines=1, elem_id="adapter-path")
                ad["load_path"] = gr.Button(t("adapter_load_path"), elem_id="adapter-load-path")
        ad["rows"], ad["labels"], ad["sliders"], ad["unloads"] = [], [], [], []
        for i in range(MAX_ADAPTERS):
            with gr.Row(visible=False, elem_id=f"adapter-row-{i}", equal_height=True) as row:
                ad["labels"].append(gr.Markdown(elem_id=f"adapter-label-{i}"))
                ad["sliders"].append(gr.Slider(value=1.0, label=t("strength"), elem_id=f"adapter-slider-{i}",
                                                 **STRENGTH))
                ad["unloads"].append(gr.Button(t("adapter_unload"), size="sm", elem_id=f"adapter-unload-{i}", scale=0))
            ad["rows"].append(row)
        ad["unload_all"] = gr.Button(t("adapter_unload_all"), elem_id="adapter-unload-all", size="sm")
    return ad


def summary_text(studio: Studio) -> str:
    """What the pipeline holds, in the language of the request being handled."""
    loaded = loaded_adapters(studio)
    if not loaded:
        return text("adapters_none")
    listed = text("list_separator").join(text("adapter_at", name=name, scale=f"{scale:g}")
                                         for name, scale in loaded.items())
    return text("adapters_loaded", listed=listed)


def view_outputs(ad: dict[str, Any]) -> list[Any]:
    return [ad["summary"], ad["names"], *ad["rows"], *ad["labels"], *ad["sliders"]]


def adapter_view(studio: Studio) -> list[Any]:
    """Values for view_outputs: the summary, the row names, then each row's visibility, label and strength."""
    loaded = list(loaded_adapters(studio).items())[:MAX_ADAPTERS]
    rows = [gr.Row(visible=i < len(loaded)) for i in range(MAX_ADAPTERS)]
    labels, sliders = [], []
    for i in range(MAX_ADAPTERS):
        if i < len(loaded):
            name, scale = loaded[i]
            source = adapter_source(studio, name)
            labels.append(f"**{name}**" + (f"  \n<small>{source}</small>" if source else ""))
            sliders.append(gr.Slider(value=scale, label=text("strength_of", name=name)))
        else:
            labels.append("")
            sliders.append(gr.skip())
    return [summary_text(studio), [name for name, _ in loaded], *rows, *labels, *sliders]


def readable(handler: Callable) -> Callable:
    """The handler with user mistakes (a foreign adapter, a bad zip, a busy model) shown as gr.Error sentences."""
    @functools.wraps(handler)
    def wrapped(*args):
        try:
            return handler(*args)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(translate(sentence(str(error)))) from None

    return wrapped


def default_name(files: list[str] | None) -> str | None:
    """The adapter's name from an upload: the zip's name (the folder peft saved, zipped)."""
    zips = [Path(f) for f in files or [] if f and f.lower().endswith(".zip")]
    return zips[0].stem if zips else None


def load_from(studio: Studio, folder: Path, name: str, strength: float, shown: str, source: str) -> str:
    """Load and return the status line; the library's messages name the folder as the user knows it."""
    try:
        chosen = load_adapter(studio, folder, name, strength, source=source)
    except ValueError as error:
        raise ValueError(str(error).replace(str(folder), shown)) from None
    return f"Loaded `{chosen}` at strength {float(strength):g}."


def wire_adapters(studio: Studio, ad: dict[str, Any]) -> None:
    outputs = view_outputs(ad)
    refresh = lambda: adapter_view(studio)  # noqa: E731
    quick = dict(concurrency_id=GPU_QUEUE, concurrency_limit=studio.concurrency_limit, api_visibility="private",
                 show_progress="minimal")

    def from_upload(files, name, strength):
        with tempfile.TemporaryDirectory(prefix="omnigen-adapter-") as scratch:  # the weights stay in memory only
            folder = staged_upload(files, Path(scratch))
            shown = f"the upload ({', '.join(Path(f).name for f in files)})"
            load_from(studio, folder, name or default_name(files) or "", strength, shown, f"upload: {Path(files[0]).name}"
                      if len(files) == 1 else "upload")
        return [*refresh(), None]  # the upload is loaded: the box is free for the next one

    def from_hub(repo_id, name, strength):
        folder = hub_adapter(repo_id)
        load_from(studio, folder, name or repo_id.strip().split("/")[-1], strength, repr(repo_id.strip()),
                  f"Hub: {repo_id.strip()}")
        return refresh()

    def from_path(path, name, strength):
        folder = server_adapter(path, studio.allow_server_adapters)
        load_from(studio, folder, name, strength, str(folder), f"server: {folder}")
        return refresh()

    ad["load_upload"].click(readable(from_upload), [ad["files"], ad["name"], ad["strength"]], [*outputs, ad["files"]],
                            **quick)
    ad["load_hub"].click(readable(from_hub), [ad["hub_id"], ad["name"], ad["strength"]], outputs, **quick)
    ad["load_path"].click(readable(from_path), [ad["path"], ad["name"], ad["strength"]], outputs, **quick)
    ad["unload_all"].click(readable(lambda: (unload_adapter(studio), refresh())[1]), None, outputs, **quick)
    for i in range(MAX_ADAPTERS):
        ad["unloads"][i].click(readable(functools.partial(unload_row, studio, i)), ad["names"], outputs, **quick)
        # .change: dragging and typing in the number box both; a refresh that shows the same strength is a no-op.
        ad["sliders"][i].change(readable(functools.partial(rescale_row, studio, i)), [ad["names"], ad["sliders"][i]],
                                ad["summary"], trigger_mode="always_last", **quick)
    ad["accordion"].expand(refresh, None, outputs, api_visibility="private", queue=False)


def unload_row(studio: Studio, i: int, names: list[str]) -> list[Any]:
    if i < len(names or []):
        unload_adapter(studio, names[i])
    return adapter_view(studio)


def rescale_row(studio: Studio, i: int, names: list[str], strength: float) -> str:
    names = names or []
    if i < len(names) and strength is not None and loaded_adapters(studio).get(names[i]) != float(strength):
        set_strength(studio, names[i], strength)
    return summary_text(studio)
