"""One broadcast on this agent: which publisher feeds its destinations, and the slate while
none does (issue 15: disconnect protection and backup ingest). Sans-I/O: the clock is
passed in, and what to send goes to an `Output` (the stream's relay).

A broadcast is what rig's claim names: one stream, on one agent, with one relay whose
destinations stay connected from the first publish to the end. Publishers join it as
*sources*, each with the role of the key it used (`primary` or `backup`):

- The first source feeds the relay from its first message (an uninterrupted publish is
  relayed exactly as before). Any later source waits (`agent.standby`: its media is read,
  kept from its latest keyframe, not sent) until a switch to it.
- What feeds the destinations is the best source that is ready (a keyframe to start
  at) and not stalled: the primary before the backup, the newest connection of a role
  before an older one. A backup never takes over from a primary that is live; the
  primary takes back over from the backup at its next keyframe.
- When the feeding source is gone (its connection closed or broke without an unpublish)
  or stalled (nothing for `RIG_AGENT_STALL_TIMEOUT`), another ready source takes over at
  once (at its cached keyframe). If there is none and the stream's disconnect protection
  is on, the broadcast *holds*: the slate (`agent.slate`) feeds every destination, from
  where the timeline stopped, for up to `graceSeconds`; a source that gets ready takes
  over at its keyframe; when the grace runs out the broadcast ends ("grace expired").
  Without protection a gone source ends the broadcast at once, as before, and a stalled
  one keeps it until the idle deadline closes its connection.
- A deliberate stop (`FCUnpublish`, `deleteStream`) of the feeding source ends the
  broadcast at once, unless another publisher of it is still there (a backup): then
  that one takes over (or the broadcast holds for it).

Every switch goes through the relay's `Timeline`: the new source's keyframe comes one
frame interval after the last message sent, its configuration (sequence headers,
onMetaData) just before it, and the relay forgets the old source's configuration, so a
destination sees one continuous publish and one that reconnects gets the current
source's headers. `ingestState` is `live` (the primary feeds), `backup` or `holding`;
every change is reported (`on_state`) so the agent tells rig at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from agent.end_reasons import GRACE_EXPIRED
from agent.media_facts import AudioFacts, VideoFacts
from agent.rtmp.message import Message
from agent.slate import Slate, SlateLoop
from agent.standby import Standby
from agent.timeline import Timeline

log: Final = logging.getLogger(__name__)

PRIMARY, BACKUP = "primary", "backup"
# ingestState (docs/agent-protocol.md#heartbeat-health)
LIVE, ON_BACKUP, HOLDING = "live", "backup", "holding"
_STATE_OF_ROLE: Final = {PRIMARY: LIVE, BACKUP: ON_BACKUP}
# The timeline's step at a switch when the frame rate is not known (30 fps).
DEFAULT_STEP_MS: Final = 33


@dataclass(frozen=True)
class Protection:
    """The stream's `disconnectProtection` (rig's claim and heartbeat answers)."""

    enabled: bool = False
    grace_seconds: float = 0.0

    @property
    def holds(self) -> bool:
        """A lost publisher is waited for, the slate feeding the destinations."""
        return self.enabled and self.grace_seconds > 0

    @classmethod
    def of(cls, answer: object) -> Protection | None:
        """From rig's `{"enabled", "graceSeconds"}` (None if absent or malformed)."""
        if not isinstance(answer, dict):
            return None
        enabled, grace = answer.get("enabled"), answer.get("graceSeconds")
        if not isinstance(enabled, bool) or not isinstance(grace, int | float):
            return None
        return cls(enabled, max(0.0, float(grace)))


class Output(Protocol):
    """Where a broadcast's media goes: the stream's relay (agent.relay.StreamRelay)."""

    timeline: Timeline
    has_video: bool

    def feed(self, messages: list[Message], now: float | None = None) -> None: ...

    def feed_slate(self, messages: list[Message], now: float) -> None: ...

    def new_source(self, slate: bool = False) -> None: ...

    def configuration(self) -> list[Message]: ...

    def slate_facts(self) -> tuple[VideoFacts | None, AudioFacts | None]: ...

    def facts_known(self) -> bool: ...


class Slates(Protocol):
    """Encoded slates by ingest facts (agent.slate.SlateCache)."""

    def request(self, video: VideoFacts | None, audio: AudioFacts | None) -> object: ...

    def get(self, video: VideoFacts | None, audio: AudioFacts | None) -> Slate | None: ...


class Source:
    """One publisher of the broadcast (a connection), primary or backup."""

    def __init__(self, broadcast: Broadcast, role: str, key: str, order: int) -> None:
        self.broadcast = broadcast
        self.role = role
        self.key = key
        self.order = order  # joined after every source of a lower order
        self.standby = Standby(broadcast.max_bytes, broadcast.max_ms)
        self.stalled = False  # sent nothing for the stall timeout
        self.gone = False

    def feed(self, messages: list[Message], now: float) -> None:
        """The messages of one read from this publisher."""
        self.broadcast.feed(self, messages, now)

    def __repr__(self) -> str:
        return f"<{self.role} source {self.order}>"


