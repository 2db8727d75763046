"""Multimodal prompts -> token ids, image spans, attention masks, positions and guidance branches.

A prompt is text with images written `<img><|image_k|></img>` (k from 1). It is wrapped in the chat
template, split at the image tags, and every image gets (H/16)*(W/16) token slots (id 0) that the
model fills with its VAE latent patches. This reproduces the official OmniGen processor
(VectorSpaceLab/OmniGen, OmniGen/processor.py) token for token; only the error handling, the image
mode handling (alpha, 16-bit, EXIF orientation) and the per-prompt output sizes are additions.

The batch sequence of one row is [condition tokens][time token][output image tokens]:
condition and time tokens attend causally, each input image span attends to itself both ways, the
output image tokens see every real token. Rows are left-padded; positions count real tokens from 0.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .images import crop_to_multiple_of_16, image_to_tensor, load_image
from .settings import OMNIGEN_V1_NEGATIVE_PROMPT, PATCH_PIXELS

# The official split pattern. Anything else that looks like an image tag is reported as malformed.
IMAGE_TAG_PATTERN = re.compile(r"<\|image_\d+\|>")
_IMAGE_TAG_ID = re.compile(r"<\|image_(\d+)\|>")
_IMAGE_TAG_LIKE = re.compile(r"<\|\s*image[^<>]*>|<image_[^<>]*>")


# ----------------------------------------------------------------------------- prompt text


def add_prefix_instruction(prompt: str) -> str:
    """Wrap a user prompt in OmniGen's chat template."""
    return (
        "<|user|>\nGenerate an image according to the following instructions\n"
        f"{prompt}<|end|>\n<|assistant|>\n<|diffusion|>"
    )


def interleaved_to_prompt(parts: Sequence[str | Image.Image]) -> tuple[str, list[Image.Image]]:
    """Turn ["text", image, "text", ...] into a prompt with `<img><|image_k|></img>` tags and its images.

    Images are numbered 1, 2, ... in order of first appearance; the same image object used twice keeps
    its number. A space is put between a text part and a tag where neither side has one.
    """
    text_pieces: list[str] = []
    images: list[Any] = []
    for position, part in enumerate(parts):
        if isinstance(part, str):
            if _IMAGE_TAG_LIKE.search(part):
                raise ValueError(
                    f"part {position} of the interleaved prompt contains an image tag ({part!r}); in an "
                    "interleaved prompt put the images themselves between the text parts, not <|image_k|> tags"
                )
            text_pieces.append(part)
        elif isinstance(part, (Image.Image, np.ndarray)):
            number = next((i + 1 for i, seen in enumerate(images) if seen is part), None)
            if number is None:
                images.append(part)
                number = len(images)
            text_pieces.append(f"<img><|image_{number}|></img>")
        else:
            raise ValueError(
                f"part {position} of the interleaved prompt is of type {type(part).__name__}; "
                "use text (str) and images (PIL images) only"
            )
    prompt = ""
    for piece in text_pieces:
        if prompt and piece and not prompt[-1].isspace() and not piece[0].isspace():
            prompt += " "
        prompt += piece
    return prompt, images


def parse_image_tags(prompt: str, num_images: int) -> list[int]:
    """The image ids of the `<|image_k|>` tags in order of appearance, checked against `num_images`."""
    for match in _IMAGE_TAG_LIKE.finditer(prompt):
        tag_id = _IMAGE_TAG_ID.fullmatch(match.group(0))
        if tag_id is None or int(tag_id.group(1)) == 0:
            raise ValueError(
                f"malformed image tag {match.group(0)!r} in the prompt; write <img><|image_k|></img> "
                "with k = 1 for the first image, 2 for the second, ..."
            )
    image_ids = [int(found) for found in _IMAGE_TAG_ID.findall(prompt)]
    unique_ids = sorted(set(image_ids))
    for image_id in unique_ids:
        if image_id > num_images:
            have = "no images were given" if num_images == 0 else f"only {num_images} image(s) were given"
            raise ValueError(
                f"the prompt refers to <|image_{image_id}|> but {have}; add the image or remove the tag"
            )
    missing = [k for k in range(1, max(unique_ids, default=0) + 1) if k not in unique_ids]
    if missing:
        raise ValueError(
            f"image ids must be consecutive from 1: the prompt uses {', '.join(map(str, unique_ids))} "
            f"but not {', '.join(map(str, missing))}; renumber the <|image_k|> tags"
        )
    if len(unique_ids) < num_images:
        untagged = ", ".join(str(k) for k in range(len(unique_ids) + 1, num_images + 1))
        raise ValueError(
            f"{num_images} image(s) were given but image(s) {untagged} have no <|image_k|> tag in the prompt; "
            f"write <img><|image_{len(unique_ids) + 1}|></img> where the image belongs, or remove the image"
        )
    return image_ids


