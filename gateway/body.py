"""Reading a request body within the size limit, and the caller's identity from its headers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.context import Identity

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


def identify(request: web.Request, tenants: Mapping[str, str]) -> Identity:
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
    return Identity(key_id=key_id, client_ip=request.remote or "", tenant=tenant)
