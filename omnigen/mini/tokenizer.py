"""The vocabulary of the embedded model: a small byte-level BPE tokenizer trained on the mini world.

It is laid out like the Phi-3 tokenizer that OmniGen-v1 uses, so the same processor reads both:
`<s>` is prepended to every encoding, `<|endoftext|>` pads, and the chat-template markers are single
tokens. Saved files load with `transformers.AutoTokenizer.from_pretrained(out_dir)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..files import atomic_save, atomic_write_text

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<|endoftext|>"
TEMPLATE_TOKENS = ["<|user|>", "<|end|>", "<|assistant|>", "<|diffusion|>", "<img>", "</img>"]
# Order fixes the ids: <unk>=0, <s>=1, </s>=2 as in Llama/Phi-3, then the pad and the template markers.
SPECIAL_TOKENS = [UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *TEMPLATE_TOKENS]

# Generous: no prompt of the studio comes near it, and transformers warns only above it.
MODEL_MAX_LENGTH = 131072


def build_untrained_tokenizer() -> Tokenizer:
    """An empty byte-level BPE pipeline: lowercase, split on words, bytes as the base alphabet."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    # Lowercasing halves what a tiny model has to learn; "Red" and "red" mean the same in the mini world.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 1024) -> None:
    """Train a BPE tokenizer on `corpus` and save it to `out_dir` in the transformers layout.

    Every byte is in the base alphabet, so words never seen in the corpus ("magenta", "hexagon", any
    Unicode) fall back to smaller pieces and never to `<unk>`. The same corpus gives the same files.
    """
    min_vocab_size = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < min_vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the special tokens and the 256 byte symbols "
            f"need {min_vocab_size}; use vocab_size >= {min_vocab_size}."
        )
    tokenizer = build_untrained_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((str(text) for text in corpus), trainer=trainer)
    _check_special_token_ids(tokenizer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    _save_atomically(tokenizer, Path(out_dir))


def _check_special_token_ids(tokenizer: Tokenizer) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            actual_id = tokenizer.token_to_id(token)
            raise RuntimeError(f"tokenizer training gave {token!r} id {actual_id}, expected {expected_id}")


def _transformers_config() -> tuple[dict, dict]:
    """tokenizer_config.json and special_tokens_map.json, readable by transformers 4.x and 5.x."""
    special_tokens_map = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN,
        "pad_token": PAD_TOKEN,
        "additional_special_tokens": list(TEMPLATE_TOKENS),
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens_map,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
    }
    return tokenizer_config, special_tokens_map


def _save_atomically(tokenizer: Tokenizer, out_dir: Path) -> None:
    # Each file is written aside and renamed into place, so that a crash never leaves a half-written file where a
    # good one was (the two config files are constants: only tokenizer.json depends on the corpus).
    atomic_save(out_dir / "tokenizer.json", lambda temporary: tokenizer.save(str(temporary), pretty=True))
    tokenizer_config, special_tokens_map = _transformers_config()
    configs = {"tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special_tokens_map}
    for name, content in configs.items():
        atomic_write_text(out_dir / name, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
