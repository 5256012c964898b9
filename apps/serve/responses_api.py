"""The Responses and Conversations APIs: stateful turns whose state is the STM stored after each one.

A response continues from the STM stored after `previous_response_id` (forks are independent: each
continuation writes a new row) or after the last turn of a `conversation` (serialised per conversation).
`instructions` and `input` system messages are written into the memory as a system prompt; earlier
user/assistant pairs in `input` are written with the encoder and memory update only.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse

from .context import answer_json, blocking, check_model, ctx, json_body, new_id, valid_id
from .errors import api_error, not_found
from .inputs import bad, conversation_of, generation, history_of, metadata, optional
from .pool import Commit, StateNotFoundError, TurnRequest, TurnResult
from .store import Guard


def _message(msg_id: str, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if text or status != "in_progress"
        else []
    )
    return {"id": msg_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _response(
    resp_id: str,
    req: dict[str, Any],
    status: str,
    output: list,
    usage: dict | None = None,
    incomplete: bool = False,
    error: dict | None = None,
) -> dict[str, Any]:
    """A Responses-API response object."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": req["created_at"],
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": req["instructions"],
        "max_output_tokens": req["max_output_tokens"],
        "model": req["model"],
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": req["previous_response_id"],
        "conversation": {"id": req["conversation"]} if req["conversation"] else None,
        "temperature": req["temperature"],
        "top_p": req["top_p"],
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "store": req["store"],
        "usage": usage,
        "metadata": req["metadata"],
    }


def _usage(r: TurnResult) -> dict[str, Any]:
    return {
        "input_tokens": r.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": r.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": r.input_tokens + r.output_tokens,
    }


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    conv_id = value.get("id") if isinstance(value, dict) else value
    if not isinstance(conv_id, str):
        raise bad('conversation must be an id or {"id": ...}', "conversation")
    return conv_id


async def create_response(request: Request) -> Any:
    c = ctx(request)
    body = await json_body(request)
    check_model(body, c.model_id)
    system, history, query = conversation_of(body.get("input"), "input", c.limits)
    instructions = optional(body, "instructions", str)
    if instructions is not None and not instructions.strip():
        instructions = None
    config = generation(body, c.limits, "max_output_tokens")
    store = optional(body, "store", bool, True)
    stream = optional(body, "stream", bool, False)
    prev = optional(body, "previous_response_id", str)
    conv_id = _conversation_id(body.get("conversation"))
    if prev is not None and conv_id is not None:
        raise bad("previous_response_id and conversation cannot be used together", "previous_response_id")
    resp_id, msg_id = new_id("resp"), new_id("msg")
    req = {
        "created_at": int(time.time()),
        "instructions": instructions,
        "max_output_tokens": config.max_new_tokens,
        "model": c.model_id,
        "previous_response_id": prev,
        "conversation": conv_id,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "store": store,
        "metadata": metadata(body, c.limits),
    }
    pool = c.pool
    base: Any = None
    lock_key = None
    conv_seen: dict[str, Any] = {}
    if prev is not None:
        if not valid_id(prev, "resp") or await blocking(pool.record, prev) is None:
            raise not_found("response", prev, "previous_response_id")
        base = prev
    elif conv_id is not None:
        if not valid_id(conv_id, "conv") or await blocking(pool.record, conv_id) is None:
            raise not_found("conversation", conv_id, "conversation")
        lock_key = conv_id

        def base() -> str | None:  # read under the conversation's lock: the state of its last committed turn
            rec = pool.store.get_record(conv_id)
            if rec is None:
                raise StateNotFoundError(conv_id)
            conv_seen.update(rec)
            req["previous_response_id"] = rec.get("last_response_id")  # says which state this turn continued
            return rec.get("state")

    system = "\n".join(t for t in (instructions, system) if t) or None

    def finish(r: TurnResult) -> Commit:
        resp = _response(
            resp_id,
            req,
            "incomplete" if r.incomplete else "completed",
            [_message(msg_id, r.text, "incomplete" if r.incomplete else "completed")],
            _usage(r),
            r.incomplete,
        )
        states, records, guard = [], {}, None
        if store:
            states.append(resp_id)
            records[resp_id] = {"response": resp}
        if conv_id is not None:
            turns = conv_seen.get("turns", 0)
            states.append(conv_id)
            records[conv_id] = {
                **conv_seen,
                "state": conv_id,
                "turns": turns + 1,
                "last_response_id": resp_id,
            }
            guard = Guard(conv_id, "turns", turns)
        return Commit(states, records, guard, payload=resp)

    turn = TurnRequest(base, query, config, finish, system, history, lock_key)
    events = pool.run(turn)
    await events.__anext__()  # ("ready", None): errors before the answer starts become 4xx here
    if not stream:
        return await answer_json(events)
    return EventSourceResponse(_stream(events, resp_id, msg_id, req), ping=15)