# ----------------------------------------------------------------------------- encoded prompts


@dataclass
class EncodedPrompt:
    """One prompt as the model reads it: token ids with id-0 slots where the image latents go."""

    input_ids: list[int]
    images: list[torch.Tensor]  # (3, h, w) in [-1, 1], one per span, in span order
    image_spans: list[tuple[int, int]]  # [start, end) in input_ids


@dataclass
class PromptBranches:
    """The guidance branches of one prompt and the size of the image to generate for it."""

    cond: EncodedPrompt
    uncond: EncodedPrompt
    img_cond: EncodedPrompt | None  # None when the prompt has no images or image guidance is off
    height: int  # output size in pixels, multiples of 16
    width: int
    prompt: str = ""  # the prompt as written, with <|image_k|> tags (recorded in the image's settings)


@dataclass
class _PromptPlan:
    """A prompt after every check that needs no pixels: what __call__ will encode."""

    text: str
    images: list[Any]  # as given: paths, PIL images or arrays
    image_ids: list[int]
    size: tuple[int, int] | None  # (height, width), or None to take it from an input image
    size_from_image: int | None  # 1-based image index when the output copies an input image's size


class OmniGenProcessor:
    """Turns prompts and their images into the token sequences of OmniGen's guidance branches."""

    def __init__(self, tokenizer: Any, max_input_image_size: int = 1024, pad_token_id: int | None = None):
        self.tokenizer = tokenizer
        self.max_input_image_size = _check_max_input_image_size(max_input_image_size)
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "eos_token_id", None)
        # Padded positions are masked out of every real row, so the id only has to be a valid one.
        self.pad_token_id = int(pad_token_id) if pad_token_id is not None else 0

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, **kw: Any) -> "OmniGenProcessor":
        """Read the tokenizer of a model folder (files at the top, or in tokenizer/ as diffusers lays them out)."""
        from transformers import AutoTokenizer, PretrainedConfig  # heavy; only needed here

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model folder not found: {str(model_dir)!r}; check the path")
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
        for folder in (model_dir, model_dir / "tokenizer"):
            if any((folder / name).is_file() for name in tokenizer_files):
                # A neutral config: otherwise transformers reads the model's Phi-3 config.json and, since
                # v5, refuses OmniGen-v1's 'su' rope_scaling before it ever looks at the tokenizer.
                tokenizer = AutoTokenizer.from_pretrained(str(folder), config=PretrainedConfig())
                break
        else:
            raise FileNotFoundError(
                f"no tokenizer in {str(model_dir)!r}: expected tokenizer.json or tokenizer_config.json there "
                "or in its tokenizer/ folder; copy the tokenizer files of the model into it"
            )
        if kw.get("pad_token_id") is None:
            kw["pad_token_id"] = _config_pad_token_id(model_dir)
        return cls(tokenizer, **kw)

    # -- one prompt

    def encode(
        self,
        prompt: str,
        images: Sequence[str | os.PathLike | Image.Image | np.ndarray] | None = None,
        max_input_image_size: int | None = None,
    ) -> EncodedPrompt:
        """Wrap `prompt` in the template and tokenize it, with token slots for each `<|image_k|>`."""
        images = list(images or [])
        image_ids = parse_image_tags(prompt, len(images))
        max_size = self._max_size(max_input_image_size)
        tensors = [image_to_tensor(crop_to_multiple_of_16(load_image(image), max_size)) for image in images]
        return self._encode_text(add_prefix_instruction(prompt), image_ids, tensors)

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text).input_ids)

    def _encode_text(self, full_text: str, image_ids: list[int], tensors: list[torch.Tensor]) -> EncodedPrompt:
        if not tensors:
            return EncodedPrompt(self._tokenize(full_text), [], [])
        bos_token_id = getattr(self.tokenizer, "bos_token_id", None)
        input_ids: list[int] = []
        images: list[torch.Tensor] = []
        spans: list[tuple[int, int]] = []
        for chunk_index, chunk in enumerate(IMAGE_TAG_PATTERN.split(full_text)):
            chunk_ids = self._tokenize(chunk)
            # Each chunk is tokenized alone; only the first keeps its BOS, as in the official processor.
            if chunk_index > 0 and chunk_ids and bos_token_id is not None and chunk_ids[0] == bos_token_id:
                chunk_ids = chunk_ids[1:]
            input_ids.extend(chunk_ids)
            if chunk_index < len(image_ids):
                image = tensors[image_ids[chunk_index] - 1]
                num_slots = (image.shape[-2] // PATCH_PIXELS) * (image.shape[-1] // PATCH_PIXELS)
                spans.append((len(input_ids), len(input_ids) + num_slots))
                input_ids.extend([0] * num_slots)
                images.append(image)
        return EncodedPrompt(input_ids, images, spans)

    def _max_size(self, max_input_image_size: int | None) -> int:
        if max_input_image_size is None:
            return self.max_input_image_size
        return _check_max_input_image_size(max_input_image_size)

    # -- a batch of prompts with their guidance branches

    def __call__(
        self,
        prompts: str | list[str] | list[list[str | Image.Image]],
        input_images: Sequence[Sequence[Any] | None] | Sequence[Any] | None = None,
        *,
        height: int | Sequence[int] | None = None,
        width: int | Sequence[int] | None = None,
        negative_prompt: str = OMNIGEN_V1_NEGATIVE_PROMPT,
        use_img_guidance: bool = True,
        use_input_image_size_as_output: bool | int = False,
        max_input_image_size: int | None = None,
    ) -> list[PromptBranches]:
        """Encode each prompt's cond, uncond and (with input images and image guidance) image-only branch.

        Every prompt is checked before any image is decoded, so a mistake in the last prompt costs nothing.
        `height`/`width` may be one value or one per prompt; they are ignored when
        `use_input_image_size_as_output` is True (size of image 1) or an int k (size of image k).
        """
        max_size = self._max_size(max_input_image_size)
        plans = self._plan(prompts, input_images, height, width, use_input_image_size_as_output)
        if not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
        try:
            parse_image_tags(negative_prompt, 0)
        except ValueError as error:
            raise ValueError(f"negative prompt: {error} (the negative prompt cannot use images)") from None

        pictures = [self._load_images(plan, index, len(plans)) for index, plan in enumerate(plans)]

        uncond = self._encode_text(add_prefix_instruction(negative_prompt), [], [])
        branches = []
        for plan, plan_pictures in zip(plans, pictures):
            tensors = [image_to_tensor(crop_to_multiple_of_16(picture, max_size)) for picture in plan_pictures]
            cond = self._encode_text(add_prefix_instruction(plan.text), plan.image_ids, tensors)
            img_cond = None
            if use_img_guidance and tensors:
                every_image = list(range(1, len(tensors) + 1))
                placeholders = " ".join(f"<img><|image_{k}|></img>" for k in every_image)
                img_cond = self._encode_text(add_prefix_instruction(placeholders), every_image, tensors)
            if plan.size_from_image is not None:
                height_px, width_px = tensors[plan.size_from_image - 1].shape[-2:]
            else:
                height_px, width_px = plan.size
            own_uncond = EncodedPrompt(list(uncond.input_ids), [], [])
            branches.append(PromptBranches(cond, own_uncond, img_cond, int(height_px), int(width_px), plan.text))
        return branches

    def _plan(
        self,
        prompts: Any,
        input_images: Any,
        height: Any,
        width: Any,
        use_input_image_size_as_output: bool | int,
    ) -> list[_PromptPlan]:
        requests = _prompts_with_images(prompts, input_images)
        count = len(requests)
        size_from_image = _size_source(use_input_image_size_as_output)
        if size_from_image is None:
            heights = _per_prompt(height, "height", count)
            widths = _per_prompt(width, "width", count)
        plans = []
        for index, (text, images) in enumerate(requests):
            where = f"prompt {index + 1}: " if count > 1 else ""
            try:
                image_ids = parse_image_tags(text, len(images))
            except ValueError as error:
                raise ValueError(f"{where}{error}") from None
            if size_from_image is not None and size_from_image > len(images):
                have = "no input images" if not images else f"only {len(images)} input image(s)"
                raise ValueError(
                    f"{where}use_input_image_size_as_output asks for the size of image {size_from_image} but the "
                    f"prompt has {have}; give the image or set height and width instead"
                )
            size = None
            if size_from_image is None:
                size = (
                    _check_output_side(heights[index], "height", where),
                    _check_output_side(widths[index], "width", where),
                )
            plans.append(_PromptPlan(text, images, image_ids, size, size_from_image))
        return plans

    @staticmethod
    def _load_images(plan: _PromptPlan, index: int, count: int) -> list[Image.Image]:
        pictures = []
        for number, image in enumerate(plan.images, start=1):
            try:
                pictures.append(load_image(image))
            except ValueError as error:
                where = f"prompt {index + 1}, image {number}" if count > 1 else f"image {number}"
                raise ValueError(f"{where}: {error}") from None
        return pictures


def _config_pad_token_id(model_dir: Path) -> int | None:
    for config_path in (model_dir / "config.json", model_dir / "transformer" / "config.json"):
        if config_path.is_file():
            try:
                value = json.loads(config_path.read_text(encoding="utf-8")).get("pad_token_id")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                continue  # the model loader reports a broken config; the tokenizer's pad id serves here
            if isinstance(value, int):
                return value
    return None


def _check_max_input_image_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < PATCH_PIXELS:
        raise ValueError(f"max_input_image_size must be an integer of at least {PATCH_PIXELS} pixels, got {value!r}")
    return value


def _is_image(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray))


