"""Tokenizer files for random-weight models (no torch here: the torch-free bench path uses it too)."""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS_TEXT = ["[PAD]", "[BOS]", "[EOS]", "[Q]", "[A]"]  # ids 0..4, as the presets' special_tokens


def write_byte_level_tokenizer(path: str | Path, corpus: list[str], vocab_size: int = 300) -> Path:
    """A small byte-level BPE `tokenizer.json` trained on `corpus`, with the RxT specials at ids 0..4: packages of
    random-weight models need a tokenizer file (no downloads here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS_TEXT,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
