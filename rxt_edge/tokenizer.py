"""Tokenizers for the runtime: one interface over Hugging Face `tokenizers` and `sentencepiece`.

Security property: `encode` is for user text and never yields a special (control) token id, even when
the text spells one ("[BOS]", "[Q]", "[A]", "<s>", ...). Otherwise a user could forge turn boundaries.
The runtime inserts control ids itself, by id. Two layers enforce it:
1. the library is told not to match special tokens in text (`tokenizers`: `encode_special_tokens`);
   sentencepiece has no such switch for user-defined symbols, so layer 2 does the work there;
2. any special id still produced (sentencepiece user-defined symbols, or a BPE whose merges rebuild a
   special token's string) is re-spelled character by character (byte-fallback pieces, then the unknown
   token, as the tokenizer itself does for characters it lacks), so encoding user text never fails.

Text that is not valid Unicode (a `str` with lone surrogates, e.g. from `surrogateescape`; or `bytes`
that are not UTF-8) is not rejected: each bad unit becomes U+FFFD (surrogate pairs are joined).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ._protobuf import fields as _proto_fields

TOKENIZER_KINDS = ("tokenizers", "sentencepiece")


class TokenizerError(ValueError):
    """A tokenizer file cannot be loaded, or ids passed to decode are invalid."""


def clean_text(text: str | bytes) -> str:
    """Valid Unicode for the tokenizer: bad UTF-8 bytes and lone surrogates become U+FFFD."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer(ABC):
    """What the runtime needs from a tokenizer. `special_ids` are the ids user text never produces."""

    special_ids: frozenset[int]

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry (e.g. "[Q]"), or None."""

    @abstractmethod
    def id_to_token(self, token_id: int) -> str | None: ...

    @abstractmethod
    def _encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def _decode(self, ids: list[int], skip_special: bool) -> str: ...

    @abstractmethod
    def _spell(self, token: str) -> list[int]:
        """Ordinary (non-special) ids whose text is `token`, one character at a time."""

    def encode(self, text: str | bytes) -> list[int]:
        """Ids of ordinary user text: no special ids, no BOS/EOS added, never truncated."""
        ids = self._encode(clean_text(text))
        if not self.special_ids.intersection(ids):
            return ids
        out: list[int] = []
        for i in ids:
            if i in self.special_ids:
                out += self._spell(self.id_to_token(i) or "")
            else:
                out.append(i)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`; incomplete UTF-8 at the ends becomes U+FFFD (see DecodeStream for streaming)."""
        checked = []
        n = self.vocab_size
        for i in ids:
            try:
                i = operator.index(i)
            except TypeError:
                raise TokenizerError(f"token ids must be integers, got {type(i).__name__}") from None
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is out of range [0, {n})")
            if not (skip_special and i in self.special_ids):
                checked.append(i)
        return self._decode(checked, skip_special)


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer (`tokenizer.json`); takes ownership of `tk` (reconfigures it)."""

    def __init__(self, tk, special_ids: Iterable[int] = ()) -> None:
        tk.encode_special_tokens = True  # never match special tokens in user text
        tk.no_truncation()  # a tokenizer.json may carry training-time truncation/padding
        tk.no_padding()
        self._tk = tk
        added = {i for i, t in tk.get_added_tokens_decoder().items() if t.special}
        self.special_ids = frozenset(added | {int(i) for i in special_ids})
        unk = getattr(tk.model, "unk_token", None)
        self._unk = tk.token_to_id(unk) if unk else None

    @classmethod
    def from_file(cls, path: str | Path, special_ids: Iterable[int] = ()) -> HFTokenizer:
        from tokenizers import Tokenizer as _Tk

        return cls(_Tk.from_file(str(path)), special_ids)

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tk.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tk.id_to_token(token_id)

    def _encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return self._tk.decode(ids, skip_special_tokens=skip_special)

    def _spell(self, token: str) -> list[int]:
        # A BPE vocab string is in the model's own alphabet (byte-level chars for byte-level BPE),
        # whose single characters are vocabulary entries.
        out = []
        for ch in token:
            i = self._tk.token_to_id(ch)
            if i is None or i in self.special_ids:
                i = self._unk
            if i is not None:  # like the BPE model itself, drop what it cannot represent
                out.append(i)
        return out


# sentencepiece's ModelProto piece types (sentencepiece_model.proto)
_SP_CONTROL, _SP_USER_DEFINED = 3, 4


class SentencePieceTokenizer(Tokenizer):
    """A `sentencepiece` model; control symbols (and user-defined ones, by default) are special."""

    def __init__(self, sp, special_ids: Iterable[int] = (), user_defined_are_special: bool = True) -> None:
        self._sp = sp
        n = sp.get_piece_size()
        types = _sp_piece_types(sp.serialized_model_proto())
        if len(types) != n:  # unexpected proto layout: fall back to what the API exposes
            types = [_SP_CONTROL if sp.is_control(i) else 1 for i in range(n)]
        special = {_SP_CONTROL, _SP_USER_DEFINED} if user_defined_are_special else {_SP_CONTROL}
        self.special_ids = frozenset(
            {i for i, t in enumerate(types) if t in special} | {int(i) for i in special_ids}
        )

    @classmethod
    def from_file(
        cls, path: str | Path, special_ids: Iterable[int] = (), user_defined_are_special: bool = True
    ) -> SentencePieceTokenizer:
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor()
        if not sp.Load(str(path)):
            raise TokenizerError(f"{path}: not a sentencepiece model")
        return cls(sp, special_ids, user_defined_are_special)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    def id_to_token(self, token_id: int) -> str | None:
        return self._sp.id_to_piece(token_id) if 0 <= token_id < self.vocab_size else None

    def _encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int, add_bos=False, add_eos=False)

    def _decode(self, ids: list[int], skip_special: bool) -> str:
        return self._sp.decode(ids)

    def _ordinary(self, piece: str) -> int | None:
        i = self.token_to_id(piece)
        return None if i is None or i in self.special_ids or self._sp.is_unknown(i) else i

    def _spell(self, token: str) -> list[int]:
        out = []
        for ch in token:
            i = self._ordinary(ch)
            if i is not None:
                out.append(i)
                continue
            byte_ids = [self._ordinary(f"<0x{b:02X}>") for b in ch.encode("utf-8")]
            if all(b is not None for b in byte_ids):
                out += byte_ids  # byte-fallback pieces
            else:
                out.append(self._sp.unk_id())  # as sentencepiece encodes an unknown character
        return out


def _sp_piece_types(proto: bytes) -> list[int]:
    """Each piece's type (NORMAL=1 by default) from a serialized ModelProto (field 1: pieces)."""
    try:
        types = []
        for num, wire, val in _proto_fields(proto):
            if num == 1 and wire == 2:
                t = 1
                for n2, w2, v2 in _proto_fields(val):  # type: ignore[arg-type]
                    if n2 == 3 and w2 == 0:
                        t = v2  # type: ignore[assignment]
                types.append(t)
        return types
    except (IndexError, ValueError):
        return []


