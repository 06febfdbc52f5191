"""An offline word-level tokenizer for synthetic checkpoints, built with ``tokenizers``.

The vocabulary is a few special tokens, the words of a small built-in text, then filler words
(``w123``) up to the model's vocabulary size, so every id a random model emits decodes to text.
Files written: ``tokenizer.json`` and ``tokenizer_config.json`` (``PreTrainedTokenizerFast``
with a small chat template), as ``transformers.AutoTokenizer`` and mlx-lm expect them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TEXT", "write_tokenizer"]

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

TEXT = """
The quick brown fox jumps over the lazy dog. A model is a set of weights and a program that
reads them. Hello, how are you today? I am fine, thank you. What is the capital of France?
Paris is the capital of France. Tell me a story about a small robot who learns to read.
Once upon a time there was a robot in a quiet town. It loved books, music and the sea.
Every morning it walked to the library and read one page, then another, until the sun set.
Why is the sky blue? Light from the sun is scattered by the air, and blue light the most.
Numbers: one two three four five six seven eight nine ten. Yes, no, maybe, please, thanks.
"""

# Roles become special tokens so a whitespace pre-tokenizer never splits them.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' </s> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)


def _words(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for w in re.findall(r"\w+|[^\w\s]", text.lower()):
        seen.setdefault(w, None)
    return list(seen)


def _vocab(vocab_size: int) -> dict[str, int]:
    tokens = list(SPECIAL_TOKENS) + _words(TEXT)
    if vocab_size < len(tokens):
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than the built-in vocabulary ({len(tokens)})"
        )
    tokens += [f"w{i}" for i in range(vocab_size - len(tokens))]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for a ``vocab_size`` model.

    Raises:
        ValueError: ``vocab_size`` can't hold the special tokens and built-in words.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel(_vocab(vocab_size), unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)]
    )
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
