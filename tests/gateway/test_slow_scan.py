"""A slow regex scan never freezes the process (issue 16, item 2), on real `containment serve` processes.

A regex accepted at push (`ignore.*instructions` is quadratic, not cubic) meets a crafted 1.4 MB prompt of
many messages, each of which nearly matches: every search runs into the per-search budget. Today each search
had its own budget, so one request held the event loop for seconds and the admin API's kill switch waited.
Now the request's regex time is one total budget, large bodies are scanned in a worker thread, and the
request is refused (503 `containment_unavailable`), never forwarded; meanwhile clean requests and the
admin API answer at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import http, serve, serve_mock_upstream, stop

TOKEN = "slow-scan-commander-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SENDERS = 4  # slow requests in flight at once (as many as the scan threads)
SLOW_RULE = {"pattern": "ignore.*instructions", "kind": "regex", "id": "slow-injection"}


def _slow_body() -> dict[str, object]:
    # 150 messages of 9 KB: each holds the prefilter's factor, then 1,300 starts that never finish; each
    # search stays just under the per-search budget (about 12 of its 25 ms), and together they take seconds.
    message = "instructions " + "ignore " * 1300
    return {"model": "mock-echo", "messages": [{"role": "user", "content": message} for _ in range(150)]}


def _chat(gateway: str, text: str) -> int:
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": text}]}
    return http("POST", f"{gateway}/v1/chat/completions", body)[0]


@pytest.fixture
def upstream() -> Iterator[str]:
    with serve_mock_upstream() as url:
        yield url


def test_a_slow_scan_is_refused_while_clean_requests_and_the_kill_switch_answer(upstream: str, tmp_path: Path) -> None:
    env = {"CONTAINMENT_ADMIN_TOKENS": f"ops:commander:{TOKEN}"}
    gateway, admin, process = serve(upstream, tmp_path / "state", env=env)
    try:
        status, _, answer = http("POST", f"{admin}/v1/rules", {"rules": [SLOW_RULE], "reason": "r"}, AUTH)
        assert status == 201, answer  # quadratic, not catastrophic: accepted at push
        assert _chat(gateway, "hello there") == 200

        slow: list[tuple[int, object]] = []
        stop_sending = threading.Event()

        def send_slow() -> None:  # slow requests back to back, until the checks below are done
            while not stop_sending.is_set():
                status, _, answer = http("POST", f"{gateway}/v1/chat/completions", _slow_body())
                slow.append((status, answer))

        senders = [threading.Thread(target=send_slow) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        try:
            time.sleep(0.5)  # bodies are in and being scanned
            clean: list[float] = []
            for _ in range(10):
                began = time.monotonic()
                assert _chat(gateway, "what is the capital of France?") == 200
                clean.append(time.monotonic() - began)
                time.sleep(0.05)
            began = time.monotonic()
            status, _, answer = http(
                "PUT", f"{admin}/v1/killswitches/model:frozen", {"engaged": True, "reason": "r"}, AUTH
            )
            engage = time.monotonic() - began
            assert status == 200, answer
            during = len(slow)
        finally:
            stop_sending.set()
            for sender in senders:
                sender.join(30)

        assert engage < 0.1, f"kill switch took {engage * 1000:.0f} ms during slow scans"
        assert max(clean) < 0.1, f"clean requests took up to {max(clean) * 1000:.0f} ms during slow scans"
        assert during >= SENDERS, "the checks ran while slow requests were being scanned"
        for status, answer in slow:  # each refused once over its budget, never forwarded
            assert status == 503 and answer["error"]["code"] == "containment_unavailable", answer  # type: ignore[index]
        status, _, answer = http(
            "POST",
            f"{gateway}/v1/chat/completions",
            {"model": "frozen", "messages": [{"role": "user", "content": "x"}]},
        )
        assert status == 503 and answer["error"]["code"] == "service_suspended"
    finally:
        stop(process)
