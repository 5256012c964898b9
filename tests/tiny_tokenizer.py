"""A byte-level BPE tokenizer built on the fly for random-weight test models (no downloads)."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[Q]", "[A]"]  # ids 0..4, matching model_configs.SPECIAL

CORPUS = [
    "Hi, I'm Ann. I live in Paris and I have a dog called Rex.",
    "What is my name? Your name is Ann. Where do I live? You live in Paris.",
    "The weather is nice today. Tell me a joke. Why did the chicken cross the road?",
] * 20


def write_tokenizer(path: Path, vocab_size: int = 300) -> Path:
    from rxt_edge.export.tokenizer_files import write_byte_level_tokenizer

    return write_byte_level_tokenizer(path, CORPUS, vocab_size)
