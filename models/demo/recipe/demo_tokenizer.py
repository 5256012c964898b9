"""Train the demo model's sentencepiece tokenizer on train-split dialogues only.

Special ids are fixed: pad=0 `[PAD]`, unk=1 `[UNK]`, bos=2 `[BOS]`, eos=3 `[EOS]`, query=4 `[Q]`,
answer=5 `[A]`. `[Q]` and `[A]` are *control* symbols: sentencepiece never produces them from text
(a user typing "[Q]" gets ordinary pieces); the runtime inserts their ids itself. Byte fallback
makes every string encodable, including held-out entity values the tokenizer never saw.

Entity values are masked out of the dialogue text and added back as a lexicon (each train value a
few times). Otherwise every train name would become one whole-word piece while held-out names fall
apart into pieces the model never saw in training, whose embeddings would stay untrained. With the
lexicon, train and held-out values alike are spelled with shared sub-word pieces.

BPE, vocab 1024: unigram cannot reach 1000 pieces on this small closed corpus (sentencepiece caps
it near 720), and a larger BPE vocab starts merging whole train values into single pieces. About
11% of held-out values still use one piece that deterministic encoding of train text never emits
(e.g. a lone "j" or "w"); training the model with BPE-dropout (`sp.encode(text,
enable_sampling=True, alpha=0.05)`) exercises every such piece. `heldout_coverage` measures both.

Run `python models/demo/recipe/demo_tokenizer.py` to write `models/demo/tokenizer.model`.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

# A sibling script: found on sys.path when run as a script (its folder is sys.path[0]) and
# when tests put this folder on sys.path.
import demo_dialogues as dd
import sentencepiece as spm

#: name -> (id, piece). The ids are part of the model's contract; training checks them.
SPECIAL_TOKENS: dict[str, tuple[int, str]] = {
    "pad": (0, "[PAD]"),
    "unk": (1, "[UNK]"),
    "bos": (2, "[BOS]"),
    "eos": (3, "[EOS]"),
    "query": (4, "[Q]"),
    "answer": (5, "[A]"),
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tokenizer.model"
DEFAULT_VOCAB_SIZE = 1024
DEFAULT_N_DIALOGUES = 20000
MASK_WORD = "it"


def _value_pattern() -> re.Pattern[str]:
    """Every non-numeric train value as a whole word (numbers are split into digits anyway)."""
    words = {v for pool in dd.POOLS for v in dd.pool_values(pool, "train") if not v.isdigit()}
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def tokenizer_corpus(
    seed: int = 0, n_dialogues: int = DEFAULT_N_DIALOGUES, lexicon_repeats: int = 2
) -> list[str]:
    """Training sentences: masked train-split dialogue text, then the train value lexicon."""
    if lexicon_repeats < 1:
        raise ValueError(f"lexicon_repeats must be >= 1, got {lexicon_repeats!r}")
    pattern = _value_pattern()
    lines = []
    for dialogue in dd.generate_dialogues(n_dialogues, seed, split="train"):
        for turn in dialogue:
            lines.append(pattern.sub(MASK_WORD, turn.query))
            lines.append(pattern.sub(MASK_WORD, turn.answer))
    lexicon = [v for pool in dd.POOLS for v in dd.pool_values(pool, "train")]
    return lines + lexicon * lexicon_repeats


def train_tokenizer(
    out_path: str | Path = DEFAULT_OUT,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    n_dialogues: int = DEFAULT_N_DIALOGUES,
    model_type: str = "bpe",
) -> dict[str, int]:
    """Train on `tokenizer_corpus(seed, n_dialogues)`, write `out_path`, return the special ids.

    Deterministic: fixed corpus order, one thread, no input sampling, and the model is written
    from memory (no temporary paths end up inside the model file).
    """
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    n_reserved = len(SPECIAL_TOKENS) + 256  # specials + byte-fallback pieces
    if vocab_size <= n_reserved:
        raise ValueError(f"vocab_size must exceed {n_reserved} (specials + 256 bytes), got {vocab_size!r}")
    corpus = tokenizer_corpus(seed, n_dialogues)
    ids = {name: i for name, (i, _) in SPECIAL_TOKENS.items()}
    pieces = {name: p for name, (_, p) in SPECIAL_TOKENS.items()}
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        pad_id=ids["pad"],
        unk_id=ids["unk"],
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_piece=pieces["pad"],
        unk_piece=pieces["unk"],
        bos_piece=pieces["bos"],
        eos_piece=pieces["eos"],
        control_symbols=[pieces["query"], pieces["answer"]],
        minloglevel=2,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
    found = special_ids(out)
    if found != ids:
        raise RuntimeError(f"{out}: special ids {found} differ from the declared {ids}")
    return found


def special_ids(model_path: str | Path) -> dict[str, int]:
    """The special ids of a trained model, looked up by piece (-1 where a piece is missing)."""
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    result = {}
    for name, (_, piece) in SPECIAL_TOKENS.items():
        i = sp.piece_to_id(piece)
        result[name] = i if sp.id_to_piece(i) == piece else -1
    return result


def heldout_coverage(
    model_path: str | Path, seed: int = 0, n_dialogues: int = 2000, dropout: float = 0.0
) -> dict[str, float]:
    """How well train-split text exercises the pieces that held-out values are spelled with.

    `covered`: fraction of held-out values whose pieces all occur when encoding `n_dialogues`
    train dialogues (a piece that never occurs in training has an untrained embedding), encoded
    with BPE-dropout `dropout` (0: deterministic encoding).
    `byte_fallback`: fraction of held-out values needing byte pieces. `pieces_per_value`: mean
    pieces per held-out value; `single_piece_train`: fraction of train values that are one piece.
    """
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    spm.set_random_generator_seed(seed)
    sampling = {"enable_sampling": True, "alpha": dropout} if dropout > 0 else {}
    seen: set[int] = set()
    for dialogue in dd.generate_dialogues(n_dialogues, seed, split="train"):
        for turn in dialogue:
            seen.update(sp.encode(turn.query, **sampling))
            seen.update(sp.encode(turn.answer, **sampling))
    held = [v for pool in dd.POOLS for v in dd.pool_values(pool, "heldout")]
    train = [v for pool in dd.POOLS for v in dd.pool_values(pool, "train")]
    # Values follow a space in the dialogues, hence the leading space.
    held_ids = [sp.encode(" " + v) for v in held]
    return {
        "covered": sum(set(ids) <= seen for ids in held_ids) / len(held),
        "byte_fallback": sum(any(sp.is_byte(i) for i in ids) for ids in held_ids) / len(held),
        "pieces_per_value": sum(map(len, held_ids)) / len(held),
        "single_piece_train": sum(len(sp.encode(" " + v)) == 1 for v in train) / len(train),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--n-dialogues", type=int, default=DEFAULT_N_DIALOGUES)
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="bpe")
    args = p.parse_args(argv)
    ids = train_tokenizer(args.out, args.seed, args.vocab_size, args.n_dialogues, args.model_type)
    sp = spm.SentencePieceProcessor(model_file=str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, vocab {sp.vocab_size()})")
    print("special ids:", json.dumps(ids))
    for dropout in (0.0, 0.05):
        cov = heldout_coverage(args.out, args.seed, dropout=dropout)
        print(
            f"held-out coverage (BPE-dropout {dropout}):",
            json.dumps({k: round(v, 3) for k, v in cov.items()}),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
