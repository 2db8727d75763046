"""The Generate tab's "Settings from a picture": drop or paste a PNG made by OmniGen Studio (the studio, the CLI or
Python) to see the settings stored in it, and restore its prompt and settings with one click.

The picture is read by omnigen.png.picture_settings, which caps what it reads and keeps only valid settings; the page
says which input pictures the user must supply (the record names none) and what was ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from omnigen.png import NoSettings, picture_settings

from .adapters import loaded_adapters
from .engine import Studio
from .i18n import t, text, translate
from .picture_settings import describe


def picture_drop(**options: Any) -> gr.Image:
    """An image input that hands over the uploaded file exactly as it came, never opened by PIL first: a forged
    PNG (megabytes of text, a compressed chunk that inflates without end) must reach our reader, which caps it.
    (An instance's own preprocess, not a subclass: gradio writes a .pyi beside every component subclass.)"""
    drop = gr.Image(type="filepath", **options)
    drop.preprocess = lambda payload: None if payload is None or payload.path is None else str(payload.path)
    return drop


def build_picture_panel() -> dict[str, Any]:
    pic: dict[str, Any] = {"found": gr.State(None)}
    with gr.Accordion(t("picture_accordion"), open=False, elem_id="picture-settings"):
        gr.Markdown(t("picture_intro"), elem_id="picture-intro")
        with gr.Row():
            pic["drop"] = picture_drop(sources=["upload", "clipboard"], format="png", height=220,
                                      label=t("picture_drop"), elem_id="picture-drop", scale=1)
            with gr.Column(scale=2):
                pic["report"] = gr.Markdown("", elem_id="picture-report")
                pic["restore"] = gr.Button(t("picture_restore"), variant="primary", interactive=False,
                                           elem_id="picture-restore")
        pic["json"] = gr.JSON(label=t("picture_json"), visible=False, elem_id="picture-json")
    return pic


def wire_picture(studio: Studio, pic: dict[str, Any], restore_targets: list[Any],
                 page_values: Callable[[dict[str, Any]], list[Any]]) -> None:
    """`restore_targets`: preset, prompt, then the settings widgets; `page_values(settings)` gives the latter."""

    def read(path: str | None):
        if not path:
            return None, "", gr.JSON(visible=False), gr.Button(interactive=False)
        try:
            found = picture_settings(path, max_side=studio.pipe.max_image_side, base=studio.defaults())
        except NoSettings as error:
            return (None, text("picture_none", reason=translate(str(error))), gr.JSON(visible=False),
                    gr.Button(interactive=False))
        except OSError:
            return None, text("picture_unreadable"), gr.JSON(visible=False), \
                gr.Button(interactive=False)
        keep = {"settings": found.settings, "prompt": found.prompt, "preset": found.preset}
        usable = bool(found.settings) or found.prompt is not None
        return (keep, describe(found, loaded_adapters(studio)), gr.JSON(found.record, visible=True),
                gr.Button(interactive=usable))

    def restore(found: dict[str, Any] | None):
        if not found:
            raise gr.Error(text("error_drop_png"))
        prompt = found["prompt"] if found["prompt"] is not None else gr.skip()
        preset = found["preset"] or gr.skip()
        gr.Info(text("info_restored" if found["prompt"] is not None else "info_restored_keep_prompt"))
        return [preset, prompt, *page_values(found["settings"])]

    pic["drop"].change(read, pic["drop"], [pic["found"], pic["report"], pic["json"], pic["restore"]],
                       api_visibility="private", show_progress="hidden")
    pic["restore"].click(restore, pic["found"], restore_targets, api_visibility="private")
