"""Request bodies -> plain values, with a clear 400 naming the field for anything wrong.

Messages (Responses `input` lists, Chat Completions `messages`) become (system, earlier turns, query): system /
developer messages first, then user/assistant pairs, ending with the user message to answer. An RxT model keeps
its context in memory, so earlier turns are written into the STM (no decoding), never re-read as a prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rxt_edge.sampling import GenerationConfig

from .errors import ApiError


@dataclass(frozen=True)
class Limits:
    max_output_tokens: int  # the most a request may ask for (and the default)
    max_messages: int = 512
    max_metadata_keys: int = 16


def bad(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def optional(body: dict, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise bad(f"{name} must be {names}, got {type(value).__name__}", name)
    return value


def generation(body: dict, limits: Limits, tokens_field: str) -> GenerationConfig:
    """max tokens, temperature, top_p (and seed) -> GenerationConfig; greedy unless temperature is given."""
    n = optional(body, tokens_field, int, limits.max_output_tokens)
    if n < 1:
        raise bad(f"{tokens_field} must be at least 1, got {n}", tokens_field)
    # Clients often send a large fixed max_tokens: cap it at what one turn can hold (as other local servers do)
    n = min(n, limits.max_output_tokens)
    temperature = float(optional(body, "temperature", (int, float), 0.0))
    if not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise bad(f"temperature must be in [0, 2], got {temperature}", "temperature")
    top_p = float(optional(body, "top_p", (int, float), 1.0))
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise bad(f"top_p must be in (0, 1], got {top_p}", "top_p")
    seed = optional(body, "seed", int)
    return GenerationConfig(max_new_tokens=n, temperature=temperature, top_p=top_p, seed=seed)


def metadata(body: dict, limits: Limits) -> dict[str, str]:
    """OpenAI's rule: up to 16 string pairs, keys <= 64 characters, values <= 512."""
    meta = optional(body, "metadata", dict, {})
    if len(meta) > limits.max_metadata_keys:
        raise bad(f"metadata has {len(meta)} keys; at most {limits.max_metadata_keys}", "metadata")
    for k, v in meta.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise bad("metadata keys must be strings <= 64 chars and values strings <= 512 chars", "metadata")
    return dict(meta)


def text_of(content: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts (input_text, output_text, text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"{param}[{i}]: only text content is supported, got {kind!r}", param)
            if not isinstance(part.get("text"), str):
                raise bad(f"{param}[{i}].text must be a string", param)
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"{param} must be a string or a list of text parts", param)


def conversation_of(items: Any, param: str, limits: Limits) -> tuple[str | None, list[tuple[str, str]], str]:
    """(system text or None, earlier (user, assistant) turns, the user message to answer)."""
    if isinstance(items, str):
        return None, [], items
    system, turns = _messages(items, param, limits)
    if len(turns) % 2 == 0:
        raise bad(f"{param}: the last message must be a user message", param)
    history = list(zip(turns[0:-1:2], turns[1:-1:2], strict=True))
    return system, history, turns[-1]


def history_of(items: Any, param: str, limits: Limits) -> tuple[str | None, list[tuple[str, str]]]:
    """(system text or None, complete (user, assistant) turns): the items a conversation starts with."""
    system, turns = _messages(items, param, limits)
    if len(turns) % 2:
        raise bad(f"{param}: the last message must be an assistant message (complete turns only)", param)
    return system, list(zip(turns[0::2], turns[1::2], strict=True))


def _messages(items: Any, param: str, limits: Limits) -> tuple[str | None, list[str]]:
    """System text and the user/assistant texts in order, checked to alternate from a user message."""
    if not isinstance(items, list) or not items:
        raise bad(f"{param} must be a string or a non-empty list of messages", param)
    if len(items) > limits.max_messages:
        raise bad(f"{param} has {len(items)} messages; at most {limits.max_messages}", param)
    system: list[str] = []
    turns: list[str] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise bad(f"{where}: only messages are supported, got {kind!r}", param)
        role, text = item.get("role"), text_of(item.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            if turns:
                raise bad(f"{where}: a {role} message must come before the conversation's turns", param)
            system.append(text)
        elif role in ("user", "assistant"):
            expected = "user" if len(turns) % 2 == 0 else "assistant"
            if role != expected:
                raise bad(f"{where}: expected a {expected} message (turns alternate user, assistant)", param)
            turns.append(text)
        else:
            raise bad(f"{where}.role must be system, developer, user or assistant, got {role!r}", param)
    return ("\n".join(system) if system else None), turns
