"""Holds the compiled policy snapshot in force and replaces it when the store reports a new policy.

Compilation runs in a worker thread so the event loop keeps serving; the swap is one reference
assignment, so each request sees exactly one snapshot. A failed build keeps the old snapshot.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from gateway.metrics import GatewayMetrics
from rules.compile import CompiledPolicy, compile_policy
from rules.literal_index import hyperscan_available
from rules.match import DEFAULT_REGEX_BUDGET
from rules.model import Policy

log = logging.getLogger(__name__)

_TRIM_DELAY = 2.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> None:
    """glibc's malloc_trim: give free heap pages back to the OS (a no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class SnapshotHolder:
    def __init__(
        self,
        metrics: GatewayMetrics,
        initial: Policy | None = None,
        *,
        regex_budget: float = DEFAULT_REGEX_BUDGET,
        backend: str = "auto",
    ) -> None:
        self._metrics = metrics
        # With Hyperscan available, "auto" enforces a new policy first with pyahocorasick (fast to build),
        # then swaps in the Hyperscan build (faster to scan, slower to build) of the same version when it
        # is ready: the two report identical matches, so only speed changes.
        self._upgrade = backend == "auto" and hyperscan_available()
        first = "ahocorasick" if self._upgrade else backend
        self._compile = functools.partial(compile_policy, regex_budget=regex_budget, backend=first)
        self._compile_fast = functools.partial(compile_policy, regex_budget=regex_budget, backend="hyperscan")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-compile")
        self._lock = asyncio.Lock()
        self._upgrading: asyncio.Task[None] | None = None
        self._trimming: asyncio.Task[None] | None = None
        self.snapshot: CompiledPolicy = self._compile(initial or Policy())
        self._record(self.snapshot)

    async def install(self, policy: Policy) -> None:
        """Compile `policy` off the event loop and swap it in, unless a newer one is already in force."""
        async with self._lock:
            if policy.version <= self.snapshot.version and self.snapshot.version != 0:
                return
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            previous = self.snapshot
            try:
                if policy.rules is previous.rules:
                    # Only controls changed: nothing to build, so no waiting behind a build in the
                    # worker thread (a Hyperscan upgrade takes seconds) — a kill switch is enforced now.
                    snapshot = self._compile(policy, reuse=previous)
                else:
                    snapshot = await loop.run_in_executor(self._executor, self._compile, policy)
            except Exception:
                self._metrics.reload_failures.inc()
                log.exception(
                    "policy version %s failed to compile; keeping version %s", policy.version, self.snapshot.version
                )
                return
            self.snapshot = snapshot
            self._metrics.reload_seconds.observe(time.perf_counter() - started)
            self._record(snapshot)
            if snapshot.input is previous.input:
                return  # only controls changed: the matchers (and any upgrade of them under way) carry over
            if self._upgrade and snapshot.rule_count:
                self._upgrading = asyncio.create_task(self._upgrade_to_hyperscan(policy))
            else:
                self._trimming = asyncio.create_task(self._give_back_memory())

    async def upgrade_initial(self, policy: Policy) -> None:
        """The start-up snapshot was built with pyahocorasick too: upgrade it in the background."""
        if self._upgrade and policy.rules:
            self._upgrading = asyncio.create_task(self._upgrade_to_hyperscan(policy))

    async def _upgrade_to_hyperscan(self, policy: Policy) -> None:
        loop = asyncio.get_running_loop()
        try:
            faster = await loop.run_in_executor(self._executor, self._compile_fast, policy)
        except Exception:
            log.exception("Hyperscan build of policy version %s failed; pyahocorasick stays", policy.version)
            return
        current = self.snapshot
        if current.rules is faster.rules:  # no other rules arrived meanwhile (controls may have changed)
            self.snapshot = dataclasses.replace(current, input=faster.input, output=faster.output)
            await self._give_back_memory()

    async def _give_back_memory(self) -> None:
        """Return the replaced snapshot's freed heap to the OS. Its automaton's many small allocations
        would otherwise stay in the process's heap (RSS) for good; requests still holding the old
        snapshot finish first (they hold it for one request)."""
        await asyncio.sleep(_TRIM_DELAY)
        await asyncio.get_running_loop().run_in_executor(self._executor, trim_heap)

    def _record(self, snapshot: CompiledPolicy) -> None:
        self._metrics.policy_version.set(snapshot.version)
        self._metrics.policy_rules.set(snapshot.rule_count)
        self._metrics.killswitches.set(len(snapshot.killswitches))

    def close(self) -> None:
        for task in (self._upgrading, self._trimming):
            if task is not None:
                task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
