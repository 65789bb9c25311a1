"""Reading a request body within the size limit, and the caller's identity from its headers."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.context import Identity, IPAddress
from rules.compile import Network

KEY_HEADERS = ("api-key", "x-api-key")


class BodyTooLarge(Exception):
    pass


class UnsupportedEncoding(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing as soon as it is known to exceed `limit` (before buffering it)."""
    if not request.body_exists:
        return b""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge
    check_encoding(request)
    content = request.content
    try:
        if content.is_eof():  # all of it has arrived (a typical chat request): no reading loop
            whole = content.read_nowait()
            if len(whole) > limit:
                raise BodyTooLarge
            return whole
    except HttpProcessingError as exc:
        raise UnsupportedEncoding(f"body could not be decoded ({exc.message})") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_any():
            size += len(chunk)  # counted after inflation: a compression bomb stops at the limit
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
    except HttpProcessingError as exc:
        raise UnsupportedEncoding(f"body could not be decoded ({exc.message})") from None
    return b"".join(chunks)


# aiohttp's server inflates these itself before the body reaches us, so the scan sees plain text and the
# upstream gets the inflated body (without the Content-Encoding header); anything else cannot be scanned.
DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br", "zstd"})


def check_encoding(request: web.Request) -> None:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        raise UnsupportedEncoding(encoding)


@functools.lru_cache(maxsize=4096)  # the same few peers and proxies, request after request
def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def client_address(peer: str, forwarded_for: list[str], trusted: Sequence[Network]) -> tuple[str, IPAddress | None]:
    """The client IP: the socket peer, unless the peer is a trusted proxy; then X-Forwarded-For is read
    right to left, skipping trusted proxies, and the first untrusted address is the client. Headers from
    an untrusted peer are ignored, so a client cannot spoof its address."""
    address = _parse_ip(peer)
    if address is None or not trusted or not any(address in net for net in trusted):
        return peer, address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        parsed = _parse_ip(hop)
        if parsed is None:
            break  # garbage from further out: stop at the last proxy we trust
        address = parsed
        if not any(parsed in net for net in trusted):
            break
    return str(address), address


def identify(request: web.Request, tenants: Mapping[str, str], trusted: Sequence[Network] = ()) -> Identity:
    key: str | None = None
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        key = credentials.strip()
    else:
        for name in KEY_HEADERS:
            value = request.headers.get(name)
            if value:
                key = value.strip()
                break
    key_id = hashlib.sha256(key.encode()).hexdigest()[:16] if key else None
    tenant = tenants.get(key_id) if key_id is not None else None
    client_ip, ip = client_address(request.remote or "", request.headers.getall("X-Forwarded-For", []), trusted)
    return Identity(key_id=key_id, client_ip=client_ip, tenant=tenant, ip=ip)
