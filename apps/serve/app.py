"""The server: lifecycle, a route table (one line per route) and one error wrapper.

Routes raise; `handled` turns every exception into an OpenAI-style JSON error with its status
(`errors.api_error`). `require_key` guards /v1/ with a bearer key when one is configured.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from rxt_edge import contract
from rxt_edge.session import RxTSession

from . import chat_api, responses_api
from .context import ServeContext, ctx
from .errors import ApiError, error_response
from .inputs import Limits
from .pool import TurnPool
from .store import StateStore

log = logging.getLogger("rxt_edge.serve")
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeOptions:
    """Limits and policies of one server (the CLI flags)."""

    model_id: str
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_output_tokens: int | None = None  # None: as many as one turn allows
    max_concurrent: int = 8  # turns decoding at once (= decode slots)
    max_waiting: int = 32  # turns queued beyond those before 429
    state_dtype: str = "float32"


def handled(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The one error wrapper: any exception -> OpenAI-style JSON error."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as e:  # noqa: BLE001 - mapped, logged when unexpected
            return error_response(e)

    return wrapper


async def health(request: Request) -> JSONResponse:
    c = ctx(request)
    return JSONResponse(
        {
            "status": "ok",
            "model": c.model_id,
            "fingerprint": c.pool.fingerprint,
            "turns_stored": c.pool.committed,
            "store_errors": c.pool.commit_errors,
            "decode_slots": c.pool.session.engine.slots_allocated,
        }
    )


def _model(c: ServeContext) -> dict:
    return {"id": c.model_id, "object": "model", "created": c.created, "owned_by": "rxt-edge"}


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [_model(ctx(request))]})


async def get_model(request: Request) -> JSONResponse:
    c = ctx(request)
    if request.path_params["model"] != c.model_id:
        raise ApiError(404, f"model {request.path_params['model']!r} not found", code="model_not_found")
    return JSONResponse(_model(c))


resp = responses_api
ROUTES = [
    Route("/health", handled(health), methods=["GET"]),
    Route("/v1/models", handled(list_models), methods=["GET"]),
    Route("/v1/models/{model:path}", handled(get_model), methods=["GET"]),
    Route("/v1/responses", handled(resp.create_response), methods=["POST"]),
    Route("/v1/responses/{response_id}", handled(resp.get_response), methods=["GET"]),
    Route("/v1/responses/{response_id}", handled(resp.delete_response), methods=["DELETE"]),
    Route("/v1/conversations", handled(resp.create_conversation), methods=["POST"]),
    Route("/v1/conversations/{conversation_id}", handled(resp.get_conversation), methods=["GET"]),
    Route("/v1/conversations/{conversation_id}", handled(resp.delete_conversation), methods=["DELETE"]),
    Route("/v1/chat/completions", handled(chat_api.chat_completions), methods=["POST"]),
]


class RequireKey:
    """Bearer-key check for /v1/ (the page and /health stay open); constant-time comparison."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(auth, b"Bearer " + self.key):
                err = ApiError(
                    401,
                    "missing or wrong API key (Authorization: Bearer ...)",
                    type="authentication_error",
                    code="invalid_api_key",
                )
                await JSONResponse(err.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(session: RxTSession, store: StateStore, options: ServeOptions) -> ASGIApp:
    """The ASGI app; it closes the store when the server stops (the caller closes the session)."""
    limit = session.dims.max_seq_len
    room = contract.answer_budget(limit, contract.PROMPT_OVERHEAD + 1, limit)  # after a one-token query
    limits = Limits(max_output_tokens=min(options.max_output_tokens or room, room))
    pool = TurnPool(session, store, options.max_concurrent, options.max_waiting, options.state_dtype)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        pool.close()
        store.close()

    async def http_error(request: Request, exc: Exception) -> Response:  # unknown route, wrong method
        return error_response(exc)

    app = Starlette(
        routes=[*ROUTES, Mount("/", StaticFiles(directory=STATIC, html=True))],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.ctx = ServeContext(pool, limits, options.model_id, int(time.time()), options.max_body_bytes)
    return RequireKey(app, options.api_key) if options.api_key else app


def default_store_path() -> Path:
    """$XDG_STATE_HOME/rxt-edge/serve.sqlite3 (~/.local/state/... by default)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "rxt-edge" / "serve.sqlite3"
