"""Interleaved prompt assembly: placing, removing and reordering images keeps every tag on its picture."""

import random
import re

import pytest

from app.prompt_editing import (check_prompt_images, image_problems, insert_image_tag, move_image, move_item,
                                remove_image, remove_item, render_prompt_html, tag_ids)
from omnigen.presets import FEWSHOT_LEAD, fewshot_prompt, fewshot_request, image_tag
from omnigen.processor import parse_image_tags

T1, T2, T3 = image_tag(1), image_tag(2), image_tag(3)


def pictures_in_reading_order(text: str, slots: list) -> list:
    """What each tag of the prompt shows: the identity that the editing functions must preserve."""
    return [slots[k - 1] for k in tag_ids(text)]


# ----------------------------------------------------------------------------- insert


def test_insert_puts_the_tag_at_the_position_with_spaces():
    text = "make the circle green"
    assert insert_image_tag(text, 0, 1) == f"{T1} make the circle green"
    assert insert_image_tag(text, len(text), 1) == f"make the circle green {T1}"
    assert insert_image_tag(text, 4, 2) == f"make {T2} the circle green"  # after the space: no double space
    assert insert_image_tag("ab", 1, 1) == f"a {T1} b"  # inside a word: spaces on both sides
    assert insert_image_tag("", 0, 1) == T1


def test_insert_clamps_a_position_beyond_the_text():
    assert insert_image_tag("red", 99, 1) == f"red {T1}"
    assert insert_image_tag("red", -5, 1) == f"{T1} red"


def test_insert_refuses_image_zero():
    with pytest.raises(ValueError, match="start at 1"):
        insert_image_tag("x", 0, 0)


# ----------------------------------------------------------------------------- remove


def test_remove_drops_the_tag_and_renumbers_the_later_images():
    text = f"put {T1} next to {T2}, then {T3}."
    assert remove_image(text, 2) == f"put {T1} next to, then {T2}."
    assert remove_image(text, 1) == f"put next to {T1}, then {T2}."
    assert remove_image(text, 3) == f"put {T1} next to {T2}, then."


def test_remove_drops_every_use_of_the_image_and_bare_tags_too():
    text = f"{T2} looks like {T1}; keep <|image_2|> and <|image_3|>"
    assert remove_image(text, 2) == f"looks like {T1}; keep and {T2}"


def test_remove_item_moves_later_slots_up():
    assert remove_item(["a", "b", "c", None, None], 2) == ["a", "c", None, None, None]
    with pytest.raises(ValueError, match="no image slot 6"):
        remove_item(["a"] * 5, 6)


def test_remove_keeps_every_remaining_tag_on_its_picture():
    rng = random.Random(0)
    for _ in range(200):
        count = rng.randint(1, 5)
        slots = [f"pic{k}" for k in range(1, count + 1)] + [None] * (5 - count)
        text = " ".join(rng.choice(["word", image_tag(rng.randint(1, count))]) for _ in range(8))
        k = rng.randint(1, count)
        before = [p for p in pictures_in_reading_order(text, slots) if p != f"pic{k}"]
        new_text, new_slots = remove_image(text, k), remove_item(slots, k)
        assert pictures_in_reading_order(new_text, new_slots) == before
        assert f"pic{k}" not in new_slots


# ----------------------------------------------------------------------------- move


def test_move_renumbers_the_tags_with_their_pictures():
    text = f"{T1} wears {T2} in front of {T3}"
    assert move_image(text, 3, 1, 3) == f"{T2} wears {T3} in front of {T1}"
    assert move_image(text, 1, 2, 3) == f"{T2} wears {T1} in front of {T3}"
    assert move_item(["a", "b", "c"], 3, 1) == ["c", "a", "b"]
    assert move_item(["a", "b", "c"], 1, 2) == ["b", "a", "c"]


def test_move_keeps_every_tag_on_its_picture():
    rng = random.Random(1)
    for _ in range(300):
        count = rng.randint(1, 5)
        slots = [f"pic{k}" for k in range(1, count + 1)]
        text = " ".join(rng.choice(["word", image_tag(rng.randint(1, count))]) for _ in range(8))
        k, j = rng.randint(1, count), rng.randint(1, count)
        new_text, new_slots = move_image(text, k, j, count), move_item(slots, k, j)
        assert pictures_in_reading_order(new_text, new_slots) == pictures_in_reading_order(text, slots)
        assert new_slots[j - 1] == f"pic{k}"