async def _stream(events: AsyncIterator, resp_id: str, msg_id: str, req: dict) -> AsyncIterator[dict]:
    """The documented event sequence, each event with its `sequence_number`."""
    seq = 0

    def event(kind: str, **fields: Any) -> dict:
        nonlocal seq
        seq += 1
        return {"event": kind, "data": json.dumps({"type": kind, "sequence_number": seq - 1, **fields})}

    started = _response(resp_id, req, "in_progress", [])
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item=_message(msg_id, "", "in_progress"))
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    yield event("response.content_part.added", **where, part=part)
    try:
        async for kind, value in events:
            if kind == "delta":
                yield event("response.output_text.delta", **where, delta=value, logprobs=[])
            elif kind == "done":
                resp = value[1]
                item = resp["output"][0]
                text = item["content"][0]["text"]
                yield event("response.output_text.done", **where, text=text, logprobs=[])
                yield event("response.content_part.done", **where, part=item["content"][0])
                yield event("response.output_item.done", output_index=0, item=item)
                yield event(f"response.{resp['status']}", response=resp)
    except Exception as e:  # after the stream began: report it in-band, as the API does
        err = api_error(e)
        failed = _response(
            resp_id, req, "failed", [], error={"code": err.code or err.type, "message": err.message}
        )
        yield event("response.failed", response=failed)
    finally:
        await events.aclose()


async def _stored(request: Request, kind: str, prefix: str) -> tuple[str, dict]:
    """(id, record) of the response or conversation the path names; 404 for a malformed or unknown id."""
    key = request.path_params[f"{kind}_id"]
    rec = await blocking(ctx(request).pool.record, key) if valid_id(key, prefix) else None
    if rec is None:
        raise not_found(kind, key)
    return key, rec


async def _delete(request: Request, kind: str, prefix: str) -> JSONResponse:
    key, _ = await _stored(request, kind, prefix)
    await blocking(ctx(request).pool.store.delete, [key])
    return JSONResponse({"id": key, "object": f"{kind}.deleted", "deleted": True})


async def get_response(request: Request) -> JSONResponse:
    _, rec = await _stored(request, "response", "resp")
    return JSONResponse(rec["response"])


async def delete_response(request: Request) -> JSONResponse:
    return await _delete(request, "response", "resp")


# --- conversations -----------------------------------------------------------------------------------------
def _public(rec: dict) -> dict:
    return {k: rec[k] for k in ("id", "object", "created_at", "metadata")} | {
        "rxt": {"turns": rec.get("turns", 0), "last_response_id": rec.get("last_response_id")}
    }


async def create_conversation(request: Request) -> JSONResponse:
    c = ctx(request)
    body = await json_body(request, empty_ok=True)
    conv_id = new_id("conv")
    rec = {
        "id": conv_id,
        "object": "conversation",
        "created_at": int(time.time()),
        "metadata": metadata(body, c.limits),
        "state": None,
        "turns": 0,
        "last_response_id": None,
    }
    items = body.get("items")
    states: dict[str, bytes] = {}
    if items:
        system, history = history_of(items, "items", c.limits)
        states[conv_id] = await blocking(c.pool.prime, system, history)
        rec |= {"state": conv_id, "turns": len(history)}
    await blocking(c.pool.store.commit, states, {conv_id: rec}, Guard(conv_id, "turns", None))
    return JSONResponse(_public(rec))


async def get_conversation(request: Request) -> JSONResponse:
    _, rec = await _stored(request, "conversation", "conv")
    return JSONResponse(_public(rec))


async def delete_conversation(request: Request) -> JSONResponse:
    return await _delete(request, "conversation", "conv")
