"""The multimodal prompt processor: token slots, template, masks, positions, images, branches, errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from omnigen.mini.tokenizer import train_tokenizer
from omnigen.processor import (
    EncodedPrompt,
    OmniGenProcessor,
    add_prefix_instruction,
    build_attention_mask,
    collate,
    crop_to_multiple_of_16,
    image_to_tensor,
    interleaved_to_prompt,
    load_image,
    parse_image_tags,
)
from omnigen.settings import OMNIGEN_V1_NEGATIVE_PROMPT

CORPUS = [
    "Generate an image according to the following instructions",
    "make the circle in <img><|image_1|></img> red",
    "a blue square on a white background",
    "blurry, bad anatomy, deformed, ugly",
] * 10


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, out_dir, vocab_size=320)
    return out_dir


@pytest.fixture(scope="module")
def processor(tokenizer_dir):
    return OmniGenProcessor.from_pretrained(tokenizer_dir)


def ids_of(processor, text):
    return processor.tokenizer(text).input_ids


def solid(width, height, colour=(255, 0, 0)):
    return Image.new("RGB", (width, height), colour)


def same_encoding(a: EncodedPrompt, b: EncodedPrompt) -> bool:
    return (
        a.input_ids == b.input_ids
        and a.image_spans == b.image_spans
        and len(a.images) == len(b.images)
        and all(torch.equal(x, y) for x, y in zip(a.images, b.images))
    )


def gradient(width, height):
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8))


# ----------------------------------------------------------------------------- template and tokens


def test_template_wraps_the_prompt_exactly():
    assert add_prefix_instruction("a cat") == (
        "<|user|>\nGenerate an image according to the following instructions\n"
        "a cat<|end|>\n<|assistant|>\n<|diffusion|>"
    )


def test_prompt_without_images_is_one_tokenization(processor):
    encoded = processor.encode("a blue square")
    assert encoded.input_ids == ids_of(processor, add_prefix_instruction("a blue square"))
    assert encoded.images == [] and encoded.image_spans == []


def test_image_gets_h16_times_w16_slots_and_later_chunks_drop_bos(processor):
    encoded = processor.encode("make <img><|image_1|></img> red", [solid(48, 32)])
    before, after = add_prefix_instruction("make <img><|image_1|></img> red").split("<|image_1|>")
    first, second = ids_of(processor, before), ids_of(processor, after)
    assert first[0] == 1 and second[0] == 1
    assert encoded.input_ids == first + [0] * 6 + second[1:]  # (32/16) * (48/16) = 6 slots
    assert encoded.image_spans == [(len(first), len(first) + 6)]
    assert encoded.input_ids.count(1) == 1
    assert [tuple(t.shape) for t in encoded.images] == [(3, 32, 48)]


def test_tags_follow_their_order_and_an_image_can_be_used_twice(processor):
    small, large = solid(16, 16, (0, 255, 0)), solid(64, 32, (0, 0, 255))
    encoded = processor.encode("<|image_2|> then <|image_1|> and <|image_2|>", [small, large])
    assert [end - start for start, end in encoded.image_spans] == [8, 1, 8]
    assert [tuple(t.shape) for t in encoded.images] == [(3, 32, 64), (3, 16, 16), (3, 32, 64)]
    assert encoded.images[1][1].eq(1).all()  # image 1 is the green one
    assert encoded.input_ids[encoded.image_spans[0][1]:encoded.image_spans[1][0]] == ids_of(processor, " then ")[1:]


def test_adjacent_tags_leave_no_bos_between_them(processor):
    encoded = processor.encode("<|image_1|><|image_2|>", [solid(16, 16), solid(16, 16)])
    (_, end_1), (start_2, _) = encoded.image_spans
    assert start_2 == end_1  # the empty chunk between them tokenizes to just BOS, which is dropped


# ----------------------------------------------------------------------------- masks and positions


def test_collate_two_rows_by_hand():
    row_a = EncodedPrompt([5, 0, 0], [torch.zeros(3, 16, 32)], [(1, 3)])
    row_b = EncodedPrompt([0, 7], [torch.ones(3, 16, 16)], [(0, 1)])
    batch = collate([row_a, row_b], num_output_tokens=2, pad_token_id=9)

    assert batch["condition_length"] == 3
    assert batch["input_ids"].tolist() == [[5, 0, 0], [9, 0, 7]]
    # columns: 3 condition tokens (row b: 1 pad + 2 real), the time token, 2 output image tokens
    expected_a = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # the image span (1, 3) sees itself both ways
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],  # time token: causal, no output image column
        [1, 1, 1, 1, 1, 1],  # output image tokens see everything real
        [1, 1, 1, 1, 1, 1],
    ]
    expected_b = [
        [1, 1, 1, 1, 1, 1],  # padded row sees everything, so its softmax is not NaN
        [0, 1, 0, 0, 0, 0],  # padded column hidden from every real row
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1],
    ]
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].int().tolist() == [expected_a, expected_b]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 3, 4]]
    assert batch["input_image_sizes"] == {0: [(1, 3)], 1: [(1, 2)]}
    assert [tuple(x.shape) for x in batch["input_images"]] == [(1, 3, 16, 32), (1, 3, 16, 16)]
    assert batch["input_images"][1].eq(1).all()


def test_mask_of_an_unpadded_row_is_causal_then_full():
    mask = build_attention_mask([4], num_output_tokens=3)[0]
    assert torch.equal(mask[:5, :5], torch.ones(5, 5).tril().bool())
    assert not mask[:5, 5:].any()
    assert mask[5:].all()


def test_padding_shifts_spans_and_positions(processor):
    short = processor.encode("<img><|image_1|></img>", [solid(32, 16)])
    long = processor.encode("a blue square on a white background <img><|image_1|></img>", [solid(16, 16)])
    batch = collate([short, long], num_output_tokens=4, pad_token_id=processor.pad_token_id)
    pad = len(long.input_ids) - len(short.input_ids)
    assert batch["input_ids"][0, :pad].eq(processor.pad_token_id).all()
    assert batch["input_image_sizes"][0] == [(short.image_spans[0][0] + pad, short.image_spans[0][1] + pad)]
    assert batch["input_image_sizes"][1] == long.image_spans
    positions = batch["position_ids"][0]
    assert positions[:pad].eq(0).all()
    assert positions[pad:].tolist() == list(range(len(short.input_ids) + 1 + 4))
    start, end = batch["input_image_sizes"][0][0]
    assert batch["attention_mask"][0, start:end, start:end].all()
    assert not batch["attention_mask"][0, pad:, :pad].any()


def test_collate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        collate([], 4, 0)
    with pytest.raises(ValueError, match="non-negative"):
        collate([EncodedPrompt([1], [], [])], -1, 0)


# ----------------------------------------------------------------------------- images


def test_resize_1000x600_at_512():
    picture = gradient(1000, 600)
    result = crop_to_multiple_of_16(picture, 512)
    # scale 512/1000: 1000x600 -> 512x307 (bicubic), then 307 % 16 = 3 rows cropped: 1 at the top, 2 at the bottom
    assert result.size == (512, 304)
    expected = picture.resize((512, 307), resample=Image.BICUBIC).crop((0, 1, 512, 305))
    assert np.array_equal(np.array(result), np.array(expected))


def test_resize_halves_with_box_while_twice_too_large():
    picture = gradient(2100, 1100)
    result = crop_to_multiple_of_16(picture, 512)
    # 1100 >= 1024: halve to 1050x550 (box); then 512/1050 -> 512x268 (bicubic); 268 % 16 = 12 -> crop 6 + 6
    expected = picture.resize((1050, 550), Image.BOX).resize((512, 268), Image.BICUBIC).crop((0, 6, 512, 262))
    assert result.size == (512, 256)
    assert np.array_equal(np.array(result), np.array(expected))


def test_resize_enlarges_a_side_under_16():
    assert crop_to_multiple_of_16(gradient(40, 10), 1024).size == (64, 16)  # x1.6
    assert crop_to_multiple_of_16(gradient(30, 8), 1024).size == (48, 16)  # x2 -> 60x16, crop 6 + 6
    assert crop_to_multiple_of_16(gradient(64, 48), 1024).size == (64, 48)  # already fine: unchanged


def test_image_to_tensor_is_rgb_in_minus_one_to_one():
    tensor = image_to_tensor(solid(32, 16, (255, 0, 128)))
    assert tensor.shape == (3, 16, 32) and tensor.dtype == torch.float32
    assert tensor[0].eq(1).all() and tensor[1].eq(-1).all()
    assert torch.allclose(tensor[2], torch.tensor(128 / 255 * 2 - 1), atol=1e-6)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    rgb = load_image(rgba)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (0, 0, 255)
    assert all(abs(v - 127) <= 1 for v in rgb.getpixel((2, 0)))


def test_grey_palette_and_16_bit_become_rgb():
    assert load_image(Image.new("L", (2, 2), 100)).getpixel((1, 1)) == (100, 100, 100)
    assert load_image(Image.new("LA", (1, 1), (100, 0))).getpixel((0, 0)) == (255, 255, 255)

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    rgb = load_image(palette)
    assert [rgb.getpixel((0, 0)), rgb.getpixel((1, 0))] == [(255, 255, 255), (0, 255, 0)]

    sixteen = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert sixteen.mode == "I;16"
    assert [load_image(sixteen).getpixel((x, 0)) for x in range(3)] == [(0,) * 3, (100,) * 3, (255,) * 3]

    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [load_image(floats).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_arrays_are_read_as_images():
    assert load_image(np.full((4, 6, 3), 7, np.uint8)).size == (6, 4)
    assert load_image(np.full((2, 2), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((2, 2, 4), np.uint8)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    picture = Image.new("RGB", (20, 10), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    path = tmp_path / "rotated.png"
    picture.save(path, exif=exif)
    upright = load_image(path)
    assert upright.size == (10, 20)
    assert upright.getpixel((5, 2)) == (255, 0, 0) and upright.getpixel((5, 17)) == (0, 0, 255)


def test_unreadable_missing_truncated_empty_and_huge_images(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a picture")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(garbage)
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.png")

    good = tmp_path / "good.png"
    gradient(64, 64).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(truncated)

    with pytest.raises(ValueError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match="more than the limit"):
        load_image(good, max_pixels=1000)
    with pytest.raises(ValueError, match="more than the limit"):
        load_image(solid(100, 100), max_pixels=5000)
    with pytest.raises(ValueError, match="file path, a PIL image or a numpy array"):
        load_image(42)


# ----------------------------------------------------------------------------- tags


def test_parse_image_tags_gives_ids_in_order():
    assert parse_image_tags("<|image_2|> and <|image_1|> and <|image_2|>", 2) == [2, 1, 2]
    assert parse_image_tags("no images", 0) == []


@pytest.mark.parametrize(
    "prompt, num_images, message",
    [
        ("<|image_2|>", 1, r"refers to <\|image_2\|> but only 1 image"),
        ("<|image_1|>", 0, "no images were given"),
        ("<|image_1|>", 2, r"image\(s\) 2 have no <\|image_k\|> tag"),
        ("no tag", 1, r"image\(s\) 1 have no"),
        ("<|image_1|> <|image_3|>", 3, "uses 1, 3 but not 2"),
        ("<|image_0|>", 1, "malformed image tag '<\\|image_0\\|>'"),
        ("<|image_a|>", 1, "malformed image tag"),
        ("<|image1|>", 1, "malformed image tag"),
        ("<image_1>", 1, "malformed image tag"),
    ],
)
def test_parse_image_tags_errors(prompt, num_images, message):
    with pytest.raises(ValueError, match=message):
        parse_image_tags(prompt, num_images)


def test_interleaved_parts_become_a_prompt_with_numbered_tags():
    cat, dog = solid(16, 16), solid(32, 16)
    prompt, images = interleaved_to_prompt(["Put", cat, "next to ", dog, " and", cat])
    assert prompt == "Put <img><|image_1|></img> next to <img><|image_2|></img> and <img><|image_1|></img>"
    assert images[0] is cat and images[1] is dog and len(images) == 2
    with pytest.raises(ValueError, match="put the images themselves"):
        interleaved_to_prompt(["see <|image_1|>", cat])
    with pytest.raises(ValueError, match="is of type int"):
        interleaved_to_prompt(["text", 3])


# ----------------------------------------------------------------------------- branches


def test_branches_cond_uncond_and_image_only(processor):
    picture = solid(48, 32)
    (branches,) = processor("make <img><|image_1|></img> red", [picture], height=64, width=80)
    assert (branches.height, branches.width) == (64, 80)
    assert same_encoding(branches.cond, processor.encode("make <img><|image_1|></img> red", [picture]))
    assert branches.uncond.input_ids == ids_of(processor, add_prefix_instruction(OMNIGEN_V1_NEGATIVE_PROMPT))
    assert branches.uncond.images == [] and branches.uncond.image_spans == []
    assert same_encoding(branches.img_cond, processor.encode("<img><|image_1|></img>", [picture]))


def test_image_only_branch_lists_every_image_once(processor):
    images = [solid(16, 16), solid(32, 16)]
    (branches,) = processor("<|image_2|> like <|image_1|> and <|image_2|>", images, height=16, width=16,
                            negative_prompt="ugly")
    assert same_encoding(branches.img_cond, processor.encode("<img><|image_1|></img> <img><|image_2|></img>", images))
    assert branches.uncond.input_ids == ids_of(processor, add_prefix_instruction("ugly"))


def test_no_image_only_branch_without_images_or_image_guidance(processor):
    (text_only,) = processor("a blue square", height=64, width=64)
    assert text_only.img_cond is None and text_only.cond.images == []
    (no_guidance,) = processor("<|image_1|>", [solid(16, 16)], height=64, width=64, use_img_guidance=False)
    assert no_guidance.img_cond is None and len(no_guidance.cond.images) == 1


def test_several_prompts_with_their_own_images_and_sizes(processor):
    branches = processor(
        ["a blue square", "make <img><|image_1|></img> red", ["put", solid(16, 16), "here"]],
        [None, [solid(32, 32)], None],
        height=[64, 32, 16],
        width=48,
    )
    assert [(b.height, b.width) for b in branches] == [(64, 48), (32, 48), (16, 48)]
    assert [len(b.cond.images) for b in branches] == [0, 1, 1]
    assert same_encoding(branches[2].cond, processor.encode("put <img><|image_1|></img> here", [solid(16, 16)]))
    assert branches[0].img_cond is None and branches[1].img_cond is not None


def test_output_size_from_an_input_image(processor):
    images = [solid(48, 32), gradient(1000, 600)]
    prompt = "<|image_1|> and <|image_2|>"
    (first,) = processor(prompt, images, use_input_image_size_as_output=True, max_input_image_size=512)
    assert (first.height, first.width) == (32, 48)
    (second,) = processor(prompt, images, use_input_image_size_as_output=2, max_input_image_size=512)
    assert (second.height, second.width) == (304, 512)
    with pytest.raises(ValueError, match="size of image 3 but the prompt has only 2"):
        processor(prompt, images, use_input_image_size_as_output=3)
    with pytest.raises(ValueError, match="has no input images"):
        processor("text only", use_input_image_size_as_output=True)


@pytest.mark.parametrize(
    "height, width, message",
    [
        (1000, 64, "height 1000 is not a multiple of 16; use 992 or 1008"),
        (64, 8, "width 8 is not a multiple of 16; use 16"),
        (0, 64, "height must be positive"),
        (64, -16, "width must be positive"),
        (None, 64, "height is missing"),
        ([64, 64], 64, "height has 2 values for 1 prompt"),
        (64.5, 64, "whole number"),
    ],
)
def test_output_size_errors(processor, height, width, message):
    with pytest.raises(ValueError, match=message):
        processor("a blue square", height=height, width=width)


def test_every_prompt_is_checked_before_any_image_is_read(processor, tmp_path):
    with pytest.raises(ValueError, match=r"prompt 2: .*<\|image_2\|>"):
        processor(["<|image_1|>", "<|image_2|>"], [[tmp_path / "missing.png"], [solid(16, 16)]], height=64, width=64)
    with pytest.raises(ValueError, match="prompt 1, image 1: image file not found"):
        processor(["<|image_1|>", "fine"], [[tmp_path / "missing.png"], None], height=64, width=64)


def test_call_argument_errors(processor):
    with pytest.raises(ValueError, match="negative prompt: .*cannot use images"):
        processor("a", height=64, width=64, negative_prompt="not <|image_1|>")
    with pytest.raises(ValueError, match="carries its own images"):
        processor([["x", solid(16, 16)]], [[solid(16, 16)]], height=64, width=64)
    with pytest.raises(ValueError, match="one list of images per prompt: 2 prompt"):
        processor(["a", "b"], [[solid(16, 16)]], height=64, width=64)
    with pytest.raises(ValueError, match="no prompts"):
        processor([], height=64, width=64)
    with pytest.raises(ValueError, match="max_input_image_size"):
        processor("a", height=64, width=64, max_input_image_size=8)


# ----------------------------------------------------------------------------- loading


def test_from_pretrained_reads_the_diffusers_layout_and_config_pad(tokenizer_dir, tmp_path):
    model_dir = tmp_path / "model"
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(model_dir / "tokenizer"))
    (model_dir / "config.json").write_text(json.dumps({"pad_token_id": 2}))
    processor = OmniGenProcessor.from_pretrained(model_dir)
    assert processor.pad_token_id == 2
    assert processor.encode("a").input_ids[0] == 1
    assert OmniGenProcessor.from_pretrained(tokenizer_dir).pad_token_id == 3  # the tokenizer's <|endoftext|>
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        OmniGenProcessor.from_pretrained(empty)
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        OmniGenProcessor.from_pretrained(tmp_path / "nowhere")
