"""`containment mock-upstream`: a small OpenAI-compatible model server for demos, tests and load tests.

- `POST /v1/chat/completions` echoes the last user message back as the assistant's reply; with
  `"stream": true` the reply goes out as SSE chunks of `chunk_chars` characters, then `data: [DONE]`.
- `POST /v1/completions` echoes the prompt the same way.
- `GET /v1/models` lists one model, `mock-echo`.
- Any other path answers 200 with what it received (method, path, query, headers, body), so that what
  a proxy changes can be seen.
"""

from __future__ import annotations

import base64
import time

import orjson
from aiohttp import web

CHUNK_CHARS = web.AppKey("chunk_chars", int)
MODEL = "mock-echo"


def _last_user_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""


async def _json_body(request: web.Request) -> dict[str, object] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": {"message": "invalid JSON", "type": "invalid_request_error"}}, status=400)
    if not isinstance(body, dict):
        return web.json_response(
            {"error": {"message": "expected an object", "type": "invalid_request_error"}}, status=400
        )
    return body


def _chunk(completion_id: str, model: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    payload = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _reply(request: web.Request, text: str, body: dict[str, object], kind: str) -> web.StreamResponse:
    model = body.get("model") if isinstance(body.get("model"), str) else MODEL
    assert isinstance(model, str)
    created = int(time.time())
    completion_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-mock{created}"
    if body.get("stream") is True:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        size = request.app[CHUNK_CHARS]
        await response.write(_chunk(completion_id, model, created, {"role": "assistant", "content": ""}, None))
        for start in range(0, len(text), size):
            await response.write(_chunk(completion_id, model, created, {"content": text[start : start + size]}, None))
        await response.write(_chunk(completion_id, model, created, {}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    if kind == "chat":
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
    payload = {
        "id": completion_id,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": 2 * len(text.split()),
        },
    }
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    return await _reply(request, _last_user_text(body.get("messages")), body, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    prompt = body.get("prompt")
    return await _reply(request, prompt if isinstance(prompt, str) else "", body, "text")


async def models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "containment"}]}
    )


async def echo(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        body: object = raw.decode("utf-8")
    except UnicodeDecodeError:
        body = {"base64": base64.b64encode(raw).decode()}
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body,
        }
    )


def build_mock_app(chunk_chars: int = 4) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[CHUNK_CHARS] = max(1, chunk_chars)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
