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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
