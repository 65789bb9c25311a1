"""A small synchronous client of the admin API for the CLI (stdlib HTTP; errors become one line)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ClientError(Exception):
    """One line for the user: what failed and why."""


class AdminClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 60.0) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def call(self, method: str, path: str, body: object = None, query: dict[str, str] | None = None) -> Any:
        url = self._base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ClientError(_describe(exc)) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach the admin API at {self._base}: {exc.reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ClientError(f"cannot reach the admin API at {self._base}: {exc}") from None


def _describe(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return f"{exc.code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{exc.code} {exc.reason}"
