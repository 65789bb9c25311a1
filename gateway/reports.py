"""`POST /_containment/reports`: a user reports an answer (`{"request_id", "category", "comment"?}` → 202).

The report is counted, feeds the report-volume alert, and is stored linked to the sampled request when
there is one. Its comment is redacted of personal data before it is stored.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.refusals import json_response, refusal_response
from gateway.telemetry import Telemetry
from gateway.verdict import Refusal

MAX_REPORT_BYTES = 16 * 1024
TELEMETRY = web.AppKey("telemetry", Telemetry)
CATEGORIES: web.AppKey[frozenset[str]] = web.AppKey("report_categories")


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=2000)] | None = None


def _invalid(message: str, status: int = 400) -> Refusal:
    return Refusal(status=status, code="invalid_request", message=message, action="invalid")


async def report(request: web.Request) -> web.Response:
    from gateway.handler import new_request_id

    request_id = new_request_id()
    raw = await request.content.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        return refusal_response(_invalid("Report too large.", 413), request_id)
    try:
        spec = ReportSpec.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return refusal_response(_invalid("The report is not valid JSON."), request_id)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "body"
        return refusal_response(_invalid(f"{field}: {error['msg']}", 422), request_id)
    if spec.category not in request.app[CATEGORIES]:
        return refusal_response(_invalid(f"category: unknown category {spec.category!r}", 422), request_id)
    stored = await request.app[TELEMETRY].report(spec.request_id, spec.category, spec.comment)
    return json_response({"report_id": stored.id, "sampled": stored.sampled}, request_id, status=202)
