"""The per-request context every filter reads: identity, route, model, texts to scan and the policy snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from gateway.formats import Derived, Location
from gateway.routing import Route
from rules.compile import CompiledPolicy, IPAddress


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: `key_id` is the first 16 hex chars of sha256(API key), never the key itself;
    `tenant` comes from the configured key-id → tenant map."""

    key_id: str | None
    client_ip: str
    tenant: str | None = None
    ip: IPAddress | None = None  # client_ip parsed; None when it is not an IP address


@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    path: str
    route: Route
    identity: Identity
    snapshot: CompiledPolicy
    now: datetime
    model: str | None = None
    texts: tuple[str, ...] = ()
    document: object | None = None
    raw_text: bool = False
    content_type: str = ""  # the request's Content-Type, as sent
    locations: tuple[Location, ...] = ()  # where each of `texts` stands in `document` (gateway/formats.py)
    derived: tuple[Derived, ...] = ()  # texts scanned besides `texts`: the joined conversation, decoded JSON, forms
    stream: bool = False  # the request asked for a streamed answer
    body_override: bytes | None = None  # set when a filter rewrote the body (redaction)
    response_headers: dict[str, str] = field(default_factory=dict)  # added to the answer (rate-limit headers)
    matched_rules: list[str] = field(default_factory=list)  # ids of rules that matched, any action
    sampled: bool = False  # chosen at the base (or forensic) rate: the proxy keeps a copy of the answer
    forensic: bool = False
    output_parts: list[str] = field(default_factory=list)  # the answer's text, as the output scan saw it
    answer: tuple[str, bytes] | None = None  # (content type, body) of an answer the gateway read
