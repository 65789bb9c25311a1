"""The admin API keeps accepting and acting while a connection flood exhausts the data plane's descriptors
(issue 16, item 8): a real `containment serve` process started with a small RLIMIT_NOFILE, flooded with
raw loopback connections that never finish their request."""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import http, serve, serve_mock_upstream, stop

TOKEN = "commander-token-isolation"
LIMIT = 256  # the gateway's descriptor limit (soft and hard) in this test


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_mock_upstream() as url:
        yield url


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_the_admin_api_engages_a_kill_switch_during_a_connection_flood(upstream: str, tmp_path: Path) -> None:
    with (tmp_path / "serve.log").open("wb") as log:
        env = {"CONTAINMENT_ADMIN_TOKENS": f"ops:commander:{TOKEN}"}
        gateway, admin, process = serve(upstream, tmp_path / "state", env=env, log=log, preexec_fn=_limited)
        gateway_port = int(gateway.rsplit(":", 1)[1])
        flood: list[socket.socket] = []
        try:
            for _ in range(2 * LIMIT):  # more connections than the gateway has descriptors
                sock = socket.socket()
                sock.settimeout(2)
                try:
                    sock.connect(("127.0.0.1", gateway_port))
                    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never finished
                except OSError:
                    sock.close()
                    continue
                flood.append(sock)
            time.sleep(1.0)  # the gateway accepts until it is out of descriptors
            started = time.monotonic()
            status, _, body = http(
                "PUT",
                f"{admin}/v1/killswitches/global",
                {"engaged": True, "reason": "flood drill"},
                {"Authorization": f"Bearer {TOKEN}"},
            )
            assert status == 200, body
            assert time.monotonic() - started < 3
            for sock in flood:
                sock.close()
            flood.clear()
            deadline = time.monotonic() + 10
            while True:  # once the flood is gone, the data plane enforces the switch
                try:
                    chat = {"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}]}
                    status = http("POST", f"{gateway}/v1/chat/completions", chat)[0]
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert status == 503
        finally:
            for sock in flood:
                sock.close()
            stop(process)
