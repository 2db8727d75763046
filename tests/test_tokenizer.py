"""The embedded model's BPE tokenizer: ids of the special tokens, BOS, unseen words, loading, determinism."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from omnigen.mini.tokenizer import SPECIAL_TOKENS, train_tokenizer

CORPUS = [
    "a red circle on a white background",
    "a blue square in the top left corner",
    "make the circle in <img><|image_1|></img> green",
    "Generate an image according to the following instructions",
    "a yellow triangle at the bottom right",
] * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, out_dir, vocab_size=400)
    return out_dir


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_saved_files_load_with_auto_tokenizer(tokenizer_dir, tokenizer):
    assert sorted(p.name for p in tokenizer_dir.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    ]
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == 3


def test_each_special_token_is_one_id_in_the_fixed_order(tokenizer):
    assert SPECIAL_TOKENS[:3] == ["<unk>", "<s>", "</s>"]
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
        if token != "<s>":
            assert tokenizer(token).input_ids == [1, expected_id]
    template = "<|user|>\nhi<|end|>\n<|assistant|>\n<|diffusion|><img>x</img>"
    ids = tokenizer(template).input_ids
    for token in ("<|user|>", "<|end|>", "<|assistant|>", "<|diffusion|>", "<img>", "</img>"):
        assert ids.count(tokenizer.convert_tokens_to_ids(token)) == 1


def test_every_encoding_starts_with_bos(tokenizer):
    for text in ["", "a red circle", "<|user|>", "\n", "  spaced  "]:
        ids = tokenizer(text).input_ids
        assert ids[0] == 1
        assert ids.count(1) == 1


def test_unseen_words_fall_back_to_pieces_not_unk(tokenizer):
    for text in ["magenta hexagon", "zigzag 0123456789 !?#$%&*+-/=@[]^_{|}~", "café ☃ 日本"]:
        ids = tokenizer(text).input_ids
        assert 0 not in ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer("magenta").input_ids != tokenizer("hexagon").input_ids


def test_training_merges_frequent_words_and_respects_vocab_size(tokenizer):
    assert len(tokenizer) <= 400
    # " circle" is frequent in the corpus: one token; lowercasing maps "Circle" to the same ids.
    assert len(tokenizer(" circle").input_ids) == 2
    assert tokenizer("A Red Circle").input_ids == tokenizer("a red circle").input_ids


def test_same_corpus_gives_the_same_files(tmp_path, tokenizer_dir):
    train_tokenizer(CORPUS, tmp_path, vocab_size=400)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (tokenizer_dir / name).read_bytes()


def test_retraining_replaces_files_and_leaves_no_scratch(tmp_path):
    train_tokenizer(CORPUS, tmp_path, vocab_size=300)
    train_tokenizer(["only magenta words here"] * 5, tmp_path, vocab_size=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    ]
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(reloaded(" magenta").input_ids) == 2


def test_too_small_vocab_is_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size >= 266"):
        train_tokenizer(CORPUS, tmp_path, vocab_size=100)
