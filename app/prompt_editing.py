"""Editing an interleaved prompt: place, remove and reorder images, keeping the `<|image_k|>` tags in step.

Image k of a prompt is the picture in slot k. Removing or moving a picture renumbers the tags in the text,
so the prompt keeps pointing at the same pictures. Pure functions on strings and lists; no Gradio.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from omnigen.presets import image_tag
from omnigen.processor import parse_image_tags

T = TypeVar("T")

# A tag with its optional <img>...</img> wrapper; group 1 is k.
_TAG = re.compile(r"(?:<img>\s*)?<\|image_(\d+)\|>(?:\s*</img>)?")


def tag_ids(text: str) -> list[int]:
    """The image numbers of the tags in `text`, in order of appearance."""
    return [int(match.group(1)) for match in _TAG.finditer(text)]


def insert_image_tag(text: str, position: int, k: int) -> str:
    """Put image k's tag at character `position` (clamped to the text), with a space on each side."""
    if k < 1:
        raise ValueError(f"image numbers start at 1, got {k}")
    position = max(0, min(int(position), len(text)))
    before, after = text[:position], text[position:]
    tag = image_tag(k)
    if before and not before[-1].isspace():
        tag = " " + tag
    if after and not after[0].isspace():
        tag = tag + " "
    return before + tag + after


def _renumber(text: str, new_number: dict[int, int | None]) -> str:
    """Rewrite every tag k as image new_number[k]; None removes the tag and tidies the space it leaves."""
    def replace(match: re.Match) -> str:
        k = int(match.group(1))
        target = new_number.get(k, k)
        return "\0" if target is None else image_tag(target)

    text = _TAG.sub(replace, text)
    text = re.sub(r"[ \t]*\0[ \t]*", " ", text)  # a removed tag leaves one space between its neighbours
    return re.sub(r" +([,.;:!?])", r"\1", text).strip(" ")


def remove_image(text: str, k: int) -> str:
    """Drop image k's tags; images after it move down one number."""
    numbers = set(tag_ids(text)) | {k}
    return _renumber(text, {m: None if m == k else (m - 1 if m > k else m) for m in numbers})


def move_order(count: int, k: int, j: int) -> list[int]:
    """Old image numbers in their new order after moving image k to position j (1-based)."""
    if not (1 <= k <= count and 1 <= j <= count):
        raise ValueError(f"cannot move image {k} to position {j} among {count} image(s)")
    order = list(range(1, count + 1))
    order.insert(j - 1, order.pop(k - 1))
    return order


def move_image(text: str, k: int, j: int, count: int) -> str:
    """Move image k to position j among `count` images; every tag follows its picture."""
    count = max([count, *tag_ids(text)])
    order = move_order(count, k, j)
    return _renumber(text, {old: new for new, old in enumerate(order, start=1)})


def move_item(items: Sequence[T], k: int, j: int) -> list[T]:
    """The slot list after moving item k to position j (1-based), as move_image renumbers the text."""
    order = move_order(len(items), k, j)
    return [items[old - 1] for old in order]


def remove_item(items: Sequence[T | None], k: int) -> list[T | None]:
    """The slot list after removing item k: later items move up, an empty slot goes to the end."""
    if not 1 <= k <= len(items):
        raise ValueError(f"there is no image slot {k} (slots 1..{len(items)})")
    return [*items[: k - 1], *items[k:], None]


def image_problems(text: str, slots: Sequence[Any]) -> list[str]:
    """Why the prompt and the filled image slots do not match, one readable sentence each; [] when they do."""
    filled = [slot is not None and slot != "" for slot in slots]
    used = set(tag_ids(text))
    try:  # only for malformed tags such as <|image_0|> or <image_1>; the slot checks below say the rest
        parse_image_tags(text, max(used, default=0))
    except ValueError as error:
        if str(error).startswith("malformed"):
            return [str(error)[:1].upper() + str(error)[1:] + "."]
    problems = []
    for k in sorted(used):
        if k > len(filled):
            problems.append(f"The prompt uses <|image_{k}|> but there are only {len(filled)} image slots; "
                            f"remove that tag.")
        elif not filled[k - 1]:
            problems.append(f"The prompt uses <|image_{k}|> but image slot {k} is empty: upload a picture "
                            f"there or remove the tag.")
    for k, is_filled in enumerate(filled, start=1):
        if is_filled and k not in used:
            problems.append(f"Image {k} is uploaded but the prompt does not use it: insert its tag "
                            f"{image_tag(k)} or remove the image.")
    last_filled = max((k for k, f in enumerate(filled, start=1) if f), default=0)
    for k in range(1, last_filled):
        if not filled[k - 1]:
            problems.append(f"Image slot {k} is empty but slot {last_filled} is not: fill the slots in order "
                            f"(move image {last_filled} to slot {k}).")
            break
    return problems


def check_prompt_images(text: str, slots: Sequence[Any]) -> str | None:
    """One message for every mismatch between tags and slots, or None when the prompt can run."""
    problems = image_problems(text, slots)
    return " ".join(problems) if problems else None


# The preview's own words; the studio passes them in the page's language (app/i18n.py).
PREVIEW_TEXTS = {"prompt_match": "Placeholders and images match.", "prompt_empty": "(empty prompt)",
                 "prompt_missing_chip": "image {k}?", "prompt_missing_title": "no picture in slot {k}"}


def render_prompt_html(text: str, thumbnails: dict[int, str], problems: Sequence[str] = (),
                       texts: dict[str, str] | None = None) -> str:
    """The prompt as HTML with each tag drawn as its picture (a data: URI) or a red 'missing' chip;
    `texts`: the preview's words (PREVIEW_TEXTS' keys) in another language."""
    words = {**PREVIEW_TEXTS, **(texts or {})}
    pieces, last = [], 0
    for match in _TAG.finditer(text):
        pieces.append(html.escape(text[last:match.start()]))
        k = int(match.group(1))
        if k in thumbnails:
            pieces.append(f'<span class="prompt-image" title="image {k}"><img src="{thumbnails[k]}" '
                          f'alt="image {k}"><sup>{k}</sup></span>')
        else:
            title = html.escape(words["prompt_missing_title"].format(k=k))
            chip = html.escape(words["prompt_missing_chip"].format(k=k))
            pieces.append(f'<span class="prompt-missing" title="{title}">{chip}</span>')
        last = match.end()
    pieces.append(html.escape(text[last:]))
    empty = f'<span class="prompt-empty">{html.escape(words["prompt_empty"])}</span>'
    body = "".join(pieces).replace("\n", "<br>") or empty
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        check = f'<ul id="prompt-check" class="prompt-problems">{items}</ul>'
    else:
        check = f'<div id="prompt-check" class="prompt-ok">{html.escape(words["prompt_match"])}</div>'
    return f'<div class="prompt-render">{body}</div>{check}'
