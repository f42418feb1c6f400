"""The agent's RTMP ingest server: one event loop for every ingest and destination.

Every socket of the process (publishers, destinations) is served by the asyncio loop
this server runs on (uvloop under `rig-agent`): no thread per ingest or destination.
The server accepts connections (`agent.ingest.IngestConnection`), keeps the registry of
live publishes (one per stream key) and their claims at rig, renews the claims with each
stream's health every heartbeat (in batches: `agent.heartbeat`), applies rig's answer
(revoked: kick; new destinations: `StreamRelay.apply_destinations`), and checks the
connections' deadlines twice a second. It holds what the abuse limits count across
connections (`agent.limits`). PyAV probes run in a small worker pool (`agent.probe`).

Disconnect protection (`agent.broadcast`): a broadcast's `ingestState` change is sent
to rig at once (a heartbeat right away, besides the regular ones), and while any
broadcast holds, heartbeats go every `HOLDING_HEARTBEAT` seconds, so that a takeover of
the stream by another agent (rig answers `revoked`) frees the destinations within about
a second; the slates of holding broadcasts are played by one timer (`TICK_INTERVAL`).
Slates are encoded by one worker thread (`agent.slate.SlateCache`), ahead of any hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from agent import end_reasons
from agent.broadcast import BACKUP, HOLDING, Protection
from agent.destination import Destination, EgressSettings
from agent.heartbeat import HeartbeatRound, HeartbeatSender, bounded
from agent.ingest import IngestConnection, LiveIngest, key_id, stream_key_of
from agent.limits import Admission, FailedPublishes, RefusalLog, RefusedKeys
from agent.metrics import AgentStats
from agent.placement import LocalRegistry, Placement, Registry
from agent.probe import Prober
from agent.relay import StreamRelay
from agent.rig_client import (
    RigClient,
    RigUnavailable,
    StreamInUse,
    destinations_from,
    thumbnail_wanted,
)
from agent.settings import AgentSettings, CannotListen
from agent.slate import SlateCache
from agent.thumbnails import Thumbnailer

if TYPE_CHECKING:
    pass

__all__ = ["IngestServer", "LiveIngest", "key_id", "stream_key_of"]

log = logging.getLogger(__name__)

# How often the connections' deadlines (to publish, then idle) are checked.
CHECK_INTERVAL = 0.5
# Seconds a release waits for the destinations to drain, for their final figures.
RELEASE_DRAIN_WAIT = 3.0
RIG_CALL_TIMEOUT = 5.0  # RigClient's
# How often the negative cache of refused keys forgets what has expired.
PRUNE_INTERVAL = 60.0
# Seconds between the slate's sends while holding: frames go out in batches this long
# (bench/slate: one timer per 100 ms costs a third of a timer per frame).
TICK_INTERVAL = 0.1
# Heartbeat interval while a broadcast holds (a takeover elsewhere is learnt this fast);
# an ingestState change is reported at once, at most this often.
HOLDING_HEARTBEAT = 1.0
SOON_MIN_INTERVAL = 0.2


class IngestServer:
    """Accepts RTMP publishers and relays each one through a StreamRelay."""

    def __init__(
        self,
        settings: AgentSettings,
        rig: RigClient,
        egress: EgressSettings,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings
        self.rig = rig
        self.egress = egress
        self.live: dict[str, LiveIngest] = {}  # by stream key (a broadcast under each)
        # One stream, one worker, one broadcast (agent/placement.py).
        self.placement = Placement(self, registry or LocalRegistry())
        # The disconnect slate of each ingest's facts (a 1080p one is about 110 KB).
        self.slates = SlateCache(max_entries=64)
        self.relays: set[StreamRelay] = set()
        self.connections: set[IngestConnection] = set()
        self.prober = Prober()
        self.thumbnailer = Thumbnailer(rig.put_thumbnail) if settings.thumbnails else None
        self.stats = AgentStats()  # publishes accepted and refused, for agent/metrics.py
        # What strangers may cost (agent/limits.py).
        self.admission = Admission(settings.admission())
        self.failed_publishes = FailedPublishes(
            settings.failed_publish_burst, settings.failed_publishes_per_minute
        )
        self.refused_keys = RefusedKeys(settings.refused_key_ttl)
        self.refusals = RefusalLog(logging.getLogger("agent.ingest"))
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._releasing: dict[str, asyncio.Task[None]] = {}  # by stream key
        # The heartbeat on its way to rig, if any: a release waits for it (rig renews
        # and re-grants the claims a heartbeat names; one arriving after the release
        # would make the stream live again).
        self._heartbeat: asyncio.Future[HeartbeatRound] | None = None
        self._beat_soon = asyncio.Event()  # an ingestState changed: tell rig now
        self._holding = asyncio.Event()  # some broadcast holds: play its slate

    @property
    def ingest_url(self) -> str:
        """The URL streamers publish to (announced to rig with each claim)."""
        if self.settings.public_url:
            return self.settings.public_url
        host = self.settings.listen_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104
            host = socket.gethostname()
        return f"rtmp://{host}:{self.port}/{self.settings.rtmp_app}"

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); still known once the listener closed (a
        release during shutdown announces the ingest URL)."""
        assert self._port is not None
        return self._port

    @property
    def serving(self) -> bool:
        """The RTMP listener accepts connections."""
        return self._server is not None and self._server.is_serving()

    async def start(self, reuse_port: bool = False) -> None:
        """Listen for publishers (`reuse_port`: beside the other workers of the agent,
        SO_REUSEPORT, the kernel spreading new connections over them)."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: IngestConnection(self),
                self.settings.listen_host,
                self.settings.listen_port,
                reuse_port=reuse_port or None,
            )
        except OSError as exc:
            raise CannotListen("RIG_AGENT_RTMP_LISTEN", self.settings.rtmp_listen, exc) from None
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("RTMP ingest listening on %s:%s", self.settings.listen_host, self.port)
        self._tasks = [
            loop.create_task(self._heartbeat_loop(), name="heartbeats"),
            loop.create_task(self._check_loop(), name="deadlines"),
            loop.create_task(self._hold_loop(), name="slates"),
        ]
        if self.thumbnailer is not None:
            task = self.thumbnailer.run(self._live_claims)
            self._tasks.append(loop.create_task(task, name="thumbnails"))

    async def close(self) -> None:
        """Stop accepting, end every ingest, let destinations drain, then stop them."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for ingest in self.broadcasts():  # holding ones too: no publisher to close
            ingest.kick(end_reasons.SHUTDOWN)
        for connection in list(self.connections):
            connection.close(end_reasons.SHUTDOWN)
        await asyncio.sleep(0)  # let the connections notice they are closed
        relays = list(self.relays)
        deadline = self.settings.shutdown_timeout
        drained = await asyncio.gather(*(r.wait_closed(deadline) for r in relays))
        for relay, done in zip(relays, drained, strict=True):
            if not done:
                relay.stop()
        await asyncio.gather(*(r.wait_closed(2.0) for r in relays))
        if self._background:  # claim releases
            await asyncio.wait(self._background, timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.to_thread(self.prober.close)
        await asyncio.to_thread(self.slates.close)
        if self.thumbnailer is not None:
            await self.thumbnailer.close()

    def _live_claims(self) -> list[tuple[str, StreamRelay]]:
        """(claim id, relay) of every publish live here whose pictures rig wants (someone
        looks at them: decoding keyframes nobody sees would cost a fifth of the relay's
        CPU, docs/performance.md)."""
        return [
            (i.claim_id, i.relay)
            for i in self.broadcasts()
            if i.claim_id and i.relay and i.thumbnail_wanted
        ]

    def broadcasts(self) -> list[LiveIngest]:
        """Every broadcast live here, once each (one may be under two keys)."""
        return list({id(i): i for i in self.live.values()}.values())

    def ingest_state_changed(self, ingest: LiveIngest) -> None:
        """A broadcast's ingestState changed: rig hears of it at once."""
        log.info("stream %s: ingestState %s", ingest.key_id, ingest.ingest_state)
        self._beat_soon.set()
        if ingest.ingest_state == HOLDING:
            self._holding.set()

    def new_relay(self, label: str, destinations: list[Destination]) -> StreamRelay:
        """The relay of a publish that was just accepted."""
        relay = StreamRelay(label, destinations, self.egress, self.prober)
        self.relays = {r for r in self.relays if not r.done}
        self.relays.add(relay)
        return relay

    def release_claim(self, ingest: LiveIngest, reason: str) -> None:
        """Give the publish's claim back to rig in the background, with why it ended and
        its final figures (docs/agent-protocol.md#release), so its session loses nothing."""
        assert ingest.claim_id is not None
        health = ingest.health(self.ingest_url, final=True)  # the ingest as it ended
        task = self.spawn(
            self._release_claim(ingest, ingest.claim_id, reason, health), f"release-{ingest.key_id}"
        )
        for key in ingest.keys:  # a claim of either key waits for it
            self._releasing[key] = task
            task.add_done_callback(lambda _, key=key: self._releasing.pop(key, None))

    def release_in_flight(self, key: str) -> asyncio.Task[None] | None:
        """The release of this key's claim, while rig has not answered it."""
        return self._releasing.get(key)

    async def released(self, key: str) -> None:
        """Until a release of this key still in flight is done: rig answers a claim from
        the agent that holds the stream with that same claim, which the release would then
        end (docs/agent-protocol.md#claim)."""
        task = self._releasing.get(key)
        if task is not None:
            await asyncio.wait({task}, timeout=RELEASE_DRAIN_WAIT + RIG_CALL_TIMEOUT)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a background task we keep a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _release_claim(
        self, ingest: LiveIngest, claim_id: str, reason: str, health: dict[str, object]
    ) -> None:
        if ingest.relay is not None:
            # The destinations' last figures once they have sent what was queued and
            # closed (milliseconds, unless one is stuck: then what it had sent by then).
            await ingest.relay.wait_closed(RELEASE_DRAIN_WAIT)
            health["destinations"] = ingest.destinations()
        heartbeat = self._heartbeat
        if heartbeat is not None:
            await asyncio.wait({heartbeat}, timeout=RIG_CALL_TIMEOUT)
        try:
            await self.rig.release(claim_id, reason, bounded(health))
        except (RigUnavailable, StreamInUse) as exc:
            # The claim expires on its own once heartbeats stop mentioning it.
            log.warning("stream %s: could not release the claim: %s", ingest.key_id, exc)

    async def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pruned = loop.time()
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            now = loop.time()
            for connection in list(self.connections):
                connection.check(now)
            self.relays = {r for r in self.relays if not r.done}
            self.refusals.tick()
            if now - pruned > PRUNE_INTERVAL:
                pruned = now
                self.refused_keys.prune()
            for ingest in self.broadcasts():
                if ingest.broadcast is not None:
                    ingest.broadcast.prepare()  # the slate, encoded before it is needed

    async def _hold_loop(self) -> None:
        """Play the slate of every holding broadcast, and end those whose grace ran out."""
        while True:
            await self._holding.wait()
            await asyncio.sleep(TICK_INTERVAL)
            now = time.monotonic()
            holding = False
            for ingest in self.broadcasts():
                broadcast = ingest.broadcast
                if broadcast is not None and broadcast.state == HOLDING:
                    broadcast.tick(now)
                    holding = holding or broadcast.state == HOLDING
            if not holding:
                self._holding.clear()

    async def _heartbeat_loop(self) -> None:
        """Renew our claims every heartbeat interval (a round that takes longer starts
        the next one at once); kick revoked publishes; apply destination changes. While
        a broadcast holds, every HOLDING_HEARTBEAT; when an ingestState changed, at once
        (changes within SOON_MIN_INTERVAL in one round)."""
        loop = asyncio.get_running_loop()
        sender = HeartbeatSender(self.rig)
        failing = False
        next_round = loop.time() + self.settings.heartbeat_interval
        while True:
            interval = self.settings.heartbeat_interval
            if self._holding.is_set():
                interval = min(interval, HOLDING_HEARTBEAT)
                next_round = min(next_round, loop.time() + interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_round - loop.time())):
                    await self._beat_soon.wait()
                await asyncio.sleep(SOON_MIN_INTERVAL)  # changes in a row: one round
            self._beat_soon.clear()
            next_round = loop.time() + interval
            entries = self.heartbeat_entries()
            if not entries:
                continue
            self._heartbeat = asyncio.ensure_future(sender.send(entries))
            try:
                result = await self._heartbeat
            finally:
                self._heartbeat = None
            next_round = max(next_round, loop.time())
            if result.failed:
                if not failing:
                    log.warning(
                        "heartbeat failed, streaming on from cached config: %d of %d"
                        " batch(es) of claims failed (%s)",
                        len(result.failed),
                        result.batches,
                        result.failed[0],
                    )
                failing = True
            elif failing:
                log.info("heartbeat to rig works again")
                failing = False
            self.apply_heartbeat(result.answers)

    def heartbeat_entries(self) -> list[dict[str, Any]]:
        """One heartbeat entry per claim of this agent (a broadcast, under one or two
        keys), with the stream's health
        (docs/agent-protocol.md#disconnect-protection-claim-rules)."""
        url = self.ingest_url
        return [
            i.heartbeat_entry(url)
            for i in self.broadcasts()
            if i.claim_id and i.broadcast is not None and not i.broadcast.ended
        ]

    def apply_heartbeat(self, answers: list[dict]) -> None:
        """Act on rig's answer to a heartbeat."""
        by_claim = {i.claim_id: i for i in self.broadcasts() if i.claim_id}
        for answer in answers:
            ingest = by_claim.get(answer.get("claimId"))
            if ingest is None:
                continue
            status = answer.get("status")
            if status == "revoked":
                log.warning("stream %s: rig revoked the claim, ending the publish", ingest.key_id)
                ingest.claim_id = None  # nothing to release: rig already ended it
                ingest.kick()
                continue
            if status != "live":
                continue  # `invalid`: rig could not read or renew that entry, even cut
                # down; the publish goes on as it is. Only a live answer says more.
            if ingest.relay is not None:
                ingest.relay.apply_destinations(destinations_from(answer.get("destinations")))
            ingest.thumbnail_wanted = thumbnail_wanted(answer)
            broadcast = ingest.broadcast
            protection = Protection.of(answer.get("disconnectProtection"))
            if broadcast is not None and protection is not None:
                broadcast.set_protection(protection, time.monotonic())
            if answer.get("backupStatus") == "revoked" and broadcast is not None:
                backup = broadcast.source_of(BACKUP)
                if backup is not None:
                    ingest.end_backup(backup.key)
