"""One worker process of a multi-worker agent (`rig-agent --workers N`).

The supervisor (agent/supervisor.py) has the zygote (agent/zygote.py) fork a worker,
`run_forked`, with one end of a socketpair and sends the settings as the first frame
(the settings of the worker's share, and no process argument ever holds the agent's
key). The worker then runs what a
single-process agent runs: one event loop, an `IngestServer` listening on the agent's
RTMP port beside the other workers (SO_REUSEPORT), its own client of rig (claims,
heartbeats of the streams it holds, releases), and answers the supervisor's requests:
`adopt` (a connection handed over by another worker) and `metrics`. The stream registry
it asks before and after each claim is the supervisor's (`LinkRegistry`).

A worker ends on SIGTERM or SIGINT (draining as a single agent does), and when its
channel closes (the supervisor is gone: a worker never relays on alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from typing import TYPE_CHECKING, Any

from agent.channel import ChannelClosed, ChannelError, Frame, FrameReader, Link
from agent.cli import quiet_garbage_collector, run_loop
from agent.handoff import HandoffError, unpack
from agent.ingest import IngestConnection
from agent.metrics import registry_for
from agent.metrics_merge import snapshot
from agent.registry import Holder
from agent.rig_client import RigClient
from agent.server import IngestServer
from agent.settings import AgentSettings
from agent.shared_limits import SharedFailedPublishes, SharedRefusedKeys, apply
from rig.logs import setup_logging

if TYPE_CHECKING:
    from agent.channel import Answer

log = logging.getLogger(__name__)

# How long a worker waits for the supervisor's registry; beyond, the publish is refused.
REGISTRY_TIMEOUT = 5.0


def holder_from(message: dict[str, Any]) -> Holder | None:
    holder = message.get("holder")
    if not isinstance(holder, dict):
        return None
    return Holder(int(holder["owner"]), bool(holder.get("pending")))


class LinkRegistry:
    """The supervisor's stream registry, as one worker uses it (agent/placement.py)."""

    def __init__(self, link: Link, me: int) -> None:
        self.link = link
        self.me = me

    async def reserve(self, key: str, movable: bool = False) -> Holder | None:
        request = self.link.request({"op": "reserve", "key": key, "movable": movable})
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT):
                frame = await asyncio.shield(request)
        except asyncio.CancelledError:
            # The connection went away meanwhile: a reservation granted later is given
            # back at once, or the key would stay reserved for nobody.
            request.add_done_callback(lambda done: self._give_back(done, key))
            raise
        return holder_from(frame.message)

    async def hold(self, key: str, stream_id: str) -> Holder | None:
        frame = await self.link.ask({"op": "hold", "key": key, "stream": stream_id})
        return holder_from(frame.message)

    def drop(self, key: str) -> None:
        with contextlib.suppress(ChannelClosed):  # the supervisor is gone, and its registry
            self.link.notify({"op": "drop", "key": key})

    async def hand_off(self, owner: int, connection: IngestConnection) -> bool:
        try:
            state, fd = await connection.hand_over()
        except HandoffError as exc:
            log.warning("cannot hand %s over to worker %d: %s", connection.peer, owner, exc)
            return False
        message = {"op": "handoff", "to": owner, "handoffs": connection.handoffs + 1}
        try:
            frame = await self.link.ask(message, state, [fd])
        except (ChannelClosed, ChannelError, TimeoutError) as exc:
            log.warning("cannot hand %s over to worker %d: %r", connection.peer, owner, exc)
            return False
        if not frame.message.get("adopted"):
            return False
        connection.handed_over(owner)
        return True

    def _give_back(self, request: asyncio.Future[Frame], key: str) -> None:
        if request.cancelled() or request.exception() is not None:
            return
        if holder_from(request.result().message) is None:
            self.drop(key)


def share_limits(server: IngestServer, link: Link) -> None:
    """The server's limits on wrong keys, kept in step with the other workers'
    (agent/shared_limits.py)."""

    def share(event: dict[str, Any]) -> None:
        with contextlib.suppress(ChannelClosed):
            link.notify({"op": "share", **event})

    failed, refused = server.failed_publishes, server.refused_keys
    server.failed_publishes = SharedFailedPublishes(failed, share)  # type: ignore[assignment]
    server.refused_keys = SharedRefusedKeys(refused, share)  # type: ignore[assignment]


class Worker:
    """Serves the supervisor's requests for one IngestServer."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.server: IngestServer | None = None

    async def handle(self, frame: Frame) -> Answer | None:
        op = frame.message.get("op")
        if op == "shared" and self.server is not None:
            failed, refused = self.server.failed_publishes, self.server.refused_keys
            apply(frame.message, failed.local, refused.local)  # type: ignore[union-attr]
            return None
        if op == "adopt":
            return ({"adopted": self.adopt(frame)}, b"", [])
        if op == "ping":  # the supervisor's watchdog: this event loop answers
            return ({}, b"", [])
        if op == "metrics":
            families = snapshot(registry_for(self.server)) if self.server else []
            return ({"families": families}, b"", [])
        log.warning("unknown request from the supervisor: %r", op)
        return None

    def adopt(self, frame: Frame) -> bool:
        """A connection another worker handed over: its session and its socket."""
        server = self.server
        if server is None or not server.serving or len(frame.fds) != 1:
            return False
        try:
            session = unpack(frame.blob)
        except HandoffError as exc:
            log.warning("refused a connection handed over: %s", exc)
            return False
        sock = socket.socket(fileno=frame.fds.pop())
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock.close()
            return False
        sock.setblocking(False)
        handoffs = frame.message.get("handoffs")
        count = handoffs if type(handoffs) is int else 1
        if IngestConnection.adopt(server, session, sock, count) is None:
            sock.close()  # this worker's limits refuse it
            return False
        return True


async def serve(settings: AgentSettings, link_socket: socket.socket, index: int) -> None:
    """Run one worker until a signal, or until the supervisor goes away."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(index)
    link = Link(link_socket, worker.handle, name="supervisor link")
    link.closed.add_done_callback(lambda _: stop.set())
    # The supervisor process says in the log whether rig accepts the key: not each worker.
    async with RigClient(settings.rig_url, settings.agent_key, report_key=False) as rig:
        server = IngestServer(settings, rig, settings.egress(), LinkRegistry(link, index))
        share_limits(server, link)
        await server.start(reuse_port=True)
        worker.server = server
        link.notify({"op": "ready", "port": server.port})
        quiet_garbage_collector()
        await stop.wait()
        if link.closed.done():
            log.warning("the supervisor is gone: ending every ingest")
        await server.close()
    link.close()


def read_settings(sock: socket.socket) -> tuple[AgentSettings, dict[str, Any]]:
    """The supervisor's first frame (blocking, before the event loop starts)."""
    reader = FrameReader()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ChannelClosed("the supervisor closed the channel before the settings")
        frames = reader.feed(data)
        if frames:
            message = frames[0].message
            fields = {f.name for f in dataclasses.fields(AgentSettings)}
            values = {k: v for k, v in message.get("settings", {}).items() if k in fields}
            return AgentSettings(**values), message


class WorkerFilter(logging.Filter):
    """Every log line of a worker says which worker it is (`worker` in JSON)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def run_forked(link_socket: socket.socket, index: int) -> int:
    """A worker's life, in the process the zygote forked for it: its exit status."""
    settings, _ = read_settings(link_socket)
    setup_logging(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(WorkerFilter(index))
    return run_loop(settings, serve(settings, link_socket, index))
