"""rig's background workers (the claim sweeper, the webhook sender): started with the
app, watched by `/healthz`.

A worker keeps going through database outages (it pauses and retries); one that died
of anything else makes `/healthz` answer 503, so the orchestrator restarts the process:
claims would otherwise never expire, or events never be delivered, while the API looked
alive.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
from aiohttp import web

WORKERS = web.AppKey("background_workers", dict[str, asyncio.Task])

# What a worker pauses and retries on: the database is unreachable or restarting.
OUTAGE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PauseLog:
    """Says once that a worker paused (and why) and once that it resumed: not a line
    per retry while the database is away."""

    def __init__(self, log: logging.Logger, worker: str) -> None:
        self._log = log
        self._worker = worker
        self.paused = False

    def failed(self, exc: BaseException) -> None:
        if not self.paused:
            self._log.warning(
                "%s paused, retrying until the database answers: %s: %s",
                self._worker,
                type(exc).__name__,
                exc,
            )
            self.paused = True

    def succeeded(self) -> None:
        if self.paused:
            self._log.info("%s resumed", self._worker)
            self.paused = False


@contextlib.asynccontextmanager
async def worker(
    app: web.Application, name: str, work: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[asyncio.Task]:
    """Run `work()` as the app's background worker `name` until the app stops."""
    task = asyncio.create_task(work(), name=name)
    app[WORKERS][name] = task
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        del app[WORKERS][name]


def dead_workers(app: web.Application) -> list[str]:
    """Background workers that stopped while the app runs (a bug: restart the process)."""
    return sorted(name for name, task in app.get(WORKERS, {}).items() if task.done())