def _is_image_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _prompts_with_images(prompts: Any, input_images: Any) -> list[tuple[str, list[Any]]]:
    """Normalise the accepted prompt forms to one (text, images) pair per prompt."""
    if isinstance(prompts, str):
        # One prompt: its images may come as a flat list, a single image, or a one-element list of lists.
        if input_images is None or (_is_image_list(input_images) and input_images and all(
            x is None or _is_image_list(x) for x in input_images
        )):
            per_prompt = input_images
        else:
            per_prompt = [input_images if _is_image_list(input_images) else [input_images]]
        prompt_list: list[Any] = [prompts]
    elif isinstance(prompts, (list, tuple)):
        if not prompts:
            raise ValueError("no prompts were given; pass a prompt string or a list of prompts")
        # A list holding an image is one interleaved prompt, not a list of prompts.
        prompt_list = [prompts] if any(_is_image(part) for part in prompts) else list(prompts)
        per_prompt = input_images
    else:
        raise ValueError(f"a prompt must be a string or a list, got {type(prompts).__name__}")

    if per_prompt is None:
        per_prompt = [None] * len(prompt_list)
    if not _is_image_list(per_prompt) or len(per_prompt) != len(prompt_list):
        got = len(per_prompt) if _is_image_list(per_prompt) else type(per_prompt).__name__
        raise ValueError(
            f"input_images must be a list with one list of images per prompt: {len(prompt_list)} prompt(s), got {got}"
        )

    requests = []
    for index, (prompt, images) in enumerate(zip(prompt_list, per_prompt)):
        if images is not None and not _is_image_list(images):
            images = [images]
        images = list(images or [])
        if isinstance(prompt, str):
            requests.append((prompt, images))
        elif isinstance(prompt, (list, tuple)):
            if images:
                raise ValueError(
                    f"prompt {index + 1} is an interleaved list that carries its own images; "
                    "do not also pass input_images for it"
                )
            requests.append(interleaved_to_prompt(prompt))
        else:
            raise ValueError(
                f"prompt {index + 1} is of type {type(prompt).__name__}; use a string or a list of text and images"
            )
    return requests


