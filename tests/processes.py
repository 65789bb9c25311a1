"""Start real `containment` processes on free loopback ports for end-to-end tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def containment(*args: str) -> list[str]:
    return [sys.executable, "-m", "admin.cli", *args]


def start(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    log: IO[bytes] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """The process, its output piped (or both streams written to `log`)."""
    output: IO[bytes] | int = subprocess.PIPE if log is None else log
    return subprocess.Popen(
        list(args),
        env={**os.environ, **(env or {})},
        stdout=output,
        stderr=output,
        preexec_fn=preexec_fn,
    )


def stop(process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process exited with {process.returncode}: {(err or b'').decode()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def http(
    method: str, url: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status, response_headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, response_headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, response_headers, json.loads(raw)
    except ValueError:
        return status, response_headers, raw.decode()


@contextmanager
def serve_mock_upstream(*args: str) -> Iterator[str]:
    """`containment mock-upstream` (with `args`) on a free port, ready: its URL. Stopped on leaving."""
    port = free_port()
    process = start(containment("mock-upstream", "--port", str(port), *args))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", process)
        yield url
    finally:
        stop(process)


class Served(NamedTuple):
    gateway: str  # the data plane's URL
    admin: str  # the admin API's URL
    process: subprocess.Popen[bytes]


def serve(
    upstream: str,
    state: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Served:
    """`containment serve` on free ports, its data plane and admin API both answering (the process is
    stopped if they do not). `log` and `preexec_fn` go to `start`."""
    gateway_port, admin_port = free_port(), free_port()
    process = start(
        containment(
            "serve",
            "--upstream",
            upstream,
            "--listen",
            f"127.0.0.1:{gateway_port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--state-dir",
            str(state),
            *extra,
        ),
        env=env,
        log=log,
        preexec_fn=preexec_fn,
    )
    served = Served(f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{admin_port}", process)
    try:
        wait_http(f"{served.gateway}/_containment/readyz", process)
        wait_http(f"{served.admin}/metrics", process)
    except BaseException:
        stop(process)
        raise
    return served
