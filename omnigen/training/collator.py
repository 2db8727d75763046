"""Examples -> a training batch: the prompt encoded exactly as at inference, plus the pixels to encode.

Condition dropout (what the guidance branches need to have been trained on), decided per example:

1. With probability `condition_dropout` the whole condition is dropped: the prompt becomes the
   unconditional branch the sampler uses — the template around `unconditional_prompt` (by default
   the model's own negative prompt) with no images — so text guidance has a learned
   unconditional velocity to push away from. (The official trainer writes "<cfg>" here while its
   sampler uses the negative prompt; we train the branch that is sampled.)
2. Otherwise, for an example with input images, independently with probability
   `image_condition_dropout` only the images are kept: the prompt becomes the image-only branch
   "<img><|image_1|></img> <img><|image_2|></img> ..." that image guidance uses.
3. Otherwise the full instruction with its images.

Two random numbers are drawn per example whatever the outcome, so the decisions of later examples
do not depend on earlier ones and a resumed run replays the same choices.

Image sizes: every image is shrunk with the processor's rule (longer side at most the current
resolution stage's `max_image_size`, sides cropped to multiples of 16). All output images of a batch
must share one size; the first example sets it, and any other output of a different size is
resized to cover it and centre-cropped. An input image that had its output's size is refitted the
same way, so edit pairs stay aligned.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from ..processor import (PATCH_PIXELS, EncodedPrompt, OmniGenProcessor, collate,
                         crop_to_multiple_of_16, image_to_tensor, load_image, parse_image_tags)
from .config import DEFAULT_UNCONDITIONAL_PROMPT
from .dataset import Example

FULL, IMAGE_ONLY, UNCONDITIONAL = "full", "image_only", "unconditional"


@dataclass
class TrainingBatch:
    """One micro-batch: model inputs for the condition, pixels of every image, and bookkeeping for the loss."""

    model_inputs: dict  # collate(): input_ids, attention_mask, position_ids, input_image_sizes, condition_length
    input_images: list[torch.Tensor]  # (1, 3, h, w) in [-1, 1], one per image span, in span order
    input_image_refs: list[tuple[int, int]]  # per span: (row, index of the example's input image)
    output_images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    edit_inputs: list[int | None]  # per row: the span whose image is the same-size single input of an edit
    branches: list[str]  # per row: FULL, IMAGE_ONLY or UNCONDITIONAL
    example_keys: list  # per row: a key for caching latents (the dataset index), or None


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover width x height, keeping the aspect ratio, then centre-crop to exactly that size."""
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                           resample=Image.BICUBIC)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def prepare_images(example: Example, max_image_size: int) -> tuple[Image.Image, list[Image.Image]]:
    """The output and input pictures of an example as the model will see them at this resolution stage."""
    if example.output_image is None:
        raise ValueError(f"the example {example.instruction[:60]!r} has no output image")
    output = crop_to_multiple_of_16(load_image(example.output_image), max_image_size)
    inputs = [crop_to_multiple_of_16(load_image(image), max_image_size) for image in example.input_images]
    return output, inputs


def image_only_prompt(num_images: int) -> str:
    """The image-only guidance branch's prompt, as the processor writes it."""
    return " ".join(f"<img><|image_{k}|></img>" for k in range(1, num_images + 1))


class TrainingCollator:
    """Turns a list of `Example`s into a `TrainingBatch`, with condition dropout (see the module docstring)."""

    def __init__(self, processor: OmniGenProcessor, condition_dropout: float = 0.0,
                 image_condition_dropout: float = 0.0, unconditional_prompt: str = DEFAULT_UNCONDITIONAL_PROMPT):
        probabilities = {"condition_dropout": condition_dropout, "image_condition_dropout": image_condition_dropout}
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")
        self.processor = processor
        self.condition_dropout = condition_dropout
        self.image_condition_dropout = image_condition_dropout
        self.unconditional_prompt = unconditional_prompt

    def choose_branch(self, has_images: bool, rng: random.Random) -> str:
        drop_all, keep_images_only = rng.random(), rng.random()
        if drop_all < self.condition_dropout:
            return UNCONDITIONAL
        if has_images and keep_images_only < self.image_condition_dropout:
            return IMAGE_ONLY
        return FULL

    def __call__(self, examples: Sequence[Example], max_image_size: int, rng: random.Random,
                 example_keys: Sequence | None = None) -> TrainingBatch:
        if not examples:
            raise ValueError("a training batch needs at least one example")
        pictures = [prepare_images(example, max_image_size) for example in examples]
        width, height = pictures[0][0].size
        prompts, refs, edit_inputs, branches, outputs = [], [], [], [], []
        for row, (example, (output, inputs)) in enumerate(zip(examples, pictures)):
            if output.size != (width, height):
                inputs = [fit_to_size(image, width, height) if image.size == output.size else image for image in inputs]
                output = fit_to_size(output, width, height)
            branch = self.choose_branch(bool(inputs), rng)
            prompt, image_indices = self.encode_branch(example.instruction, inputs, branch, max_image_size, row)
            if len(inputs) == 1 and image_indices and inputs[0].size == output.size:
                edit_inputs.append(len(refs))  # the row's first span: all its spans show the same image
            else:
                edit_inputs.append(None)
            refs.extend((row, index) for index in image_indices)
            prompts.append(prompt)
            branches.append(branch)
            outputs.append(image_to_tensor(output))
        num_output_tokens = (height // PATCH_PIXELS) * (width // PATCH_PIXELS)
        model_inputs = collate(prompts, num_output_tokens, self.processor.pad_token_id)
        input_images = model_inputs.pop("input_images")
        keys = list(example_keys) if example_keys is not None else [None] * len(examples)
        return TrainingBatch(model_inputs, input_images, refs, torch.stack(outputs), edit_inputs, branches, keys)

    def encode_branch(self, instruction: str, inputs: list[Image.Image], branch: str, max_image_size: int,
                      row: int) -> tuple[EncodedPrompt, list[int]]:
        """The encoded prompt of one branch and, per image span, which input image fills it."""
        try:
            if branch == UNCONDITIONAL:
                return self.processor.encode(self.unconditional_prompt, []), []
            if branch == IMAGE_ONLY:
                prompt = self.processor.encode(image_only_prompt(len(inputs)), inputs, max_image_size)
                return prompt, list(range(len(inputs)))
            image_ids = parse_image_tags(instruction, len(inputs))
            prompt = self.processor.encode(instruction, inputs, max_image_size)
            return prompt, [image_id - 1 for image_id in image_ids]
        except ValueError as error:
            raise ValueError(f"example {row + 1} of the batch ({instruction[:60]!r}): {error}") from None