class DecodeStream:
    """Incremental detokenization: push ids one by one, get text that never splits a character.

    Keeps a short window of ids and decodes it twice (without and with the newest id); the difference
    is new text, held back while it ends in an incomplete UTF-8 sequence (U+FFFD). Decoding a window
    rather than single ids keeps tokenizer-specific spacing (e.g. sentencepiece's leading "▁") right.
    A sequence that stays invalid (the model emitted stray bytes) is released after `max_pending` ids.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True, max_pending: int = 16) -> None:
        self._tok = tokenizer
        self._skip = skip_special
        self._max_pending = max_pending
        self._ids: list[int] = []
        self._prefix = 0  # window start: context for consistent decoding
        self._read = 0  # ids before this are already emitted

    def push(self, token_id: int) -> str:
        """Text completed by `token_id` ("" while a character is incomplete or the id is special)."""
        ids = self._ids + [token_id]
        prefix_text = self._tok.decode(ids[self._prefix : self._read], self._skip)
        new_text = self._tok.decode(ids[self._prefix :], self._skip)  # validates token_id
        self._ids = ids
        held = len(ids) - self._read
        if len(new_text) > len(prefix_text) and (
            not new_text.endswith("\ufffd") or held >= self._max_pending
        ):
            return self._advance(new_text[len(prefix_text) :])
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete final character comes out as U+FFFD)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read], self._skip)
        new_text = self._tok.decode(self._ids[self._prefix :], self._skip)
        return self._advance(new_text[len(prefix_text) :]) if len(new_text) > len(prefix_text) else ""

    def _advance(self, text: str) -> str:
        self._ids = self._ids[self._read :]  # keep only the new window
        self._prefix, self._read = 0, len(self._ids)
        return text


def decode_stream(tokenizer: Tokenizer, ids: Iterable[int], skip_special: bool = True) -> Iterator[str]:
    """Yield the non-empty text pieces of `ids` as DecodeStream produces them, then the flushed rest."""
    stream = DecodeStream(tokenizer, skip_special)
    for i in ids:
        if piece := stream.push(i):
            yield piece
    if rest := stream.flush():
        yield rest


def load_tokenizer(kind: str, path: str | Path, special_ids: Sequence[int] = ()) -> Tokenizer:
    """Load a tokenizer; `special_ids` (e.g. the manifest's special_tokens) join the library's own."""
    path = Path(path)
    if kind not in TOKENIZER_KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; expected one of {list(TOKENIZER_KINDS)}")
    if not path.is_file():
        raise TokenizerError(f"{path}: tokenizer file not found")
    try:
        if kind == "tokenizers":
            return HFTokenizer.from_file(path, special_ids)
        return SentencePieceTokenizer.from_file(path, special_ids)
    except TokenizerError:
        raise
    except Exception as e:  # the libraries raise plain Exception/RuntimeError on malformed files
        raise TokenizerError(f"{path}: cannot load as a {kind} tokenizer: {e}") from e