def _size_source(use_input_image_size_as_output: bool | int) -> int | None:
    """None to use height/width, else the 1-based index of the input image whose size the output takes."""
    if use_input_image_size_as_output is False or use_input_image_size_as_output is None:
        return None
    if use_input_image_size_as_output is True:
        return 1
    value = use_input_image_size_as_output
    if isinstance(value, (int, np.integer)) and value >= 1:
        return int(value)
    if isinstance(value, (int, np.integer)) and value == 0:
        return None
    raise ValueError(
        f"use_input_image_size_as_output must be True, False or an image number k >= 1, got {value!r}"
    )


def _per_prompt(value: Any, name: str, count: int) -> list[Any]:
    if value is None:
        raise ValueError(f"{name} is missing; give the output {name} in pixels (a multiple of 16)")
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} values for {count} prompt(s); give one value, or one per prompt")
        return list(value)
    return [value] * count


def _check_output_side(value: Any, name: str, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}{name} must be a whole number of pixels, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{where}{name} must be positive, got {value}; use a multiple of 16 such as 512 or 1024")
    if value % PATCH_PIXELS:
        lower = value // PATCH_PIXELS * PATCH_PIXELS
        upper = lower + PATCH_PIXELS
        options = f"{lower} or {upper}" if lower > 0 else f"{upper}"
        raise ValueError(f"{where}{name} {value} is not a multiple of 16; use {options}")
    return value


