"""Presets (templates, settings, examples), the condition helpers, and the edit mask's pixel fidelity."""

import json

import numpy as np
import pytest
from PIL import Image

from app.compose import composite_edit, keep_outside_mask, mask_from_image, mask_from_layers
from app.prompt_editing import tag_ids
from omnigen.conditions import canny_edges, make_condition, silhouette_depth
from omnigen.presets import (DEFAULT_EXAMPLES_DIR, EXAMPLES_FILE, PRESETS, example_settings, get_preset,
                             load_examples, preset_parts)
from omnigen.processor import crop_to_multiple_of_16, parse_image_tags
from omnigen.settings import GenerationSettings, setting_names

REQUIRED = ("text_to_image", "edit", "tryon", "pose", "depth", "edges", "subject", "extraction", "fewshot")
PIPELINE_ARGUMENTS = set(setting_names())  # what OmniGenPipeline.__call__ takes as keyword changes


def test_every_task_the_studio_offers_has_a_preset():
    assert set(REQUIRED) <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_has_a_runnable_template_and_pipeline_settings(name):
    preset = PRESETS[name]
    assert preset.title and preset.description
    assert parse_image_tags(preset.template, preset.num_images) == tag_ids(preset.template)
    assert set(tag_ids(preset.template)) == set(range(1, preset.num_images + 1))
    assert preset.settings and set(preset.settings) <= PIPELINE_ARGUMENTS
    GenerationSettings().replace(**preset.settings).check()
    size_source = preset.settings.get("use_input_image_size_as_output", False)
    assert size_source is False or 1 <= int(size_source) <= preset.num_images
    for _, template in preset.variants:
        parse_image_tags(template, preset.num_images)


def test_edits_keep_the_input_size_and_text_to_image_takes_no_image():
    assert PRESETS["edit"].settings["use_input_image_size_as_output"] is True
    assert PRESETS["text_to_image"].num_images == 0 and PRESETS["edit"].is_edit
    assert {label for label, _ in PRESETS["extraction"].variants} >= {"edges", "depth", "skeleton", "segmentation"}


def test_the_fewshot_preset_resizes_to_its_number_of_pairs():
    template, labels, settings = preset_parts("fewshot", 2)
    assert tag_ids(template) == [1, 2, 3, 4, 5] and len(labels) == 5
    assert settings["use_input_image_size_as_output"] == 5


# ----------------------------------------------------------------------------- examples


def test_the_example_loader_reads_files_relative_to_the_json(tmp_path):
    Image.new("RGB", (64, 64), "white").save(tmp_path / "scene.png")
    (tmp_path / EXAMPLES_FILE).write_text(json.dumps({
        "edit": [{"prompt": "<img><|image_1|></img> make it blue", "images": ["scene.png"], "settings": {"seed": 3}}],
        "text_to_image": ["a red circle"]}))
    examples = load_examples(tmp_path)
    edit = examples["edit"][0]
    assert edit.images == (str(tmp_path / "scene.png"),) and edit.missing_files() == []
    assert example_settings(edit) == {**PRESETS["edit"].settings, "seed": 3}
    assert examples["text_to_image"][0].prompt == "a red circle"
    (tmp_path / EXAMPLES_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_examples(tmp_path)


def test_no_examples_file_means_no_examples(tmp_path):
    assert load_examples(tmp_path) == {}


def test_the_shipped_examples_cover_every_preset_and_their_files_exist():
    if not (DEFAULT_EXAMPLES_DIR / EXAMPLES_FILE).is_file():
        pytest.skip(f"{DEFAULT_EXAMPLES_DIR / EXAMPLES_FILE} is not there yet (made by omnigen/mini/examples.py)")
    examples = load_examples()
    missing = {name: ex.missing_files() for name, found in examples.items() for ex in found if ex.missing_files()}
    assert not missing, f"examples.json names files that do not exist: {missing}"
    assert [name for name in PRESETS if not examples.get(name)] == [], "presets without an example"
    for name, found in examples.items():
        for example in found:
            parse_image_tags(example.prompt, len(example.images))  # each one runs as written


# ----------------------------------------------------------------------------- condition helpers


def test_canny_edges_match_the_edge_maps_the_model_was_trained_on():
    from omnigen.mini.tasks import generate
    from omnigen.mini.world import render_picture

    sample = generate("edges", 1, seed=0)[0]
    scene = sample.output_image
    assert np.array_equal(np.asarray(canny_edges(scene)), np.asarray(render_picture(sample.spec["inputs"][0])))


def test_silhouette_depth_marks_what_stands_on_a_plain_background():
    picture = Image.new("RGB", (64, 64), (240, 240, 240))
    picture.paste((200, 30, 30), (10, 10, 30, 30))
    depth = np.asarray(silhouette_depth(picture, level=160))[..., 0]
    assert depth[20, 20] == 160 and depth[50, 50] == 0
    assert (depth > 0).sum() == 20 * 20
    with pytest.raises(ValueError, match="unknown condition"):
        make_condition("midas", picture)


# ----------------------------------------------------------------------------- the edit mask


def test_pixels_outside_the_mask_are_the_originals_and_inside_the_edits():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    edited = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    mask = np.zeros((48, 64), bool)
    mask[10:20, 30:50] = True
    kept = np.asarray(keep_outside_mask(original, edited, mask))
    assert np.array_equal(kept[mask], np.asarray(edited)[mask])
    assert np.array_equal(kept[~mask], np.asarray(original)[~mask])


def test_composite_brings_the_original_to_the_geometry_the_model_saw():
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8))  # not multiples of 16
    mask = np.zeros((100, 150), bool)
    mask[:50, :75] = True
    seen = crop_to_multiple_of_16(original, 64)  # what the processor gives the model
    edited = Image.new("RGB", seen.size, (0, 255, 0))
    result = np.asarray(composite_edit(original, edited, mask, 64))
    assert result.shape[:2] == (seen.height, seen.width)
    assert np.array_equal(result[-1, -1], np.asarray(seen)[-1, -1])  # far corner: outside the mask
    assert tuple(result[2, 2]) == (0, 255, 0)  # near corner: inside
    with pytest.raises(ValueError, match="paint the mask on the same picture"):
        composite_edit(original, edited, np.zeros((10, 10), bool), 64)


def test_masks_from_editor_layers_and_from_mask_pictures():
    layer = np.zeros((20, 30, 4), np.uint8)
    layer[5:10, 5:10, 3] = 255
    mask = mask_from_layers([layer, None], (60, 40))  # resized to the picture's (width, height)
    assert mask.shape == (40, 60) and mask[15, 15] and not mask[0, 0]
    assert mask_from_layers([np.zeros((20, 30, 4), np.uint8)], (30, 20)) is None
    white = Image.new("L", (8, 8), 0)
    white.paste(255, (0, 0, 4, 8))
    assert mask_from_image(white).sum() == 32
    assert mask_from_image(Image.new("L", (8, 8), 0)) is None
