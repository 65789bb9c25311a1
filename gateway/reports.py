"""`POST /_containment/reports`: a user reports an answer (`{"request_id", "category", "comment"?}` → 202).

The report is counted, feeds the report-volume alert, and is stored linked to the sampled request when
there is one. Its comment is redacted of personal data before it is stored.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.body import BodyTooLarge, MalformedBody, UnsupportedEncoding, read_body
from gateway.refusals import json_response, refusal_response
from gateway.server import HttpRequest, Response, new_request_id
from gateway.telemetry import Telemetry
from gateway.verdict import Refusal

MAX_REPORT_BYTES = 16 * 1024


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=2000)] | None = None


def _invalid(message: str, status: int = 400) -> Refusal:
    return Refusal(status=status, code="invalid_request", message=message, action="invalid")


class Reports:
    def __init__(self, telemetry: Telemetry, categories: frozenset[str], *, body_timeout: float) -> None:
        self._telemetry = telemetry
        self._categories = categories
        self._body_timeout = body_timeout

    async def handle(self, request: HttpRequest) -> Response:
        request_id = new_request_id()
        too_large = refusal_response(_invalid("Report too large.", 413), request_id)
        try:
            async with asyncio.timeout(self._body_timeout):
                raw = await read_body(request, MAX_REPORT_BYTES)  # inflated as the proxy's bodies are
        except BodyTooLarge:
            return too_large
        except MalformedBody:
            return refusal_response(_invalid("The report's framing is malformed."), request_id)
        except UnsupportedEncoding as exc:
            refusal = Refusal(415, "unsupported_encoding", f"Unsupported Content-Encoding: {exc}.", action="invalid")
            return refusal_response(refusal, request_id)
        except TimeoutError:
            refusal = Refusal(408, "request_timeout", "The report did not arrive in time.", action="invalid")
            return refusal_response(refusal, request_id)
        if len(raw) > MAX_REPORT_BYTES:
            return too_large
        try:
            spec = ReportSpec.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError:
            return refusal_response(_invalid("The report is not valid JSON."), request_id)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "body"
            return refusal_response(_invalid(f"{field}: {error['msg']}", 422), request_id)
        if spec.category not in self._categories:
            return refusal_response(_invalid(f"category: unknown category {spec.category!r}", 422), request_id)
        stored = await self._telemetry.report(spec.request_id, spec.category, spec.comment)
        return json_response({"report_id": stored.id, "sampled": stored.sampled}, request_id, status=202)
