"""What the workers of one agent share, served by the supervisor over their links.

- **The stream registry** (agent/registry.py): which worker holds which stream key and
  stream id. Each worker asks before and after every claim (`reserve`, `hold`) and says
  when a publish ended (`drop`), so every stream lives on exactly one worker.
- **Packing** (`RIG_AGENT_PACK_STREAMS`): a new stream arriving at any worker (the
  kernel spreads connections over the workers' sockets) is answered, at `reserve`, with
  the lowest-numbered ready worker relaying fewer than that many streams, and handed
  over to it. A few streams then share one event loop, which wakes up once for several
  of them (two workers at 8 streams cost a fifth more CPU than one: docs/performance.md,
  Run M); more spill over to the next worker, and past every worker's share each new
  one goes to the worker relaying the fewest.
- **Shared limits**: what one worker's limits on wrong keys saw (`share`) goes to the
  others (agent/shared_limits.py).
- **Hand-over**: a worker sends the connection of a publish whose stream another worker
  holds (`handoff`: its socket and RTMP session, agent/handoff.py); the hub passes it to
  that worker (`adopt`) and its answer back.

Each worker has one link (a socketpair, agent/channel.py). The hub is plain asyncio and
knows nothing of processes: the supervisor connects a link per worker process, a test
may connect IngestServers of its own process.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

from agent.channel import Answer, ChannelClosed, ChannelError, Frame, Link
from agent.registry import Holder, StreamRegistry, packed_owner

log = logging.getLogger(__name__)


def holder_answer(holder: Holder | None) -> dict:
    """A registry answer, as the link carries it."""
    if holder is None:
        return {"holder": None}
    return {"holder": {"owner": holder.owner, "pending": holder.pending}}


class Hub:
    """The registry and the hand-overs of a set of workers, numbered from 1."""

    def __init__(
        self, on_ready: Callable[[int, object], None] | None = None, pack: int = 0
    ) -> None:
        self.registry = StreamRegistry()
        self.pack = pack  # RIG_AGENT_PACK_STREAMS: 0, streams stay where they arrive
        self.links: dict[int, Link] = {}
        self.ready: set[int] = set()
        self.handoffs = {"adopted": 0, "failed": 0}
        self._on_ready = on_ready

    def connect(self, index: int, sock: socket.socket) -> Link:
        """The link to worker `index` (its other end is the worker's)."""
        link = Link(sock, lambda frame: self.handle(index, frame), name=f"worker {index} link")
        self.links[index] = link
        return link

    def gone(self, index: int) -> int:
        """Worker `index` is gone: what it held is free. Returns how many keys."""
        link = self.links.pop(index, None)
        if link is not None:
            link.close()
        self.ready.discard(index)
        return self.registry.forget(index)

    async def handle(self, index: int, frame: Frame) -> Answer | None:
        """One request or notification of worker `index`."""
        message = frame.message
        op = message.get("op")
        key = message.get("key")
        if op == "reserve" and isinstance(key, str):
            if message.get("movable") is True and self.registry.owner_of(key) is None:
                target = self.place()
                if target is not None and target != index:  # goes there, handed over
                    return (holder_answer(Holder(target)), b"", [])
            return (holder_answer(self.registry.reserve(index, key)), b"", [])
        if op == "hold" and isinstance(key, str) and isinstance(message.get("stream"), str):
            return (holder_answer(self.registry.hold(index, key, message["stream"])), b"", [])
        if op == "drop" and isinstance(key, str):
            self.registry.drop(index, key)
            return None
        if op == "share":  # what a worker's limits saw, for the others (agent/shared_limits.py)
            for other, link in self.links.items():
                if other != index and other in self.ready:
                    with contextlib.suppress(ChannelClosed):
                        link.notify({**message, "op": "shared"})
            return None
        if op == "handoff":
            return ({"adopted": await self._forward(frame)}, b"", [])
        if op == "ready":
            self.ready.add(index)
            if self._on_ready is not None:
                self._on_ready(index, message.get("port"))
            return None
        log.warning("worker %d sent an unknown request %r", index, op)
        return None

    def place(self) -> int | None:
        """The ready worker a new stream should go to when streams are packed."""
        counts = {owner: self.registry.streams_of(owner) for owner in self.ready}
        return packed_owner(list(self.ready), counts, self.pack)

    async def _forward(self, frame: Frame) -> bool:
        """A connection handed over to the worker named in the frame (`to`)."""
        to = frame.message.get("to")
        target = self.links.get(to) if type(to) is int and to in self.ready else None
        adopted = False
        if target is not None and len(frame.fds) == 1:
            message = {"op": "adopt", "handoffs": frame.message.get("handoffs", 1)}
            fds, frame.fds = frame.fds, []  # the target's link owns them from now on
            try:
                answer = await target.ask(message, frame.blob, fds)
                adopted = bool(answer.message.get("adopted"))
            except (ChannelClosed, ChannelError, TimeoutError) as exc:
                log.warning("worker %s could not take a connection: %r", to, exc)
        self.handoffs["adopted" if adopted else "failed"] += 1
        return adopted
