"""Admin API errors in the contract's JSON shape, and the middleware that guarantees them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from rules.model import capped_reason
from rules.store import Conflict, NotFound, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "validation_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    error: dict[str, object] = {"type": _TYPES.get(status, "api_error"), "code": code, "message": message}
    error.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=headers
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except StoreUnavailable as exc:
        return error_response(503, "store_unavailable", f"{exc}; nothing was changed")
    except StoreError as exc:
        log.error("store error: %s", exc)
        return error_response(503, "store_error", f"{exc}; nothing was changed")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; nothing was changed")


def check_reason(reason: object, code: str) -> None:
    """A change's `reason` over 1 KiB of UTF-8 → 422 `code` naming the field `reason`, whatever the body
    or query it came in (the models check its type and presence)."""
    if isinstance(reason, str):
        try:
            capped_reason(reason)
        except ValueError as exc:
            raise ApiError(422, code, f"reason: {exc}", field="reason", reason=str(exc)) from None


LARGE_BODY = 256 * 1024


async def read_json(request: web.Request) -> dict[str, object]:
    raw = await request.read()
    try:
        # A bulk push can be tens of MB: parse it beside the event loop, not on it.
        body = await asyncio.to_thread(orjson.loads, raw) if len(raw) > LARGE_BODY else orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return body


def ok(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
