"""The Generate tab's task presets and examples: the picker, what a preset says it needs, and what choosing
a preset, a few-shot size or an example changes on the page."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from omnigen.presets import PRESETS, example_settings, examples_for, get_preset, preset_parts

from .engine import MAX_INPUT_IMAGES, Studio
from .i18n import example_title, image_label, language, preset_title, setting_label, t, text, translator, variant_label

SLOTS = range(1, MAX_INPUT_IMAGES + 1)


def build_preset_picker():
    choices = [(preset_title(p.name), p.name) for p in PRESETS.values()]
    preset = gr.Radio(choices, value="text_to_image", label=t("preset_label"), elem_id="preset")
    # The description and the example names are made on the server: in the browser's language on page load.
    preset_info = gr.Markdown(preset_markdown("text_to_image"), elem_id="preset-info")
    variant = gr.Radio([], label=t("variant_label"), visible=False, elem_id="preset-variant")
    examples = gr.Dataset(components=[gr.Textbox(visible=False)], samples=example_samples("text_to_image"),
                          type="index", label=t("examples_label"), elem_id="examples", samples_per_page=4)
    return preset, preset_info, variant, examples


def preset_markdown(name: str, labels: Sequence[str] | None = None, lang: str = "en") -> str:
    """What the preset does, the images it needs and its recommended settings, in `lang`."""
    preset = get_preset(name)
    labels = preset.image_labels if labels is None else labels
    say = lambda key, **values: text(key, lang=lang, **values)  # noqa: E731
    needs = say("list_separator").join(say("preset_needs_image", k=k, label=image_label(label, lang))
                                       for k, label in enumerate(labels, start=1)) or say("preset_no_input")
    tips = say("tip_separator").join(say("preset_tip", setting=tip_name(key, lang), value=value)
                                     for key, value in preset.settings.items())
    return say("preset_info", description=text(f"preset_{name}_description", lang=lang), needs=needs, tips=tips)


def tip_name(setting: str, lang: str) -> str:
    """A recommended setting as the description names it: its name in words (English), its label otherwise."""
    return setting.replace("_", " ") if lang == "en" else setting_label(setting, lang)


def example_samples(name: str, lang: str = "en") -> list[list[str]]:
    return ([[example_title(name, example.title, lang) if example.title else example.prompt]
             for example in examples_for(name)] or [[text("no_examples", lang=lang)]])


def preset_page_texts(name: str, request: gr.Request | None = None) -> tuple[str, Any]:
    """The preset's description and its examples in the request's language (on page load)."""
    lang = language(request)
    return preset_markdown(name, lang=lang), gr.Dataset(samples=example_samples(name, lang))


def slot_label_updates(labels: Sequence[str], values: Sequence[str | None] | None = None,
                       lang: str | None = None) -> list[Any]:
    """Slot widgets labelled with what each image must show; with `values`, also filled."""
    lang = lang or language()
    updates = []
    for k in SLOTS:
        label = (text("image_k_labelled", lang=lang, k=k, label=image_label(labels[k - 1], lang))
                 if k <= len(labels) else text("image_k", lang=lang, k=k))
        updates.append(gr.Image(label=label) if values is None else gr.Image(values[k - 1], label=label))
    return updates


CONDITION_BUTTONS = {"canny": "condition_canny", "silhouette": "condition_silhouette"}


def preset_chosen(request: gr.Request, name: str) -> list[Any]:
    """What choosing a preset changes: prompt, description, variants, examples, settings, slots, extras."""
    chosen = get_preset(name)
    lang = language(request)
    variants = [(variant_label(name, label, lang), label) for label, _ in chosen.variants]
    condition = CONDITION_BUTTONS.get(chosen.condition)
    return [chosen.template, preset_markdown(name, lang=lang),
            gr.Radio(variants, value=variants[0][1] if variants else None, visible=bool(variants)),
            gr.Dataset(samples=example_samples(name, lang)),
            *settings_updates(chosen.settings), *slot_label_updates(chosen.image_labels, lang=lang),
            gr.Group(visible=name == "fewshot"),
            gr.Button(text(condition, lang=lang) if condition else "", visible=condition is not None),
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
        return [template, preset_markdown("fewshot", labels, language()), *settings_updates(settings),
                *slot_label_updates(labels)]

    page["fewshot_build"].click(build_fewshot, page["fewshot_pairs"], [prompt, page["preset_info"], *recommended,
                                                                       *slots], api_visibility="private")

    def load_example(index: int, name: str):
        tr = translator()
        chosen = examples_for(name)
        if not chosen or not 0 <= index < len(chosen):
            raise gr.Error(tr("error_no_examples"))
        example = chosen[index]
        missing = example.missing_files()
        if missing:
            raise gr.Error(tr("error_example_missing", files=", ".join(Path(m).name for m in missing)))
        files = [studio.import_file(path) for path in example.images]
        labels = get_preset(name).image_labels
        if name == "fewshot" and len(files) % 2 == 1:
            labels = preset_parts("fewshot", len(files) // 2)[1]
        padded = (files + [None] * MAX_INPUT_IMAGES)[:MAX_INPUT_IMAGES]
        return [example.prompt, *slot_label_updates(labels, padded), *settings_updates(example_settings(example))]

    examples.click(load_example, [examples, preset], [prompt, *slots, *recommended], api_visibility="private")

    def make_condition(name: str, image: str | None):
        kind, tr = get_preset(name).condition, translator()
        if kind is None:
            raise gr.Error(tr("error_no_condition"))
        if not image:
            raise gr.Error(tr("error_condition_image"))
        try:
            return studio.make_condition(kind, image)
        except ValueError as error:
            raise gr.Error(tr("error_image_1", message=tr(str(error)))) from None

    page["condition_button"].click(make_condition, [preset, slots[0]], slots[0], api_visibility="private")


def settings_updates(settings: dict[str, Any]) -> list[Any]:
    """Widget values for guidance, image guidance (kept if absent) and output size (width x height if absent)."""
    size_source = settings.get("use_input_image_size_as_output", False)  # absent: width x height
    size_source = 1 if size_source is True else int(size_source or 0)
    return [settings.get("guidance_scale", gr.skip()), settings.get("img_guidance_scale", gr.skip()), size_source]