class Broadcast:
    """The sources of one broadcast and what feeds its output (see the module docstring).

    `on_state(state)` is called on every change of ingestState; `on_end(reason)` once,
    when the broadcast is over (the caller ends the relay, releases the claim and closes
    the connections of the sources left)."""

    def __init__(
        self,
        output: Output,
        slates: Slates,
        protection: Protection,
        on_state: Callable[[str], None],
        on_end: Callable[[str], None],
        label: str = "broadcast",
        max_bytes: int = 64 << 20,
        max_ms: int = 10_000,
    ) -> None:
        self.output = output
        self.slates = slates
        self.protection = protection
        self.label = label
        self.max_bytes, self.max_ms = max_bytes, max_ms
        self.sources: list[Source] = []
        self.feeding: Source | None = None
        self.state: str | None = None  # None until the first source joins
        self.ended = False
        self.hold_started: float | None = None
        self.held_seconds = 0.0  # holds that are over
        self.primary_key: str | None = None  # once a primary joined (names the broadcast)
        self._on_state = on_state
        self._on_end = on_end
        self._slate: SlateLoop | None = None
        self._prepared: tuple[VideoFacts | None, AudioFacts | None] | None = None
        self._joined = 0

    # ------------------------------------------------------------------ publishers

    def join(self, role: str, key: str, now: float) -> Source:
        """A publisher of this broadcast was accepted; its messages go to its `feed`."""
        self._joined += 1
        source = Source(self, role, key, self._joined)
        if role == PRIMARY:
            self.primary_key = key
        self.sources.append(source)
        if self.state is None:  # the broadcast's first publisher: it feeds at once
            self.feeding = source
            self.state = _STATE_OF_ROLE[role]
        else:
            log.info("%s: a %s publisher joined, waiting for its keyframe", self.label, role)
            self._reconsider(now)
        return source

    def feed(self, source: Source, messages: list[Message], now: float) -> None:
        """The messages of one read from `source`."""
        if source is self.feeding:
            source.stalled = False
            self.output.feed(messages, now)
            return
        if source.gone or self.ended:
            return
        source.stalled = False
        standby = source.standby
        standby.add(messages)
        if standby.ready(self.output.has_video) and self._better(source):
            self._reconsider(now)

    def stalled(self, source: Source, now: float) -> None:
        """`source` has sent nothing for the stall timeout (called again while it lasts)."""
        if source.stalled or source.gone or self.ended:
            return
        source.stalled = True
        source.standby.clear()  # its cached keyframe is stale: the next one counts
        if source is self.feeding:
            log.info("%s: the %s publisher stalled", self.label, source.role)
            self._reconsider(now)

    def gone(self, source: Source, now: float, cause: str) -> None:
        """`source`'s connection closed or broke without an unpublish."""
        if source.gone or self.ended:
            return
        self._remove(source)
        if source is self.feeding:
            log.info("%s: the %s publisher is gone (%s)", self.label, source.role, cause)
            self.feeding = None
        self._reconsider(now, cause)

    def unpublished(self, source: Source, now: float, cause: str) -> None:
        """`source` stopped publishing on purpose (FCUnpublish, deleteStream)."""
        if source.gone or self.ended:
            return
        self._remove(source)
        if source is not self.feeding:
            self._reconsider(now, cause)
            return
        self.feeding = None
        if not self.sources:
            self.end(cause)  # the streamer pressed stop: no slate, no grace
            return
        log.info("%s: the %s publisher stopped; another one takes over", self.label, source.role)
        self._reconsider(now, cause)

    # ------------------------------------------------------------------ the whole broadcast

    def tick(self, now: float) -> None:
        """Periodic while holding (every 50-100 ms): the slate's frames that are due, the
        end of the grace."""
        if self.state != HOLDING or self.ended:
            return
        assert self.hold_started is not None
        if now - self.hold_started >= self.protection.grace_seconds:
            log.info("%s: no publisher came back within %g s", self.label, self.held_for(now))
            self.end(GRACE_EXPIRED)
            return
        if self._slate is None:
            self._start_slate(now)
        elif messages := self._slate.due(now):
            self.output.feed_slate(messages, now)

    def set_protection(self, protection: Protection, now: float) -> None:
        """rig's current setting (it may change while live)."""
        if protection == self.protection:
            return
        self.protection = protection
        if self.state == HOLDING:
            self.tick(now)  # a grace shortened below the hold so far ends it now
            if not self.ended and not protection.holds:
                self.end(GRACE_EXPIRED)

    def prepare(self) -> None:
        """Periodic: ask for the slate of the ingest's current facts once they are known,
        so it is encoded before any hold needs it."""
        if not self.protection.holds or self.ended or self.state == HOLDING:
            return
        if not self.output.facts_known():
            return  # a slate for half-known facts would be encoded twice
        facts = self.output.slate_facts()
        if facts != self._prepared and facts != (None, None):
            self._prepared = facts
            self.slates.request(*facts)

    def end(self, reason: str) -> None:
        """The broadcast is over: the last publisher stopped, the grace expired, rig
        revoked the claim, the agent is shutting down."""
        if self.ended:
            return
        self.ended = True
        self.feeding = None
        self._slate = None
        self._on_end(reason)

    def held_for(self, now: float) -> float:
        """Seconds the slate has fed the destinations, this broadcast."""
        current = 0.0 if self.hold_started is None else now - self.hold_started
        return self.held_seconds + current

    def source_of(self, role: str) -> Source | None:
        """The newest source of a role (for the heartbeat: the backup's key)."""
        of_role = [s for s in self.sources if s.role == role]
        return of_role[-1] if of_role else None

    # ------------------------------------------------------------------ decisions

    def _better(self, source: Source) -> bool:
        """Whether `source`, once ready, should take over from what feeds now."""
        current = self.feeding
        if current is None or current.stalled:
            return True
        return source.role == PRIMARY and current.role == BACKUP

    def _best(self) -> Source | None:
        """The source that should feed: ready, not stalled; primary first, then newest."""
        expect_video = self.output.has_video
        ready = [
            s
            for s in self.sources
            if s is not self.feeding and not s.stalled and s.standby.ready(expect_video)
        ]
        if not ready:
            return None
        return max(ready, key=lambda s: (s.role == PRIMARY, s.order))

    def _reconsider(self, now: float, cause: str = "") -> None:
        """Switch, hold, wait or end, after anything changed."""
        if self.ended:
            return
        current = self.feeding
        best = self._best()
        if current is not None and not current.stalled:
            if best is not None and best.role == PRIMARY and current.role == BACKUP:
                self._switch(best, now)
            return
        if best is not None:
            self._switch(best, now)
        elif self.state == HOLDING:
            return
        elif self.protection.holds:
            self._hold(now)
        elif current is None and not self.sources:
            self.end(cause or "connection closed")
        # Else: without protection a stalled source keeps the broadcast (its data may
        # resume; the idle deadline closes it), and a source getting ready is waited for.

    def _switch(self, source: Source, now: float) -> None:
        """`source` feeds the output from now on, from its cached keyframe."""
        old = self.feeding
        if old is not None and not old.gone:
            old.standby.reconfigure(self.output.configuration())
            old.standby.clear()
        messages, at = source.standby.take()
        self.output.timeline.switch(at=at, step_ms=self._step_ms())
        self.output.new_source()
        self._end_hold(now)
        self.feeding = source
        log.info(
            "%s: the %s publisher feeds the destinations (from %s)",
            self.label,
            source.role,
            "the slate" if old is None else f"the {old.role} publisher",
        )
        self.output.feed(messages, now)
        self._set_state(_STATE_OF_ROLE[source.role])

    def _hold(self, now: float) -> None:
        """Nothing can feed the destinations: the slate does, for up to the grace."""
        old = self.feeding
        if old is not None:
            old.standby.reconfigure(self.output.configuration())
        self.feeding = None
        self.hold_started = now
        log.info(
            "%s: holding, the slate feeds the destinations for up to %g s",
            self.label,
            self.protection.grace_seconds,
        )
        self._set_state(HOLDING)
        self._start_slate(now)

    def _start_slate(self, now: float) -> None:
        """Start the slate when it is encoded (else the next tick tries again)."""
        video, audio = self.output.slate_facts()
        slate = self.slates.get(video, audio)
        if slate is None:
            return
        timeline = self.output.timeline
        start = now if timeline.last_at is None else timeline.last_at
        self._slate = SlateLoop(slate, start=start)
        timeline.switch(at=0, step_ms=self._step_ms())
        self.output.new_source(slate=True)
        self.output.feed_slate(self._slate.due(now), now)

    def _end_hold(self, now: float) -> None:
        if self.hold_started is not None:
            self.held_seconds += now - self.hold_started
        self.hold_started = None
        self._slate = None

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)

    def _remove(self, source: Source) -> None:
        source.gone = True
        if source in self.sources:
            self.sources.remove(source)

    def _step_ms(self) -> int:
        """One frame interval of the broadcast's video (what a switch leaves between the
        last message sent and the new source's keyframe)."""
        video, _ = self.output.slate_facts()
        if video is None or not video.frame_rate:
            return DEFAULT_STEP_MS
        return max(1, min(1000, round(1000 / video.frame_rate)))
