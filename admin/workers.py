"""Worker processes for `--workers N`: started by the primary, restarted when they die, stopped with it."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from multiprocessing.process import BaseProcess

from gateway.settings import Settings

log = logging.getLogger("containment")


def run_worker(settings_json: str, index: int, log_level: str) -> None:
    """The entry point of one worker process (spawned: a fresh interpreter)."""
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s %(levelname)s worker{index} %(name)s %(message)s")
    from admin.cli import run_async
    from admin.serve import serve

    settings = Settings.model_validate_json(settings_json)
    run_async(serve(settings, worker=index))


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        # Workers need no admin tokens: they serve no admin API.
        self._settings_json = settings.model_dump_json(exclude={"admin_tokens"})
        self._count = settings.workers - 1
        self._log_level = settings.log_level
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._stopping = False

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=run_worker, args=(self._settings_json, index, self._log_level), name=f"containment-worker-{index}"
        )
        process.start()
        self._processes[index] = process

    def start(self) -> None:
        for index in range(1, self._count + 1):
            self._spawn(index)

    async def watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for index, process in list(self._processes.items()):
                if not process.is_alive() and not self._stopping:
                    log.error("worker %s (pid %s) exited with %s; restarting it", index, process.pid, process.exitcode)
                    _forget_metrics(process.pid)
                    self._spawn(index)

    def stop(self) -> None:
        self._stopping = True
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()
        for process in self._processes.values():
            process.join(10)
            if process.is_alive():
                process.kill()
            _forget_metrics(process.pid)


def _forget_metrics(pid: int | None) -> None:
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
