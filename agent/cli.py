"""The `rig-agent` command: an RTMP ingest server relaying to every destination."""

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import uvloop

from agent import fastpath
from agent.health import start_health
from agent.memory import limit_malloc_arenas
from agent.rig_client import RigClient
from agent.settings import AgentSettings, add_arguments, settings_from
from agent.supervisor import Supervisor
from agent.zygote import Zygote
from rig.logs import setup_logging

if TYPE_CHECKING:
    from agent.server import IngestServer

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag has an environment variable."""
    parser = argparse.ArgumentParser(
        prog="rig-agent",
        description=(
            "rig-agent: accepts RTMP pushes (OBS, ffmpeg), checks each stream key with rig"
            " and relays the stream, unchanged, to every active destination."
        ),
        epilog=(
            "Every flag can also be set by the environment variable named in its help."
            " The agent's API key is read from RIG_AGENT_KEY only (never a flag)."
        ),
    )
    add_arguments(parser)
    return parser


def single_process(settings: AgentSettings, rig: RigClient) -> "IngestServer":
    """The ingest server of a one-process agent. Imported here: a supervisor relays
    nothing, and stays small without the relay and the media engine (PyAV)."""
    from agent.server import IngestServer

    return IngestServer(settings, rig, settings.egress())


async def serve(settings: AgentSettings, zygote: Zygote | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly: one process serving every
    connection, or (`--workers N`, N > 1: `zygote` given) a supervisor of N worker
    processes."""
    stop = asyncio.Event()
    failure: list[str] = []
    async with RigClient(settings.rig_url, settings.agent_key) as rig:
        server: IngestServer | Supervisor
        supervisor = Supervisor(settings, settings.workers, zygote) if zygote else None
        server = supervisor or single_process(settings, rig)

        def on_signal() -> None:
            if supervisor is not None:
                supervisor.stop()  # no restarting the workers from now on
            stop.set()

        def on_failure(why: str) -> None:
            failure.append(why)
            on_signal()

        if supervisor is not None:
            supervisor.on_failure = on_failure

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await server.start()
        except BaseException:
            await server.close()
            raise
        metrics = supervisor.metrics_text if supervisor is not None else None
        health = await start_health(settings.http_listen, server, rig, metrics)
        public = (
            settings.public_url
            or f"rtmp://{settings.listen_host}:{server.port}/{settings.rtmp_app}"
        )
        workers = f" ({settings.workers} workers)" if supervisor is not None else ""
        log.info(
            "agent %s ready: publish to %s with your stream key%s", settings.name, public, workers
        )
        key_check = loop.create_task(rig.check_key(), name="key check")
        quiet_garbage_collector()
        await stop.wait()
        key_check.cancel()
        log.info("shutting down: ending ingests, draining destinations")
        if health is not None:
            health.draining = True
        await server.close()
        if health is not None:
            await health.close()
    if failure:
        raise OSError(f"agent stopped: {failure[0]}")  # exit status 1, for systemd
    log.info("agent stopped")


# The cyclic garbage collector: the relay frees what it allocates per message by
# reference counting (no cycles), yet every 700 allocations a collection ran, and every
# few seconds a full one walked all of PyAV's, aiohttp's and asyncio's objects: measured
# 15 % of the agent's CPU under load (perf: gc_collect_main, visit_reachable...).
GC_THRESHOLDS = (50_000, 20, 20)


def quiet_garbage_collector() -> None:
    """Once started: move what exists to the permanent generation (never walked
    again) and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rig-agent` console script."""
    limit_malloc_arenas()  # before any thread starts
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:  # one line naming the variable, no usage text
        parser.exit(2, f"{parser.prog}: invalid setting: {exc}\n")
    setup_logging(settings.log_level, settings.log_format)
    log.info("per-message path: %s", fastpath.STATE)  # compiled or not (agent/fastpath.py)
    if not settings.agent_key:
        parser.error("RIG_AGENT_KEY is not set (create one with: rig agents create NAME)")
    zygote = None
    if settings.workers > 1:
        # Before the event loop and any thread: the workers' code imported once, here,
        # and shared by every worker the zygote forks (agent/zygote.py).
        from agent.worker import run_forked

        zygote = Zygote.fork(run_forked)
    return run_loop(settings, serve(settings, zygote))


def run_loop(settings: AgentSettings, main: Coroutine[Any, Any, None]) -> int:
    """Run `main` on the agent's event loop; 1 if it failed to listen (or the like)."""
    # One event loop serves every socket; uvloop (libuv, in C) by default: see the
    # docs/performance.md for what it saves.
    loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main)
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
