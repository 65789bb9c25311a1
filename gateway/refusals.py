"""Gateway-made answers in OpenAI's error shape, with `X-Containment-Request-Id` and `X-Containment-Action`."""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway.verdict import Refusal, Reply

REQUEST_ID_HEADER = "X-Containment-Request-Id"
ACTION_HEADER = "X-Containment-Action"


def refusal_response(refusal: Refusal, request_id: str) -> web.Response:
    error: dict[str, object] = {
        "type": refusal.type,
        "code": refusal.code,
        "message": refusal.message,
        "request_id": request_id,
    }
    error.update(refusal.extra)
    headers = {REQUEST_ID_HEADER: request_id, ACTION_HEADER: refusal.action, **refusal.headers}
    return web.Response(
        status=refusal.status,
        body=orjson.dumps({"error": error}),
        content_type="application/json",
        headers=headers,
    )


def json_response(payload: object, request_id: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
    )


def reply_response(reply: Reply, request_id: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id, ACTION_HEADER: reply.action, "Content-Type": reply.content_type}
    return web.Response(status=reply.status, body=reply.body, headers=headers)
