"""The Generate tab's inputs around the prompt: the image slots and their buttons, the rendered prompt with
thumbnails where each image goes, and the optional edit mask painted over image 1."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import gradio as gr
from PIL import Image

from omnigen.presets import get_preset
from omnigen.images import load_image

from .compose import mask_from_layers
from .engine import MAX_INPUT_IMAGES
from .prompt_editing import image_problems, insert_image_tag, move_image, move_item, remove_image, remove_item
from .prompt_editing import PREVIEW_TEXTS, render_prompt_html
from .i18n import language, t, t_then, text as say, translate, translator

SLOTS = range(1, MAX_INPUT_IMAGES + 1)

# Reads the caret of the prompt box so "insert" puts the picture where the user is typing.
CARET_JS = ("(text, position) => { const box = document.querySelector('#prompt textarea');"
            " return [text, box && box.selectionStart != null ? box.selectionStart : (text || '').length]; }")


def wire_mask(page: dict) -> None:
    editor = page["mask_editor"]
    page["mask_load"].click(load_mask_background, page["slots"][0], editor, api_visibility="private")
    # A mask belongs to one picture: a new image 1 clears it rather than confine the edit of another.
    page["slots"][0].change(lambda: None, None, editor, queue=False, show_progress="hidden",
                            api_visibility="private")
    # .input fires when a stroke ends (the editor sends no .change for strokes); .change covers a new picture.
    for event in (editor.input, editor.change):
        event(describe_mask, editor, page["mask_info"], show_progress="hidden", trigger_mode="always_last",
              concurrency_limit=None, api_visibility="private")


def build_image_slots():
    slots, buttons = [], []
    with gr.Row(equal_height=True):
        for k in SLOTS:
            with gr.Column(min_width=110):
                slots.append(gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                      label=t_then("image_word", f" {k}"), height=130, format="png", elem_id=f"image-{k}"))
                with gr.Row(elem_classes="slot-buttons"):
                    buttons.append((gr.Button(t("insert"), size="sm", elem_id=f"insert-{k}"),
                                    gr.Button("◀", size="sm", elem_id=f"move-left-{k}", interactive=k > 1),
                                    gr.Button("✕", size="sm", elem_id=f"remove-{k}")))
    caret = gr.Number(0, visible=False, precision=0)
    return slots, buttons, caret


@lru_cache(maxsize=64)
def _thumbnail(path: str, modified: float) -> str | None:
    try:
        picture = load_image(path)
    except ValueError:
        return None
    picture.thumbnail((96, 96))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return _thumbnail(path, Path(path).stat().st_mtime)


def render_prompt(text: str, slots: Sequence[str | None], request: gr.Request | None = None) -> str:
    """The prompt preview in the language of `request` (or of the request being handled; English outside one)."""
    lang = language(request)
    thumbnails = {k: uri for k, path in enumerate(slots, start=1) if (uri := thumbnail(path))}
    problems = [translate(problem, lang=lang) for problem in image_problems(text or "", list(slots))]
    return render_prompt_html(text or "", thumbnails, problems, {key: say(key, lang=lang) for key in PREVIEW_TEXTS})


def wire_prompt_editing(page: dict) -> None:
    prompt, slots, caret, prompt_view = page["prompt"], page["slots"], page["caret"], page["prompt_view"]
    for component in [prompt, *slots]:
        component.change(lambda text, *images: render_prompt(text, images), [prompt, *slots], prompt_view,
                         queue=False, show_progress="hidden", api_visibility="private")
    for k, (insert, left, remove) in zip(SLOTS, page["slot_buttons"]):
        insert.click(lambda text, position, k=k: insert_image_tag(text or "", int(position or 0), k),
                     [prompt, caret], prompt, js=CARET_JS, api_visibility="private")

        def move_left(text, *images, k=k):
            if k == 1 or images[k - 1] is None:
                return gr.skip(), *[gr.skip()] * len(images)
            return move_image(text or "", k, k - 1, len(images)), *move_item(list(images), k, k - 1)

        def remove_slot(text, *images, k=k):
            return remove_image(text or "", k), *remove_item(list(images), k)

        left.click(move_left, [prompt, *slots], [prompt, *slots], api_visibility="private")
        remove.click(remove_slot, [prompt, *slots], [prompt, *slots], api_visibility="private")


def describe_mask(editor: dict | None) -> str:
    background, tr = (editor or {}).get("background"), translator()
    if background is None:
        return tr("mask_none")
    mask = mask_from_layers(editor.get("layers") or [], (background.shape[1], background.shape[0]))
    if mask is None:
        return tr("mask_none_painted")
    return tr("mask_share", share=f"{100 * mask.mean():.0f}")


def load_mask_background(image: str | None):
    if not image:
        raise gr.Error(translate("error_mask_image"))
    return {"background": image, "layers": [], "composite": image}


def mask_for_job(preset: str, editor: dict | None, image_1: str | None):
    """The painted mask over image 1 (edit presets only), or None. A mask on another picture is refused."""
    if not get_preset(preset).is_edit or not editor or not editor.get("layers") or not image_1:
        return None
    background = editor.get("background")
    with Image.open(image_1) as picture:
        size = picture.size
    if background is not None and abs(background.shape[1] / background.shape[0] - size[0] / size[1]) > 0.02:
        raise gr.Error(translate("error_mask_other"))
    return mask_from_layers(editor["layers"], size)

