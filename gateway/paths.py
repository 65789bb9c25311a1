"""Request paths in one normal form, so that route selection, route-scoped rules and kill switches, and the
upstream all see the same path.

A path is normal when it has no empty segment (`//`), no dot segment (`.`, `..`), no percent-escape of an
unreserved character (`%2e`, `%41`) and only upper-case hex digits in its other escapes (RFC 3986 §6.2.2,
§5.2.4, plus merged slashes, as nginx's `merge_slashes` does). The data-plane server rewrites the request
target to that form before anything reads it, and the upstream receives the normal form. What could not be
normalised without guessing how the upstream decodes it is refused (400): an encoded slash (`%2F`) that
would make an empty or dot segment if the upstream decoded it (`/v1/x%2F..%2Fchat`), an encoded backslash
(`%5C`) or a backslash (some servers read it as `/`), an encoded NUL, a malformed escape, a path that does not
start with `/`. Other encoded slashes (`/v1/models/org%2Fname`) stay encoded; routes are chosen on the
decoded path, as the upstream sees it when it decodes them.
"""

from __future__ import annotations

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_REFUSED_BYTES = frozenset({0x00, 0x5C})  # NUL, `\`


class BadPath(ValueError):
    """A path that cannot be normalised safely."""


def is_normal_candidate(path: str) -> bool:
    """Cheap test: False when `path` is certainly normal already (most requests)."""
    return "//" in path or "/." in path or "%" in path or "\\" in path or not path.startswith("/")


def _decode_unreserved(path: str) -> str:
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        code = piece[:2]
        if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
            raise BadPath("a malformed percent-escape")
        byte = int(code, 16)
        if byte in _REFUSED_BYTES:
            raise BadPath(f"an encoded {'NUL' if byte == 0 else repr(chr(byte))}")
        char = chr(byte)
        out.append((char if char in _UNRESERVED else "%" + code.upper()) + piece[2:])
    return "".join(out)


def normal_path(path: str) -> str:
    """`path` (a request target's path, without its query) in normal form; raises BadPath."""
    if not path.startswith("/"):
        raise BadPath("the path does not start with '/'")
    if "\\" in path:
        raise BadPath("a backslash")
    if "%" in path:
        path = _decode_unreserved(path)
    segments: list[str] = []
    directory = False  # the path ends with '/'
    for segment in path.split("/")[1:]:
        if segment == "" or segment == ".":
            directory = True
        elif segment == "..":
            if segments:
                segments.pop()
            directory = True
        else:
            segments.append(segment)
            directory = False
    normal = "/" + "/".join(segments)
    if directory and segments:
        normal += "/"
    if "%2F" in normal:  # normal whether the upstream decodes it or not, or refused
        decoded = normal.replace("%2F", "/")
        if normal_path(decoded) != decoded:
            raise BadPath("an encoded slash next to an empty or dot segment")
    return normal