# ----------------------------------------------------------------------------- batches


def build_attention_mask(
    condition_lengths: Sequence[int],
    num_output_tokens: int,
    image_spans: dict[int, list[tuple[int, int]]] | None = None,
) -> torch.Tensor:
    """(B, L, L) bool, True where a query row may attend a key column; L = max(lengths) + 1 + num_output_tokens.

    Row layout: [left padding][condition tokens][time token][output image tokens]. Condition and time
    tokens attend causally; output image tokens see every real token; padded keys are hidden from real
    rows; padded rows see everything (a row that sees nothing would give NaN). `image_spans` (padded
    coordinates, by row) are made bidirectional.
    """
    lengths = torch.as_tensor(list(condition_lengths), dtype=torch.long)
    padded_length = int(lengths.max())
    seq_len = padded_length + 1 + num_output_tokens
    index = torch.arange(seq_len)
    query, key = index.view(1, seq_len, 1), index.view(1, 1, seq_len)
    first_real = (padded_length - lengths).view(-1, 1, 1)
    output_query, output_key = query > padded_length, key > padded_length
    real_rows_see = (key >= first_real) & (output_query | (~output_key & (key <= query)))
    mask = torch.where(query >= first_real, real_rows_see, torch.ones((), dtype=torch.bool))
    for row, spans in (image_spans or {}).items():
        for start, end in spans:
            mask[row, start:end, start:end] = True
    return mask


def build_position_ids(condition_lengths: Sequence[int], num_output_tokens: int) -> torch.Tensor:
    """(B, L) positions: zeros over the left padding, then 0, 1, ... over the real tokens (time token at l)."""
    lengths = torch.as_tensor(list(condition_lengths), dtype=torch.long)
    padded_length = int(lengths.max())
    index = torch.arange(padded_length + 1 + num_output_tokens).view(1, -1)
    return (index - (padded_length - lengths).view(-1, 1)).clamp(min=0)


def collate(prompts: Sequence[EncodedPrompt], num_output_tokens: int, pad_token_id: int) -> dict:
    """Left-pad encoded prompts into one batch with its attention mask, positions and input images."""
    if not prompts:
        raise ValueError("collate needs at least one encoded prompt")
    if isinstance(num_output_tokens, bool) or not isinstance(num_output_tokens, int) or num_output_tokens < 0:
        raise ValueError(f"num_output_tokens must be a non-negative integer, got {num_output_tokens!r}")
    lengths = [len(prompt.input_ids) for prompt in prompts]
    if min(lengths) == 0:
        raise ValueError("an encoded prompt has no tokens; encode it with OmniGenProcessor first")
    condition_length = max(lengths)
    input_ids = torch.full((len(prompts), condition_length), int(pad_token_id), dtype=torch.long)
    image_spans: dict[int, list[tuple[int, int]]] = {}
    input_images: list[torch.Tensor] = []
    for row, prompt in enumerate(prompts):
        if len(prompt.images) != len(prompt.image_spans):
            raise ValueError(f"row {row}: {len(prompt.images)} images for {len(prompt.image_spans)} image spans")
        pad = condition_length - lengths[row]
        input_ids[row, pad:] = torch.as_tensor(prompt.input_ids, dtype=torch.long)
        if prompt.image_spans:
            image_spans[row] = [(start + pad, end + pad) for start, end in prompt.image_spans]
            input_images.extend(image.unsqueeze(0) for image in prompt.images)
    return {
        "input_ids": input_ids,
        "attention_mask": build_attention_mask(lengths, num_output_tokens, image_spans),
        "position_ids": build_position_ids(lengths, num_output_tokens),
        "input_image_sizes": image_spans,
        "input_images": input_images,
        "condition_length": condition_length,
    }
