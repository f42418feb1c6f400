"""Where a publish goes: one stream, one worker, one publishing connection.

Every publish asks the agent's stream registry (`agent.registry`) twice: before its claim
at rig (is the key held, or being claimed?) and after it (rig named the stream: does a
worker relay it already, under another key?). Then:

- **free**: this worker claims and relays it;
- **being claimed** by any worker: an active duplicate (it sent `publish` a moment ago),
  refused with `NetStream.Publish.Denied`;
- **held by this worker**: the holding connection decides. If it sent anything in the
  last `HUNG_AFTER` seconds it is an active duplicate and the newcomer is refused; else
  it is a hung connection (a mobile link that died without a close) and the newcomer
  replaces it at once: the old connection is closed and the new one feeds the same
  `StreamRelay`, whose destinations stay connected;
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

# A publishing connection that has sent nothing for this long is hung: a new publish of
# its stream replaces it (issue 12: mobile links die without a close; the idle deadline,
# RIG_AGENT_IDLE_TIMEOUT, is far longer). Encoders send media many times a second.
HUNG_AFTER = 2.0
# A connection is handed from worker to worker at most this often (the holder may have
# ended and another worker taken the stream meanwhile: no ping-pong).
MAX_HANDOFFS = 1


class Registry(Protocol):
    """The stream registry as one worker sees it (`me` is its owner number)."""

    me: int

    async def reserve(self, key: str) -> Holder | None: ...

    async def hold(self, key: str, stream_id: str) -> Holder | None: ...

    def drop(self, key: str) -> None: ...

    async def hand_off(self, owner: int, connection: IngestConnection) -> bool: ...


class LocalRegistry:
    """The registry of a single-process agent: everything is held by owner 0."""

    me = 0

    def __init__(self) -> None:
        self.table = StreamRegistry()

    async def reserve(self, key: str) -> Holder | None:
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
        holder = await self.registry.reserve(key_digest(key))
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
            return self._join(connection, key, ingest)
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
            return self._join(connection, key, ingest)
        connection.forget_publish()
        return await self._hand_off(connection, holder.owner)

    def released(self, key: str) -> None:
        """The publish of `key` on this worker is over. The registry lets the key go
        once its claim's release at rig is done: until then rig would answer a claim
        from this agent (any worker) with the claim the release then ends (CONTRACTS.md
        §6), so another publish of the key comes here, and waits for the release."""
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

    def _join(self, connection: IngestConnection, key: str, ingest: LiveIngest) -> bool:
        """Another publish of a stream this worker relays: refuse an active duplicate,
        replace a hung connection."""
        old = ingest.connection
        idle = connection.now() - old.last_data
        if ingest.relay is None or idle < HUNG_AFTER:
            if ingest.key != key:  # the other key joined the stream in hold(): undo
                self.registry.drop(key_digest(key))
            return self._duplicate(connection)
        old.detach_publish()
        old.close_now(f"replaced by a new connection from {connection.peer}")
        if ingest.key != key:  # another key of the same stream (a backup key)
            self.server.live.pop(ingest.key, None)
            self.registry.drop(key_digest(ingest.key))
            self.server.live[key] = ingest
            ingest.key = key
        ingest.attach(connection)
        ingest.relay.new_source()
        self.server.stats.replaced += 1
        log.info(
            "stream %s: the publish from %s replaces %s, which sent nothing for %.1f s",
            ingest.key_id,
            connection.peer,
            old.peer,
            idle,
        )
        connection.session.accept_publish()
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
