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
from .prompt_editing import render_prompt_html

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
                                      label=f"image {k}", height=130, format="png", elem_id=f"image-{k}"))
                with gr.Row(elem_classes="slot-buttons"):
                    buttons.append((gr.Button("insert", size="sm", elem_id=f"insert-{k}"),
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


def render_prompt(text: str, slots: Sequence[str | None]) -> str:
    thumbnails = {k: uri for k, path in enumerate(slots, start=1) if (uri := thumbnail(path))}
    return render_prompt_html(text or "", thumbnails, image_problems(text or "", list(slots)))


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
    background = (editor or {}).get("background")
    if background is None:
        return "No mask: the whole picture may change."
    mask = mask_from_layers(editor.get("layers") or [], (background.shape[1], background.shape[0]))
    if mask is None:
        return "No mask painted: the whole picture may change."
    return (f"Mask: {100 * mask.mean():.0f}% of image 1 may change; everywhere else the result keeps "
            "image 1's own pixels.")


def load_mask_background(image: str | None):
    if not image:
        raise gr.Error("Upload the picture to edit as image 1 first.")
    return {"background": image, "layers": [], "composite": image}


def mask_for_job(preset: str, editor: dict | None, image_1: str | None):
    """The painted mask over image 1 (edit presets only), or None. A mask on another picture is refused."""
    if not get_preset(preset).is_edit or not editor or not editor.get("layers") or not image_1:
        return None
    background = editor.get("background")
    with Image.open(image_1) as picture:
        size = picture.size
    if background is not None and abs(background.shape[1] / background.shape[0] - size[0] / size[1]) > 0.02:
        raise gr.Error("The mask was painted on another picture than image 1: click 'Paint a mask on image 1' "
                       "again and repaint.")
    return mask_from_layers(editor["layers"], size)

