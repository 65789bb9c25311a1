"""Reading a request body within the size limit, and the caller's identity from its headers."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import zlib
from collections.abc import Mapping, Sequence

from gateway.context import Identity
from gateway.server import BodyTooLarge, HttpRequest, MalformedBody
from rules.compile import IPAddress, Network

KEY_HEADERS = ("api-key", "x-api-key")

__all__ = ["BodyTooLarge", "MalformedBody", "UnsupportedEncoding", "read_body", "identify"]


class UnsupportedEncoding(Exception):
    pass


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The whole body, inflated if it was compressed; refused as soon as it is known to exceed `limit`
    (a declared length over it is refused before any of the body is read)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge
    encoding = check_encoding(request)
    body = await request.body()  # bounded by the server's max_body_bytes as it arrives
    if encoding and body:
        return inflate(body, encoding, limit)
    return body


# Inflated before the scan, so that it sees plain text; the upstream then gets the inflated body (without
# the Content-Encoding header). Anything else could not be scanned and is refused (415).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
DECODED_ENCODINGS = frozenset({"", "identity", *_WBITS})


def check_encoding(request: HttpRequest) -> str:
    """The body's Content-Encoding that needs inflating ('' for none)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in DECODED_ENCODINGS:
        raise UnsupportedEncoding(encoding)
    return "" if encoding == "identity" else encoding


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """gzip or deflate (zlib-wrapped, or raw as some clients send it), stopping past `limit` bytes of
    output: a compression bomb is refused at the limit, not inflated."""
    wbits = _WBITS[encoding]
    for attempt in (wbits, -zlib.MAX_WBITS) if encoding == "deflate" else (wbits,):
        inflater = zlib.decompressobj(attempt)
        try:
            plain = inflater.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(plain) > limit:
            raise BodyTooLarge
        if not inflater.eof:
            raise UnsupportedEncoding(f"body could not be decoded (truncated {encoding} data)")
        return plain
    raise UnsupportedEncoding(f"body could not be decoded (invalid {encoding} data)")


@functools.lru_cache(maxsize=4096)  # the same few peers and proxies, request after request
def _parse_ip(value: str) -> IPAddress | None:
    """The address, with an IPv4-mapped IPv6 one (`::ffff:10.1.2.3`, how a dual-stack listener sees an
    IPv4 client) as the IPv4 address it stands for, so that IPv4 CIDRs in the access lists match it."""
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


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


def identify(request: HttpRequest, tenants: Mapping[str, str], trusted: Sequence[Network] = ()) -> Identity:
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
