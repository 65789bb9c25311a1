"""The admin API's own listener: its own thread, its own event loop, its own reserve of file descriptors.

A flood of data-plane connections must not take the control plane down with it, or no kill switch could
be engaged during the flood. So the admin app is served by a thread of its own (a busy data-plane loop
does not delay its accepts, its TLS-less HTTP parsing, its token checks or its JSON), and it keeps
`reserve` spare descriptors open: when accepting fails because the process is out of descriptors
(EMFILE/ENFILE), it closes a few spares, accepts, and reopens them once it can. The data plane's shared
state (the policy store, the sample sink, the hit counter) stays owned by the data plane's loop:
`on_loop` wraps it so that the admin's calls of its coroutine methods run there (reads of the current
policy are direct: one reference).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import resource
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from aiohttp import web

log = logging.getLogger(__name__)
T = TypeVar("T")
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
_RELEASED_PER_ACCEPT = 4  # the connection, and what acting on it opens (the store's files)


def raise_fd_limit(ceiling: int = 1 << 20) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (capped at `ceiling`); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _OnLoop:
    """Forwards attribute access to `target`; its coroutine methods run on `loop` (the owner's)."""

    def __init__(self, target: object, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not asyncio.iscoroutinefunction(value):
            return value
        loop = self._loop

        async def on_owner(*args: Any, **kwargs: Any) -> Any:
            coroutine = cast(Coroutine[Any, Any, Any], value(*args, **kwargs))
            if asyncio.get_running_loop() is loop:
                return await coroutine
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

        return on_owner


def on_loop(target: T, loop: asyncio.AbstractEventLoop) -> T:
    """`target`, used from another thread's loop: its coroutine methods run on `loop`."""
    return cast(T, _OnLoop(target, loop))


class AdminListener:
    """Serves the admin app on `host:port` from a thread with its own event loop."""

    def __init__(
        self, app: Callable[[], web.Application], host: str, port: int, *, shutdown_timeout: float, reserve: int = 32
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._grace = shutdown_timeout
        self._reserve = reserve
        self._spares: list[int] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[tuple[str, int]] = concurrent.futures.Future()

    async def start(self) -> tuple[str, int]:
        """Start the thread and return once it listens (OSError if it cannot)."""
        self._refill()
        self._thread = threading.Thread(target=self._run, name="admin-listener", daemon=True)
        self._thread.start()
        return await asyncio.wrap_future(self._ready)

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._grace + 5)
        for fd in self._spares:
            os.close(fd)
        self._spares = []

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the starter, or logged
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("the admin listener stopped")
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=self._grace)
        await runner.setup()
        try:
            sock = socket.create_server((self._host, self._port), backlog=1024)
            sock.setblocking(False)
            host, port = sock.getsockname()[:2]
            self._ready.set_result((host, port))
            accepting = asyncio.create_task(self._accept(sock, runner))
            await self._stop.wait()
            accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accepting
            sock.close()
        finally:
            await runner.cleanup()

    async def _accept(self, sock: socket.socket, runner: web.AppRunner) -> None:
        loop = asyncio.get_running_loop()
        server = runner.server
        assert server is not None
        while True:
            try:
                connection, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _OUT_OF_FDS:
                    log.warning("admin listener: accept failed: %s", exc)
                    await asyncio.sleep(0.05)
                elif not self._release():
                    await asyncio.sleep(0.01)  # no spare left: wait for a descriptor to come free
                continue
            try:
                await loop.connect_accepted_socket(server, connection)
            except OSError as exc:
                connection.close()
                log.warning("admin listener: could not serve a connection: %s", exc)
            self._refill()

    def _release(self) -> bool:
        """Out of descriptors: free a few spares for the admin's next connection (and its work)."""
        if not self._spares:
            return False
        for _ in range(min(_RELEASED_PER_ACCEPT, len(self._spares))):
            os.close(self._spares.pop())
        return True

    def _refill(self) -> None:
        while len(self._spares) < self._reserve:
            try:
                self._spares.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                return  # still short of descriptors: try again after the next accept
