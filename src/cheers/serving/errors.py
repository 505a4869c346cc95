"""Errors as the OpenAI API writes them: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can cause gets a 4xx with a message naming the input, the problem and
the fix: :class:`APIError` raised by the routes, :class:`~cheers.errors.CheersError` from the
pipeline (400), and the batcher's refusals (429 queue full, 503 shutting down). Only a bug in
the server itself is a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cheers.errors import CheersError
from cheers.serving.batching import QueueFull, ShuttingDown

log = logging.getLogger("cheers.serving")

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """A request the server refuses: HTTP status and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was read."""


def error_body(message: str, type: str, param: str | None = None, code: str | None = None):
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, error.type, error.param, error.code), status_code=error.status
    )


def body_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"the request body is larger than the server's limit of {limit} bytes; send smaller "
        "images (or fewer) or raise the server's max_body_bytes",
        code="request_too_large",
    )


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable sentence (and the first offending parameter) from pydantic's errors."""
    parts, param = [], None
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc)
        param = param or where or None
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', '')})")
        elif err.get("type") == "missing":
            parts.append(f"{where} is required")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{where} is not a parameter this server supports; remove it")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid value')}" if where else err["msg"])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, param


def install(app: FastAPI, config_limit: int) -> None:
    """Register the handlers that turn every failure into an OpenAI error object."""

    @app.exception_handler(APIError)
    async def _api(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(CheersError)
    async def _cheers(_request: Request, exc: CheersError) -> JSONResponse:
        return error_response(APIError(400, str(exc)))

    @app.exception_handler(BodyTooLarge)
    async def _large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        return error_response(body_too_large(config_limit))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return error_response(APIError(400, message, param=param))

    @app.exception_handler(QueueFull)
    async def _full(_request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(APIError(429, str(exc), type="rate_limit_error", code="queue_full"))

    @app.exception_handler(ShuttingDown)
    async def _closing(_request: Request, exc: ShuttingDown) -> JSONResponse:
        return error_response(APIError(503, str(exc), type="server_error", code="shutting_down"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = (
                f"no such endpoint: {request.method} {request.url.path}; the API is under /v1 "
                "(models, chat/completions, responses, images/generations, images/edits)"
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(APIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(
            APIError(500, f"internal server error ({type(exc).__name__})", type="server_error")
        )
