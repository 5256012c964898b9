"""What every route shares: the turn pool, limits, the served model's id, and small helpers."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import ApiError
from .inputs import Limits
from .pool import TurnPool

_ID = re.compile(r"^(resp|conv|msg|chatcmpl)_[0-9a-f]{48}$")


@dataclass
class ServeContext:
    pool: TurnPool
    limits: Limits
    model_id: str
    created: int
    max_body_bytes: int


def ctx(request: Request) -> ServeContext:
    return request.app.state.ctx


def new_id(prefix: str) -> str:
    """192 random bits from the OS CSPRNG: ids cannot be guessed, so knowing one is the capability."""
    return f"{prefix}_{secrets.token_hex(24)}"


def valid_id(value: object, prefix: str) -> bool:
    return isinstance(value, str) and _ID.match(value) is not None and value.startswith(prefix + "_")


async def json_body(request: Request, empty_ok: bool = False) -> dict:
    """The request's JSON object, refusing bodies over the size limit before reading them whole."""
    limit = ctx(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"request body is {declared} bytes; the limit is {limit}", code="request_too_large"
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError(413, f"request body is over the {limit}-byte limit", code="request_too_large")
    if empty_ok and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def check_model(body: dict, served: str) -> None:
    model = body.get("model")
    if model is not None and model != served:
        raise ApiError(
            404,
            f"model {model!r} is not served here; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )


async def blocking(fn, *args):
    """Store reads and other blocking calls off the event loop."""
    return await run_in_threadpool(fn, *args)


async def answer_json(events) -> JSONResponse:
    """A non-streamed answer: drain the turn's events to its final body (closing them whatever happens)."""
    try:
        async for kind, value in events:
            if kind == "done":
                return JSONResponse(value[1])
    finally:
        await events.aclose()
    raise RuntimeError("the turn ended without an answer")
