"""One error shape for every route: OpenAI's `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx.

`api_error(exc)` is the one place that maps an exception to an HTTP status; routes raise, never format errors.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from rxt_edge.conversation import EmptyQueryError, PromptTooLongError, SystemPromptUnsupportedError
from rxt_edge.snapshot import SnapshotError

from .pool import BusyError, StateNotFoundError
from .store import ConflictError, StoreError

log = logging.getLogger("rxt_edge.serve")


class ApiError(Exception):
    """An error the client caused or must know about, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(what: str, key: str, param: str | None = None) -> ApiError:
    return ApiError(
        404, f"{what} {key!r} not found (unknown, expired or deleted)", param=param, code="not_found"
    )


def api_error(exc: BaseException) -> ApiError:
    """The client-facing error for any exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        return ApiError(
            exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
        )
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), param="input", code="context_length_exceeded")
    if isinstance(exc, SystemPromptUnsupportedError):  # `instructions` / system messages on such a model
        return ApiError(400, str(exc), param="instructions", code="system_prompt_unsupported")
    if isinstance(exc, EmptyQueryError):
        return ApiError(400, str(exc), param="input", code="empty_input")
    if isinstance(exc, BusyError):
        return ApiError(429, str(exc), type="rate_limit_error", code="server_busy")
    if isinstance(exc, StateNotFoundError):
        return not_found("state", str(exc))
    if isinstance(exc, ConflictError):
        return ApiError(409, f"{exc}; retry the request", code="conflict")
    if isinstance(exc, SnapshotError | StoreError):
        log.error("state store: %s", exc)
        return ApiError(500, f"the stored state cannot be used: {exc}", type="server_error", code="bad_state")
    log.exception("internal error", exc_info=exc)
    return ApiError(500, "internal server error (see the server log)", type="server_error")


def error_response(exc: BaseException) -> JSONResponse:
    err = api_error(exc)
    return JSONResponse(err.body(), status_code=err.status)
