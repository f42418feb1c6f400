"""Where a publish goes: one stream, one worker, one publishing connection.

Every publish asks the agent's stream registry (`agent.registry`) twice: before its claim
at rig (is the key held, or being claimed?) and after it (rig named the stream: does a
worker relay it already, under another key?). Then:

- **free**: this worker claims and relays it, unless streams are packed
  (`RIG_AGENT_PACK_STREAMS`, agent/hub.py) and another worker should take new ones: then
  it is handed to that worker, which claims it;
- **being claimed** by any worker: an active duplicate (it sent `publish` a moment ago),
  refused with `NetStream.Publish.Denied`;
- **held by this worker**: the publish joins that broadcast (`LiveIngest.join`,
  `agent.broadcast`), unless a publisher of the same key sent anything within
  `RIG_AGENT_STALL_TIMEOUT`: that is an active duplicate and the newcomer is refused. A
  publisher of the same key silent for longer is a hung connection (a mobile link that
  died without a close) and is replaced: the old connection is closed. The newcomer
  takes over (the primary back during a hold, a replacement) or waits (a backup while
  the primary is live) at its first keyframe, into the same `StreamRelay`, whose
  destinations stay connected;
- **held by another worker**: the connection is handed to that worker (`agent.handoff`),
  which decides as above, so a replacement, a returning or a backup publisher always
  reaches the relay of its stream.

A single-process agent has a `LocalRegistry`; the workers of a multi-worker agent share
the supervisor's, through `agent.worker.LinkRegistry`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from agent.registry import Holder, StreamRegistry, key_digest

if TYPE_CHECKING:
    from agent.ingest import IngestConnection, LiveIngest
    from agent.rig_client import Claim
    from agent.server import IngestServer

log = logging.getLogger(__name__)

# A connection is handed from worker to worker at most this often (the holder may have
# ended and another worker taken the stream meanwhile: no ping-pong).
MAX_HANDOFFS = 1


class Registry(Protocol):
    """The stream registry as one worker sees it (`me` is its owner number)."""

    me: int

    async def reserve(self, key: str, movable: bool = False) -> Holder | None: ...

    async def hold(self, key: str, stream_id: str) -> Holder | None: ...

    def drop(self, key: str) -> None: ...

    async def hand_off(self, owner: int, connection: IngestConnection) -> bool: ...


class LocalRegistry:
    """The registry of a single-process agent: everything is held by owner 0."""

    me = 0

    def __init__(self) -> None:
        self.table = StreamRegistry()

    async def reserve(self, key: str, movable: bool = False) -> Holder | None:
        return self.table.reserve(self.me, key)

    async def hold(self, key: str, stream_id: str) -> Holder | None:
        return self.table.hold(self.me, key, stream_id)

    def drop(self, key: str) -> None:
        self.table.drop(self.me, key)

    async def hand_off(self, owner: int, connection: IngestConnection) -> bool:
        return False  # there is no other worker


class Placement:
    """Decides, for one worker, where each publish goes (see the module docstring)."""

    def __init__(self, server: IngestServer, registry: Registry) -> None:
        self.server = server
        self.registry = registry

    async def before_claim(self, connection: IngestConnection, key: str) -> bool | None:
        """None: the key is reserved for this publish, claim it. Else the publish was
        placed already: True if it joined a relay here, False if refused or handed off."""
        # A publish not handed over yet may go to another worker (packing, agent/hub.py).
        movable = connection.handoffs == 0
        holder = await self.registry.reserve(key_digest(key), movable)
        if holder is None:
            return None
        if holder.pending:  # being claimed: it sent `publish` a moment ago
            return self._duplicate(connection)
        if holder.owner == self.registry.me:
            ingest = self.server.live.get(key)
            if ingest is None:
                # Its last publish here ended, and the release of its claim is still in
                # flight (`released`): the registry keeps the key ours meanwhile. Claim
                # it again once that release is done (`IngestServer.released`).
                return None
            return self._join(connection, key, ingest, ingest.role_of(key))
        return await self._hand_off(connection, holder.owner)

    async def after_claim(
        self, connection: IngestConnection, key: str, claim: Claim
    ) -> bool | None:
        """rig granted the claim: None if this publish starts the stream's relay here;
        else (another key of the stream is relayed already) it was placed as above. The
        claim is the holder's: it is not released here."""
        stream_id = claim.stream_id or claim.claim_id
        holder = await self.registry.hold(key_digest(key), stream_id)
        if holder is None:
            return None
        if holder.owner == self.registry.me:
            ingest = next(
                (
                    i
                    for i in self.server.live.values()
                    if i.stream_id == stream_id and i is not connection.ingest
                ),
                None,
            )
            if ingest is None:  # the stream's last publish here is over: start it afresh
                return None
            connection.forget_publish()
            return self._join(connection, key, ingest, claim.role)
        connection.forget_publish()
        return await self._hand_off(connection, holder.owner)

    def released(self, key: str) -> None:
        """The publish of `key` on this worker is over. The registry lets the key go
        once its claim's release at rig is done: until then rig would answer a claim
        from this agent (any worker) with the claim the release then ends
        (docs/agent-protocol.md#claim), so another publish of the key comes here, and
        waits for the release."""
        release = self.server.release_in_flight(key)
        if release is None:
            self.registry.drop(key_digest(key))
        else:
            release.add_done_callback(lambda _: self._let_go(key))

    def _let_go(self, key: str) -> None:
        if key not in self.server.live:  # unless a new publish of it started here
            self.registry.drop(key_digest(key))

    # ------------------------------------------------------------------ internals

    def _duplicate(self, connection: IngestConnection) -> bool:
        return connection.refuse_publish(
            "already_live_here", "already live here", "NetStream.Publish.Denied",
            "Stream already publishing.",
        )  # fmt: skip

    def _join(
        self, connection: IngestConnection, key: str, ingest: LiveIngest, role: str | None
    ) -> bool:
        """Another publish of a stream this worker relays (`role`: of its key, as rig
        said): it joins the broadcast, unless it is an active duplicate."""
        if role is None or not ingest.may_join(key, connection.now()):
            if key not in ingest.keys:  # the key joined the stream in hold(): undo
                self.registry.drop(key_digest(key))
            return self._duplicate(connection)
        source = ingest.join(connection, role, key)
        connection.session.accept_publish()
        assert ingest.broadcast is not None
        log.info(
            "publish of stream %s from %s joins the broadcast of stream %s as %s (%s)",
            key_digest(key)[:8],
            connection.peer,
            ingest.key_id,
            role,
            "feeding" if source is ingest.broadcast.feeding else "waiting for its keyframe",
        )
        return True

    async def _hand_off(self, connection: IngestConnection, owner: int) -> bool:
        if connection.handoffs >= MAX_HANDOFFS:
            return self._duplicate(connection)
        if await self.registry.hand_off(owner, connection):
            return False  # the other worker has the connection now
        return connection.refuse_publish(
            "handoff_failed", f"could not hand over to worker {owner}",
            "NetStream.Publish.Denied", "Service unavailable, try again.",
        )  # fmt: skip
