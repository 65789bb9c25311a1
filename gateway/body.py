"""Reading a request body within the size limit, and the caller's identity from its headers."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import zlib
from collections.abc import Mapping, Sequence

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.context import Identity
from gateway.server import BodyTooLarge, HttpRequest, MalformedBody
from rules.compile import IPAddress, Network

KEY_HEADERS = ("api-key", "x-api-key")
# Every header identify() reads. A `Connection` header naming one would have the upstream hop drop it
# (RFC 9110 §7.6.1), so that the upstream sees another identity than the gateway checked: refused.
IDENTITY_HEADERS = frozenset({"authorization", *KEY_HEADERS, "x-forwarded-for"})

__all__ = ["AmbiguousIdentity", "BodyTooLarge", "MalformedBody", "UnsupportedEncoding", "read_body", "identify"]


class UnsupportedEncoding(Exception):
    pass


class AmbiguousIdentity(Exception):
    """The identity headers do not name one caller as the upstream will see them (refused with 400)."""


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


def _bearer(authorization: str) -> str | None:
    """The key of `Bearer KEY` (any case, any whitespace after the scheme), else None."""
    parts = authorization.split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip() or None
    return None


def _one(headers: CIMultiDictProxy[str] | CIMultiDict[str], name: str) -> str | None:
    """The header's value; repeated with different values, the request is refused: upstreams differ on
    which one they take."""
    values = headers.getall(name, ())
    if not values:
        return None
    first = values[0].strip()
    if any(value.strip() != first for value in values[1:]):
        raise AmbiguousIdentity(f"The request has several different {name} headers.")
    return first


def api_key(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str | None:
    """The caller's API key, exactly as the upstream receives it: `Authorization: Bearer K`, `api-key` or
    `x-api-key`. Raises AmbiguousIdentity where the upstream could see another key than the gateway would
    check: different keys in those headers, a header repeated with different values, or a `Connection`
    header naming one of them (which would strip it on the way upstream)."""
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            if token.strip().lower() in IDENTITY_HEADERS:
                raise AmbiguousIdentity(f"The Connection header may not name {token.strip()}.")
    key: str | None = None
    authorization = _one(headers, "Authorization")
    if authorization is not None:
        key = _bearer(authorization)
    for name in KEY_HEADERS:
        named = _one(headers, name)
        if named:
            if key is not None and named != key:
                raise AmbiguousIdentity("The request names different API keys in its key headers.")
            key = named
    return key


def identify(request: HttpRequest, tenants: Mapping[str, str], trusted: Sequence[Network] = ()) -> Identity:
    """Who is calling (raises AmbiguousIdentity, see api_key)."""
    key = api_key(request.headers)
    # surrogateescape: the key's bytes as sent, even where they are not UTF-8
    key_id = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16] if key else None
    tenant = tenants.get(key_id) if key_id is not None else None
    client_ip, ip = client_address(request.remote or "", request.headers.getall("X-Forwarded-For", []), trusted)
    return Identity(key_id=key_id, client_ip=client_ip, tenant=tenant, ip=ip)
