"""Canned answers: what a kill switch in `canned` mode sends in the model's place.

An OpenAI-shaped completion whose content is the commander's message (a text completion on
`/completions` paths, a chat completion otherwise), as SSE chunks ending in `data: [DONE]` when the
request asked to stream.
"""

from __future__ import annotations

import time

import orjson

from gateway.context import RequestContext
from gateway.verdict import Reply

DEFAULT_MESSAGE = "This service is temporarily unavailable."


def canned_reply(ctx: RequestContext, message: str | None) -> Reply:
    text = message or DEFAULT_MESSAGE
    created = int(time.time())
    model = ctx.model or "containment"
    chat = not (ctx.path.endswith("/completions") and not ctx.path.endswith("/chat/completions"))
    base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-containment-{ctx.request_id}", "created": created, "model": model}
    if ctx.stream:

        def event(choice: dict[str, object]) -> bytes:
            obj = "chat.completion.chunk" if chat else "text_completion"
            return b"data: " + orjson.dumps(base | {"object": obj, "choices": [choice]}) + b"\n\n"

        if chat:
            parts = [
                event({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}),
                event({"index": 0, "delta": {"content": text}, "finish_reason": None}),
                event({"index": 0, "delta": {}, "finish_reason": "stop"}),
            ]
        else:
            parts = [
                event({"index": 0, "text": text, "finish_reason": None, "logprobs": None}),
                event({"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}),
            ]
        return Reply(200, b"".join(parts) + b"data: [DONE]\n\n", "text/event-stream", "kill_switch")
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        document = base | {"object": "chat.completion", "choices": [choice]}
    else:
        document = base | {
            "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        }
    document["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return Reply(200, orjson.dumps(document), "application/json", "kill_switch")
