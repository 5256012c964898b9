"""Chat Completions for clients that resend the whole history, without re-reading it.

The STM after each answered turn is stored under a hash chain: key_0 = H(model fingerprint, system text),
key_i+1 = H(key_i, [user_i, assistant_i]). A request whose earlier turns match a stored chain starts from that
state and processes only its last user message. Turns past the longest stored prefix (an edited history, one
from another server) are written into memory with the encoder and memory update only, no decoding; the
response says how many (`rxt.turns_rebuilt`, `rxt.rebuild_ms`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from .context import answer_json, blocking, check_model, ctx, json_body, new_id
from .errors import api_error
from .inputs import bad, conversation_of, generation, optional
from .pool import Commit, TurnPool, TurnRequest, TurnResult


def chain_keys(fingerprint: str, system: str | None, turns: list[tuple[str, str]]) -> list[str]:
    """keys[i]: the state after the system prompt and the first i turns (the model fingerprint is the root)."""
    h = hashlib.sha256(json.dumps(["rxt-chat-v1", fingerprint, system]).encode()).digest()
    keys = [h]
    for query, answer in turns:
        h = hashlib.sha256(h + json.dumps([query, answer]).encode()).digest()
        keys.append(h)
    return ["chat_" + k.hex() for k in keys]


def _longest_stored(pool: TurnPool, keys: list[str], has_system: bool) -> int:
    """The most turns whose state is stored (0 with a system prompt only if that state is stored; else -1)."""
    for i in range(len(keys) - 1, -1 if has_system else 0, -1):
        if pool.has_state(keys[i]):
            return i
    return -1


async def chat_completions(request: Request) -> Any:
    c = ctx(request)
    body = await json_body(request)
    check_model(body, c.model_id)
    if optional(body, "n", int, 1) != 1:
        raise bad("n must be 1", "n")
    system, turns, query = conversation_of(body.get("messages"), "messages", c.limits)
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    config = generation(body, c.limits, tokens_field)
    stream = optional(body, "stream", bool, False)
    include_usage = bool((optional(body, "stream_options", dict, {}) or {}).get("include_usage"))
    keys = chain_keys(c.pool.fingerprint, system, turns)
    stored = await blocking(_longest_stored, c.pool, keys, system is not None)
    if stored >= 0:
        base, history, system_now = keys[stored], turns[stored:], None
    else:
        base, history, system_now = None, turns, system
    completion_id, created = new_id("chatcmpl"), int(time.time())
    head = {
        "id": completion_id,
        "created": created,
        "model": c.model_id,
        "system_fingerprint": c.pool.fingerprint[:16],
    }

    def finish(r: TurnResult) -> Commit:
        new_key = chain_keys(c.pool.fingerprint, system, [*turns, (query, r.text)])[-1]
        return Commit([new_key], {}, payload=_completion(head, r, max(stored, 0)))

    events = c.pool.run(TurnRequest(base, query, config, finish, system_now, history))
    await events.__anext__()  # ("ready", None): errors before the answer become 4xx
    if not stream:
        return await answer_json(events)
    return EventSourceResponse(_stream(events, head, include_usage), ping=15)


def _usage(r: TurnResult) -> dict[str, int]:
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
    }


def _rxt(r: TurnResult, from_store: int) -> dict[str, Any]:
    return {
        "turns_from_store": from_store,
        "turns_rebuilt": r.remembered,
        "rebuild_ms": round(r.remember_s * 1e3, 3),
    }


def _completion(head: dict, r: TurnResult, from_store: int) -> dict[str, Any]:
    return {
        **head,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.text, "refusal": None},
                "finish_reason": "length" if r.incomplete else "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(r),
        "rxt": _rxt(r, from_store),
    }


async def _stream(events: AsyncIterator, head: dict, include_usage: bool) -> AsyncIterator[str]:
    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return json.dumps({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for kind, value in events:
            if kind == "delta":
                yield chunk({"content": value})
            elif kind == "done":
                full = value[1]
                yield chunk({}, full["choices"][0]["finish_reason"], rxt=full["rxt"])
                if include_usage:
                    yield json.dumps(
                        {**head, "object": "chat.completion.chunk", "choices": [], "usage": full["usage"]}
                    )
    except Exception as e:  # after the stream began: an error object, as OpenAI-compatible servers send
        yield json.dumps(api_error(e).body())
    finally:
        await events.aclose()
    yield "[DONE]"