def test_move_out_of_range_says_so():
    with pytest.raises(ValueError, match="cannot move image 4"):
        move_image(T1, 4, 1, 3)


# ----------------------------------------------------------------------------- mismatches


def test_a_matching_prompt_has_no_problems_and_passes_the_processor():
    text = f"{T1} wears the shirt of {T2}"
    slots = ["a.png", "b.png", None, None, None]
    assert image_problems(text, slots) == []
    assert check_prompt_images(text, slots) is None
    assert parse_image_tags(text, 2) == [1, 2]


def test_a_tag_without_its_picture_is_reported_by_slot():
    problems = image_problems(f"{T1} and {T2}", ["a.png", None, None, None, None])
    assert problems == ["The prompt uses <|image_2|> but image slot 2 is empty: upload a picture there or "
                        "remove the tag."]


def test_a_picture_without_its_tag_is_reported():
    message = check_prompt_images(f"make {T1} blue", ["a.png", "b.png", None, None, None])
    assert "Image 2 is uploaded but the prompt does not use it" in message and T2 in message


def test_a_gap_between_slots_is_reported():
    problems = image_problems(f"{T1} {T3}", ["a.png", None, "c.png", None, None])
    assert any("Image slot 2 is empty but slot 3 is not" in p for p in problems)


def test_a_tag_beyond_the_slots_and_a_malformed_tag_are_reported():
    assert "only 5 image slots" in check_prompt_images(image_tag(6), ["x"] * 5 + [])
    assert check_prompt_images("<|image_0|> red", [None] * 5).startswith("Malformed image tag")
    assert "no picture" not in check_prompt_images("text only", ["a.png", None, None, None, None])


# ----------------------------------------------------------------------------- rendering


def test_render_puts_thumbnails_where_the_tags_are_and_escapes_text():
    html = render_prompt_html(f"<b>x</b> {T2} then {T1}", {1: "data:one", 2: "data:two"})
    assert html.index("data:two") < html.index("data:one")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "match" in html


def test_render_marks_a_missing_picture_and_lists_problems():
    html = render_prompt_html(f"edit {T1}", {}, ["The prompt uses <|image_1|> but image slot 1 is empty."])
    assert "prompt-missing" in html and "image 1?" in html
    assert "&lt;|image_1|&gt; but image slot 1 is empty" in html


# ----------------------------------------------------------------------------- few-shot


def test_fewshot_prompt_is_the_in_context_wording():
    assert fewshot_prompt(1) == ("According to the following examples, generate an output for the input. "
                                 f"Input: {T1} Output: {T2} Input: {T3} Output:")
    two = fewshot_prompt(2)
    assert tag_ids(two) == [1, 2, 3, 4, 5] and two.endswith(f"Input: {image_tag(5)} Output:")
    with pytest.raises(ValueError, match="at least one example pair"):
        fewshot_prompt(0)


def test_fewshot_prompt_matches_the_training_tasks_word_for_word():
    from omnigen.mini.tasks import generate

    samples = [s for s in generate("fewshot", 30, seed=3) if s.instruction.startswith(FEWSHOT_LEAD)]
    assert samples, "the mini world no longer uses the few-shot lead sentence"
    for sample in samples:
        pairs = (len(sample.input_images) - 1) // 2
        assert sample.instruction == fewshot_prompt(pairs)


def test_fewshot_request_orders_pairs_then_query_and_sizes_from_the_query():
    prompt, images, settings = fewshot_request([("in1", "out1"), ("in2", "out2")], "query")
    assert images == ["in1", "out1", "in2", "out2", "query"]
    assert prompt == fewshot_prompt(2)
    assert settings["use_input_image_size_as_output"] == 5
    parse_image_tags(prompt, len(images))
    with pytest.raises(ValueError, match="example pair 1 needs both"):
        fewshot_request([("in1", None)], "query")
    with pytest.raises(ValueError, match="query input"):
        fewshot_request([("in1", "out1")], None)


def test_tags_are_counted_with_and_without_wrappers():
    assert tag_ids(f"{T2} <|image_1|> <img> <|image_3|> </img>") == [2, 1, 3]
    assert re.sub(r"\s+", " ", remove_image("<img> <|image_1|> </img> x", 1)) == "x"
