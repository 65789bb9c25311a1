"""Gateway-made answers in OpenAI's error shape, with `X-Containment-Request-Id` and `X-Containment-Action`."""

from __future__ import annotations

import orjson

from gateway.server import Response
from gateway.verdict import Refusal, Reply

REQUEST_ID_HEADER = "X-Containment-Request-Id"
ACTION_HEADER = "X-Containment-Action"
_JSON = ("Content-Type", "application/json")


def refusal_response(refusal: Refusal, request_id: str) -> Response:
    error: dict[str, object] = {
        "type": refusal.type,
        "code": refusal.code,
        "message": refusal.message,
        "request_id": request_id,
    }
    error.update(refusal.extra)
    headers = [_JSON, (REQUEST_ID_HEADER, request_id), (ACTION_HEADER, refusal.action), *refusal.headers.items()]
    return Response(refusal.status, headers, orjson.dumps({"error": error}))


def json_response(payload: object, request_id: str, status: int = 200) -> Response:
    return Response(status, [_JSON, (REQUEST_ID_HEADER, request_id)], orjson.dumps(payload))


def reply_response(reply: Reply, request_id: str) -> Response:
    headers = [(REQUEST_ID_HEADER, request_id), (ACTION_HEADER, reply.action), ("Content-Type", reply.content_type)]
    return Response(reply.status, headers, reply.body)
