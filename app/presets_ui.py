"""The Generate tab's task presets and examples: the picker, what a preset says it needs, and what choosing
a preset, a few-shot size or an example changes on the page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.presets import PRESETS, example_settings, examples_for, get_preset, preset_parts

from .engine import MAX_INPUT_IMAGES, Studio

SLOTS = range(1, MAX_INPUT_IMAGES + 1)


def build_preset_picker():
    choices = [(p.title, p.name) for p in PRESETS.values()]
    preset = gr.Radio(choices, value="text_to_image", label="Task preset", elem_id="preset")
    preset_info = gr.Markdown(preset_markdown("text_to_image"), elem_id="preset-info")
    variant = gr.Radio([], label="Variant", visible=False, elem_id="preset-variant")
    examples = gr.Dataset(components=[gr.Textbox(visible=False)], samples=example_samples("text_to_image"),
                          type="index", label="Examples (click one to load it)", elem_id="examples",
                          samples_per_page=4)
    return preset, preset_info, variant, examples


def preset_markdown(name: str, labels: Sequence[str] | None = None) -> str:
    preset = get_preset(name)
    labels = preset.image_labels if labels is None else labels
    needs = ", ".join(f"**image {k}**: {label}" for k, label in enumerate(labels, start=1)) or "no input image"
    tips = "; ".join(f"{key.replace('_', ' ')} = {value}" for key, value in preset.settings.items())
    return f"{preset.description}  \nNeeds {needs}.  \nRecommended: {tips}."


def example_samples(name: str) -> list[list[str]]:
    return [[example.title or example.prompt] for example in examples_for(name)] or [["(no examples yet)"]]


def slot_label_updates(labels: Sequence[str], values: Sequence[str | None] | None = None) -> list[Any]:
    """Slot widgets labelled with what each image must show; with `values`, also filled."""
    updates = []
    for k in SLOTS:
        label = f"image {k}: {labels[k - 1]}" if k <= len(labels) else f"image {k}"
        updates.append(gr.Image(label=label) if values is None else gr.Image(values[k - 1], label=label))
    return updates


CONDITION_BUTTONS = {"canny": "Make an edge map from my picture in image 1",
                     "silhouette": "Make a flat depth map (foreground silhouettes) from my picture in image 1"}


def preset_chosen(name: str) -> list[Any]:
    """What choosing a preset changes: prompt, description, variants, examples, settings, slots, extras."""
    chosen = get_preset(name)
    variants = [label for label, _ in chosen.variants]
    return [chosen.template, preset_markdown(name),
            gr.Radio(variants, value=variants[0] if variants else None, visible=bool(variants)),
            gr.Dataset(samples=example_samples(name)),
            *settings_updates(chosen.settings), *slot_label_updates(chosen.image_labels),
            gr.Group(visible=name == "fewshot"),
            gr.Button(CONDITION_BUTTONS.get(chosen.condition, ""), visible=chosen.condition is not None),
            gr.Accordion(visible=chosen.is_edit)]


def wire_presets(studio: Studio, page: dict) -> None:
    preset, variant, prompt = page["preset"], page["variant"], page["prompt"]
    slots, panel, examples = page["slots"], page["panel"], page["examples"]
    recommended = [panel["guidance_scale"], panel["img_guidance_scale"], panel["output_size"]]

    # .input, not .change: a preset restored by "reuse" must not overwrite the restored prompt.
    preset.input(preset_chosen, preset, [prompt, page["preset_info"], variant, examples, *recommended, *slots,
                                  page["fewshot_group"], page["condition_button"], page["mask_group"]],
                 api_visibility="private")
    variant.input(lambda name, label: dict(get_preset(name).variants).get(label, gr.skip()), [preset, variant],
                  prompt, api_visibility="private")

    def build_fewshot(count: float):
        template, labels, settings = preset_parts("fewshot", int(count))
        return [template, preset_markdown("fewshot", labels), *settings_updates(settings),
                *slot_label_updates(labels)]

    page["fewshot_build"].click(build_fewshot, page["fewshot_pairs"], [prompt, page["preset_info"], *recommended,
                                                                       *slots], api_visibility="private")

    def load_example(index: int, name: str):
        chosen = examples_for(name)
        if not chosen or not 0 <= index < len(chosen):
            raise gr.Error("This preset has no examples yet (assets/examples/examples.json).")
        example = chosen[index]
        missing = example.missing_files()
        if missing:
            raise gr.Error(f"The example's pictures are missing: {', '.join(Path(m).name for m in missing)}.")
        files = [studio.import_file(path) for path in example.images]
        labels = get_preset(name).image_labels
        if name == "fewshot" and len(files) % 2 == 1:
            labels = preset_parts("fewshot", len(files) // 2)[1]
        padded = (files + [None] * MAX_INPUT_IMAGES)[:MAX_INPUT_IMAGES]
        return [example.prompt, *slot_label_updates(labels, padded), *settings_updates(example_settings(example))]

    examples.click(load_example, [examples, preset], [prompt, *slots, *recommended], api_visibility="private")

    def make_condition(name: str, image: str | None):
        kind = get_preset(name).condition
        if kind is None:
            raise gr.Error("This preset takes no condition map.")
        if not image:
            raise gr.Error("Upload your picture as image 1 first; it is replaced by the map.")
        try:
            return studio.make_condition(kind, image)
        except ValueError as error:
            raise gr.Error(f"Image 1: {error}") from None

    page["condition_button"].click(make_condition, [preset, slots[0]], slots[0], api_visibility="private")


def settings_updates(settings: dict[str, Any]) -> list[Any]:
    """Widget values for guidance, image guidance (kept if absent) and output size (width x height if absent)."""
    size_source = settings.get("use_input_image_size_as_output", False)  # absent: width x height
    size_source = 1 if size_source is True else int(size_source or 0)
    return [settings.get("guidance_scale", gr.skip()), settings.get("img_guidance_scale", gr.skip()), size_source]

