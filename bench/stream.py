"""Stream-inspection benchmark: the CPU the output scan spends on one streamed answer, without HTTP.

    .venv/bin/python bench/stream.py                       # 100k literals + 100 regexes, both backends
    .venv/bin/python bench/stream.py --literals 10000 --profile

Feeds the exact bytes `containment mock-upstream` streams for the proxy benchmark's prompt (a role
chunk, 20 text chunks, a finish chunk, `[DONE]`, one network chunk each) through the gateway's stream
inspector, as the proxy does, and reports µs per stream. This is the part of bench/proxy.py's
"stream" CPU that is policy work; the rest is HTTP.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import policy as make_policy  # noqa: E402
from gateway.context import Identity, RequestContext  # noqa: E402
from gateway.filters.output_scan import OutputInspector, StreamInspector  # noqa: E402
from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.routing import Router  # noqa: E402
from gateway.settings import RouteConfig  # noqa: E402
from rules.compile import CompiledPolicy, compile_policy  # noqa: E402
from rules.literal_index import hyperscan_available  # noqa: E402
from rules.model import utcnow  # noqa: E402

TEXT = "Please summarise the history of the water system for the research team in plain words"


def mock_chunks(text: str = TEXT, chunks: int = 20) -> list[bytes]:
    """What the mock upstream writes for a streamed chat completion, one write per event."""

    def event(delta: dict[str, str], finish: str | None) -> bytes:
        document = {
            "id": "chatcmpl-mock1795430727",
            "object": "chat.completion.chunk",
            "created": 1795430727,
            "model": "mock-echo",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(document) + b"\n\n"

    size = len(text) // chunks
    out = [event({"role": "assistant", "content": ""}, None)]
    out += [event({"content": text[start : start + size]}, None) for start in range(0, len(text), size)]
    return [*out, event({}, "stop"), b"data: [DONE]\n\n"]


def policy(literals: int, regexes: int, backend: str) -> CompiledPolicy:
    return compile_policy(make_policy(literals, regexes), backend=backend)


def inspector(compiled: CompiledPolicy, metrics: GatewayMetrics, route: object) -> StreamInspector:
    """The gateway's inspector for one streamed chat answer, as the proxy opens it."""
    ctx = RequestContext(
        request_id="bench",
        method="POST",
        path="/v1/chat/completions",
        route=route,  # type: ignore[arg-type]
        identity=Identity(key_id=None, client_ip="127.0.0.1"),
        snapshot=compiled,
        now=utcnow(),
        model="mock-echo",
        stream=True,
    )
    return OutputInspector(ctx, compiled.output, metrics).stream()


def one_stream(compiled: CompiledPolicy, metrics: GatewayMetrics, route: object, chunks: list[bytes]) -> bytes:
    stream = inspector(compiled, metrics, route)
    out = [stream.feed(chunk) for chunk in chunks]
    out.append(stream.close())
    return b"".join(out)


def _text_of(events: bytes) -> str:
    """The content text carried by a run of chat-chunk events."""
    out = []
    for line in events.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:]).get("choices") or []:
                out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


def hold_back(
    compiled: CompiledPolicy, metrics: GatewayMetrics, route: object, chunks: list[bytes]
) -> tuple[int, float]:
    """The cost of hold-back on time to first token: the event after which the client first gets text
    (the upstream sends text from event 2 on), and the mean characters held back after each text event."""
    stream = inspector(compiled, metrics, route)
    first, received, sent, lags = 0, 0, 0, []
    for number, chunk in enumerate(chunks, 1):
        received += len(_text_of(chunk))
        sent += len(_text_of(stream.feed(chunk)))
        if sent and not first:
            first = number
        if received:
            lags.append(received - sent)
    return first, statistics.fmean(lags)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--literals", type=int, default=100_000)
    parser.add_argument("--regexes", type=int, default=100)
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the first backend")
    args = parser.parse_args()
    chunks = mock_chunks()
    route = Router([RouteConfig(name="default", path_prefix="/", upstream="http://127.0.0.1:1")]).routes[0]
    metrics = GatewayMetrics(CollectorRegistry())
    backends = ["ahocorasick"] + (["hyperscan"] if hyperscan_available() else [])
    print(f"{args.literals:,} literals + {args.regexes} regexes; a {len(chunks)}-event stream of {len(TEXT)} chars")
    print()
    holds: list[str] = []
    print("| backend | µs per stream p50 | p99 |")
    print("|---|---:|---:|")
    for backend in backends:
        compiled = policy(args.literals, args.regexes, backend)
        # Text that could begin a rule is held back and re-chunked, so compare the text, not the bytes.
        assert _text_of(one_stream(compiled, metrics, route, chunks)) == TEXT, "the clean stream's text was changed"
        gc.collect()
        if args.profile and backend == backends[0]:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.streams):
                one_stream(compiled, metrics, route, chunks)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        times = []
        for _ in range(args.streams):
            started = time.perf_counter()
            one_stream(compiled, metrics, route, chunks)
            times.append(time.perf_counter() - started)
        times.sort()
        p50 = statistics.median(times) * 1e6
        p99 = times[int(len(times) * 0.99)] * 1e6
        print(f"| {backend} | {p50:.0f} | {p99:.0f} |")
        first, lag = hold_back(compiled, metrics, route, chunks)
        holds.append(f"| {backend} | {first} (direct: 2) | {lag:.1f} |")
    print()
    print("Hold-back (time to first token): the event after which the client first gets text, and the mean")
    print("characters of received text held back after each event")
    print()
    print("| backend | first text after event | mean characters held |")
    print("|---|---:|---:|")
    print("\n".join(holds))


if __name__ == "__main__":
    main()
