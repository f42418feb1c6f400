"""The relay of one stream: the publisher's messages, unchanged, to every destination.

A `StreamRelay` lives as long as the broadcast. The ingest connection that publishes
into it (`agent.ingest`) only calls `feed` with the messages of each read and `end` when
the publish is over, so a later change can keep the relay, and its destinations'
connections, while the publisher's connection is replaced.

For each message (an RTMP audio/video/data message body is an FLV tag body, sent on
unchanged, same timestamp, same order; only a data message without a handler name is
held back, see `feed`), the tag classifier (`agent.tags`) says what it is;
the relay keeps what a destination that (re)connects needs:

- the publisher's latest `onMetaData`, as it was sent. nginx-rtmp's `push` sends its
  own regenerated metadata by default (`meta on`; `meta copy` forwards the publisher's)
  and SRS's forwarder the publisher's renamed `onMetaData`, both without the
  `@setDataFrame` wrapper; we keep the wrapper when the publisher used one, because the
  relay *publishes* to its destinations and `@setDataFrame` is how publishers (OBS,
  FFmpeg) give a server like YouTube or Twitch its metadata. The `onMetaData` body is
  the publisher's either way;
- the latest sequence header of every track (per multitrack track id), the latest
  enhanced-audio channel configuration and the latest video metadata (colorInfo);
- a GOP cache: every other message since the newest video keyframe of the primary video
  track; before any keyframe (audio-only streams, audio before the first video) the
  messages since the start. Bounded by the queue limits (RIG_AGENT_QUEUE_SECONDS and
  _BYTES): a longer GOP empties it, and a new destination then starts its video at the
  next keyframe;
- until every destination has connected once, every message since the start (same
  bounds): a destination's first connection gets the stream exactly as the publisher
  sent it, so nothing is lost while it is being made, even when the publisher sends its
  first seconds in a burst (ffmpeg does, when the claim took long).

Each batch is chunked once for the destinations that share a chunk size and message
stream id (`agent.destination.Chunked`). New sequence headers are probed by the media
engine (`agent.probe`) in the background, for the heartbeat's ingest facts.

Timestamps go through the broadcast's `Timeline` (`agent.timeline`): the first source
keeps its own (an uninterrupted publish is relayed as sent), and when another source
takes over (`agent.broadcast`: the slate, a publisher back on a new connection, a
backup) its timestamps continue the broadcast's, so a destination sees one publish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from agent.destination import (
    Chunked,
    Destination,
    DestinationWorker,
    EgressSettings,
    StreamStart,
)
from agent.ingest_facts import IngestFacts
from agent.media_queue import MediaMessage
from agent.rtmp.message import Message
from agent.tags import AUDIO, DATA, VIDEO, Kind, Tag, classify
from agent.thumbnails import Keyframe
from agent.timeline import Timeline

if TYPE_CHECKING:
    from agent.media_facts import AudioFacts, VideoFacts
    from agent.probe import Prober

log: Final = logging.getLogger(__name__)

_CODED: Final = (Kind.KEYFRAME, Kind.FRAME)  # coded media, as against configuration and metadata

# Kinds a (re)connecting destination gets the latest of, per track, before any media.
_CONFIGURATION: Final = frozenset((Kind.SEQUENCE_HEADER, Kind.CHANNEL_CONFIG, Kind.METADATA))


class StreamRelay(StreamStart):
    """One live stream relayed to its destinations."""

    def __init__(
        self,
        label: str,
        destinations: list[Destination],
        settings: EgressSettings,
        prober: Prober | None = None,
    ) -> None:
        self.label = label
        self._settings = settings
        self._prober = prober
        self.facts = IngestFacts(prober)  # for the heartbeat
        self.timeline = Timeline()  # the broadcast's timestamps, whatever feeds it
        self.workers: dict[int, DestinationWorker] = {}
        self.retired: list[DestinationWorker] = []  # removed or changed while live
        self._live: tuple[DestinationWorker, ...] = ()  # what feed() sends to
        self._started = False
        self.ended = False
        self._closed = asyncio.Event()
        # What a (re)connecting destination starts with.
        self._metadata: MediaMessage | None = None
        self._configuration: dict[tuple[int, int, Kind], tuple[int, MediaMessage]] = {}
        self._arrivals = 0
        self._cache: deque[MediaMessage] = deque()
        self._cache_bytes = 0
        self._cache_keyframe = False  # the cache starts at a keyframe
        self._cache_max_bytes = settings.queue_bytes
        self._cache_max_ms = int(settings.queue_seconds * 1000)
        # Everything since the start, while some destination has not connected yet.
        self._since_start: deque[MediaMessage] | None = deque()
        self._since_start_bytes = 0
        self._first_frame_at: int | None = None  # the timestamp of its first coded frame
        self._connected_once: set[DestinationWorker] = set()
        self._primary_video: int | None = None  # the video track whose keyframes count
        # The Tags of the commonest messages (legacy tags are shared objects): an audio
        # frame, an inter frame of the primary video track, when no probe waits for them
        # they need nothing but the cache and the frame count.
        self._plain_audio: Tag | None = None
        self._plain_inter: Tag | None = None
        self.has_video = False
        # The newest keyframe of the primary video track, for thumbnails (agent.thumbnails).
        self._keyframe: MediaMessage | None = None
        self._slate_facts = IngestFacts(None)  # what feed_slate() tells, never reported
        for destination in destinations:
            self._add_worker(destination)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every destination connecting."""
        self._started = True
        for worker in self.workers.values():
            worker.start()
        self._live = tuple(self.workers.values())
        self._release_start()  # no destination: nobody to keep the start for
        self._check_closed()

    def end(self, reason: str) -> None:
        """The publish is over (ended, failed, refused later, kicked): every destination
        sends what it has queued, unpublishes and closes; none retries."""
        if self.ended:
            return
        self.ended = True
        log.debug("%s: relay ending (%s)", self.label, reason)
        for worker in (*self.workers.values(), *self.retired):
            worker.finish()
        self._check_closed()

    def stop(self) -> None:
        """Close every destination now (shutdown after the drain deadline)."""
        self.ended = True
        for worker in (*self.workers.values(), *self.retired):
            worker.stop()
        self._check_closed()

    def new_source(self, slate: bool = False) -> None:
        """Another source feeds this relay from its next message on (agent.broadcast: a
        publisher back on a new connection, a backup, the slate). Destinations connected
        now go on: the new source's own `onMetaData` and sequence headers reach them
        before its media (the timeline continues the timestamps). What a destination
        that (re)connects later starts with must be the new source's too: the old one's
        sequence headers, GOP and newest keyframe are forgotten, and for a publisher its
        metadata and track facts too. The slate (`slate`) has neither: the publisher's
        `onMetaData` stays for destinations that reconnect while it plays, and the
        heartbeat's facts stay the publisher's (the slate's are not counted:
        `feed_slate`)."""
        self._configuration.clear()
        self._cache.clear()
        self._cache_bytes = 0
        self._cache_keyframe = False
        self._plain_audio = self._plain_inter = None
        self._primary_video = None
        self._keyframe = None
        if slate:
            return
        self._metadata = None
        unclassified = self.facts.unclassified  # a total over the broadcast
        self.facts = IngestFacts(self._prober)
        self.facts.unclassified = unclassified

    @property
    def done(self) -> bool:
        """Ended, and every destination has closed."""
        return self._closed.is_set()

    async def wait_closed(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until every destination has closed; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    def apply_destinations(self, destinations: list[Destination]) -> None:
        """Bring the destinations in line with rig's list, touching only what changed:
        removed ones drain and close, new ones start from the latest keyframe, changed
        ones (new key or URL) are restarted. The others are not interrupted."""
        if self.ended:
            return
        wanted = {d.id: d for d in destinations}
        for dest_id, worker in list(self.workers.items()):
            if wanted.get(dest_id) != worker.destination:
                log.info("%s: destination removed or changed", worker.label)
                del self.workers[dest_id]
                self.retired.append(worker)
                worker.finish()
        for dest_id, destination in wanted.items():
            if dest_id not in self.workers:
                worker = self._add_worker(destination)
                # It joins a live stream: it starts at the newest keyframe, as a
                # reconnection does; the stream from its start is for the destinations
                # the publish began with (docs/agent.md, "Conformance").
                self._connected_once.add(worker)
                if self._started:
                    worker.start()
        self._live = tuple(self.workers.values())
        self._release_start()  # a destination changed or removed may have held it

    # ------------------------------------------------------------------ the media path

    def feed(self, messages: list[Message], now: float | None = None) -> None:
        """Relay the messages of one read from the publisher, in order (`now`: the
        monotonic clock, for the timeline)."""
        # (Compiled, a method bound to a local would be called through the interpreter:
        # direct calls are C calls.)
        batch: list[MediaMessage] = []
        timeline = self.timeline
        if now is None:
            now = time.monotonic()
        for message in messages:
            tag = classify(message.type_id, message.payload)
            kind = tag.kind
            if kind is Kind.UNKNOWN and tag.media == DATA:
                # Not script data at all (no handler name): nginx-rtmp drops a client
                # whose data message its AMF reader cannot read, so forwarding this
                # would cut every nginx-rtmp destination. Counted, not sent.
                self.facts.unclassified += 1
                continue
            type_id = message.type_id
            timestamp = timeline.place(type_id, message.timestamp, now)
            media = MediaMessage(type_id, timestamp, message.payload, kind)
            batch.append(media)
            # The common messages, in short (see _plain_tags).
            if tag is self._plain_audio:
                self._cache_add(media)
            elif tag is self._plain_inter:
                self.facts.count_frame(media.timestamp)
                self._cache_add(media)
            else:
                self._note(tag, media)
        if self._since_start is not None and batch:
            self._keep_from_start(batch)
        if batch:
            chunked = Chunked(batch)
            for worker in self._live:
                worker.send(chunked)

    def feed_slate(self, messages: list[Message], now: float) -> None:
        """Relay the slate's messages: like a publisher's, but they are not the ingest
        (the heartbeat's facts and the media engine's probes are not about them)."""
        facts, self.facts = self.facts, self._slate_facts
        try:
            self.feed(messages, now)
        finally:
            self.facts = facts
            self._keyframe = None  # no thumbnail of the slate: it is not the ingest

    def configuration(self) -> list[Message]:
        """The current source's onMetaData and track configuration, in the order they
        came (for agent.standby, when that source stops feeding)."""
        head = [] if self._metadata is None else [self._metadata]
        head += [m for _, m in sorted(self._configuration.values(), key=lambda item: item[0])]
        unique = list({id(m): m for m in head}.values())
        return [Message(m.type_id, 1, m.timestamp, m.body) for m in unique]

    def slate_facts(self) -> tuple[VideoFacts | None, AudioFacts | None]:
        """What the slate must match: the ingest's tracks, as probed and measured."""
        return self.facts.slate_facts(self._primary_video)

    def facts_known(self) -> bool:
        """Whether the slate facts are complete (every track probed, the frame rate
        measured)."""
        return self.facts.probed(self._primary_video)

    def start_messages(self, worker: DestinationWorker) -> tuple[list[MediaMessage], bool]:
        """What a destination's new connection starts with (StreamStart)."""
        configuration = sorted(self._configuration.values(), key=lambda item: item[0])
        head: list[MediaMessage] = [] if self._metadata is None else [self._metadata]
        seen: set[int] = set()
        for _, message in configuration:
            if id(message) not in seen:  # one multitrack message may configure many tracks
                seen.add(id(message))
                head.append(message)
        first = worker not in self._connected_once
        self._connected_once.add(worker)
        if first and self._since_start is not None:
            # The stream exactly as the publisher sent it, from its first message.
            replay = list(self._since_start)
            self._release_start()
            return replay, False
        media = list(self._cache)
        self._release_start()
        # Video frames before the first keyframe cannot be decoded: left out, and the
        # destination's video waits for the next keyframe if there is none.
        key = next((i for i, m in enumerate(media) if m.starts_gop), None)
        if key is None:
            return head + [m for m in media if not m.is_video_frame], self.has_video
        return head + [m for m in media[:key] if not m.is_video_frame] + media[key:], False

    # ------------------------------------------------------------------ heartbeat

    def ingest_facts(self, final: bool = False) -> dict[str, object]:
        """What the classifier, the media engine and the measurements say about the
        ingest since the last call (docs/agent-protocol.md#heartbeat-health, `ingest` without the
        byte counts); `final`: the frame rate over the whole publish (for its session's report)."""
        return self.facts.report(self._primary_video, final)

    def latest_keyframe(self) -> Keyframe | None:
        """The newest keyframe of the primary video track, with its codec and sequence
        header, for a thumbnail (None: no video yet, or none since a new header)."""
        media = self._keyframe
        if media is None:
            return None
        track = next(
            (t for t in classify(VIDEO, media.body).tracks if t.id == self._primary_video), None
        )
        codec, header = self.facts.configuration(VIDEO, track.id) if track else (None, None)
        if track is None or codec is None:
            return None
        return Keyframe(media, codec, header, media.body[track.start : track.end])

    def destination_health(self, now: float) -> list[dict[str, object]]:
        """Every destination's state and figures, for the heartbeat. A destination
        changed (new key or URL) or removed while live counts what its earlier
        connections sent too: rig merges a session's destinations by id, so this keeps
        the whole broadcast in its report."""
        reports: dict[Any, dict[str, Any]] = {
            w.destination.id: w.health(now) for w in self.workers.values()
        }
        for worker in self.retired:
            earlier: dict[str, Any] = worker.health(now)
            report = reports.setdefault(worker.destination.id, earlier)
            if report is not earlier:
                report["bytesSent"] = worker.bytes_sent + report["bytesSent"]
                report["reconnects"] = worker.reconnects + report["reconnects"]
                report["droppedPackets"] = worker.dropped_packets + report["droppedPackets"]
                report["liveSeconds"] = round(worker.live_seconds(now) + report["liveSeconds"], 1)
        return list(reports.values())

    # ------------------------------------------------------------------ internals

    def _note(self, tag: Tag, media: MediaMessage) -> None:
        """Everything but a plain audio frame: keep configuration, feed the GOP cache,
        measure, probe."""
        kind = tag.kind
        if kind in _CONFIGURATION:
            if tag.media == VIDEO or tag.media == AUDIO:
                self._configure(tag, media)
            else:
                self._metadata = media  # onMetaData
            return
        if kind is Kind.UNKNOWN:
            self.facts.unclassified += 1
        elif kind is Kind.KEYFRAME or kind is Kind.FRAME:
            self._frame(tag, media)
            if kind is Kind.KEYFRAME and self._is_primary(tag):
                self._keyframe = media
                self._cache.clear()
                self._cache_bytes = 0
                self._cache_keyframe = True
        self._cache_add(media)

    def _configure(self, tag: Tag, media: MediaMessage) -> None:
        self._arrivals += 1
        self._plain_audio = self._plain_inter = None  # a probe may wait for a frame now
        for track in tag.tracks:
            self._configuration[(tag.media, track.id, tag.kind)] = (self._arrivals, media)
        if tag.kind is Kind.SEQUENCE_HEADER:
            self.facts.sequence_header(tag, media.body)
            if tag.media == VIDEO:
                self.has_video = True
                self._keyframe = None  # it may not decode with the new header

    def _frame(self, tag: Tag, media: MediaMessage) -> None:
        """Count video frames; let the media engine probe; take the short path next
        time when this tag needs nothing more."""
        primary = False
        if tag.media == VIDEO:
            self.has_video = True
            primary = self._is_primary(tag)
            if primary:
                self.facts.count_frame(media.timestamp, tag.kind is Kind.KEYFRAME)
        settled = self.facts.frame(tag, media.body)
        if settled and tag.kind is Kind.FRAME and len(tag.tracks) == 1:
            if tag.media == AUDIO:
                self._plain_audio = tag
            elif primary:
                self._plain_inter = tag

    def _is_primary(self, tag: Tag) -> bool:
        """The first video track seen is the one whose keyframes start GOPs."""
        if tag.media != VIDEO or not tag.tracks:
            return False
        if self._primary_video is None:
            self._primary_video = tag.tracks[0].id
        return any(track.id == self._primary_video for track in tag.tracks)

    def _release_start(self) -> None:
        """Forget what came since the start once every destination connected once."""
        waiting = [w for w in self.workers.values() if not w.done and w not in self._connected_once]
        if not waiting:
            self._since_start = None
            self._since_start_bytes = 0

    def _keep_from_start(self, batch: list[MediaMessage]) -> None:
        since_start = self._since_start
        assert since_start is not None
        since_start.extend(batch)
        self._since_start_bytes += sum(len(m.body) for m in batch)
        if self._first_frame_at is None:
            # The seconds kept are counted from the first coded frame: ffmpeg with
            # -output_ts_offset or -copyts sends onMetaData and the sequence headers at
            # 0 and its media from the offset on.
            first = next((m for m in batch if m.kind in _CODED), None)
            self._first_frame_at = None if first is None else first.timestamp
        first_frame_at = self._first_frame_at
        if self._since_start_bytes > self._cache_max_bytes or (
            first_frame_at is not None
            and since_start[-1].timestamp - first_frame_at > self._cache_max_ms
        ):
            self._since_start = None  # too late: first connections start like the others
            self._since_start_bytes = 0

    def _cache_add(self, media: MediaMessage) -> None:
        cache = self._cache
        cache.append(media)
        self._cache_bytes += len(media.body)
        while cache and (
            self._cache_bytes > self._cache_max_bytes
            or cache[-1].timestamp - cache[0].timestamp > self._cache_max_ms
        ):
            if self._cache_keyframe:
                # A GOP longer than the bound: new destinations wait for the next one.
                cache.clear()
                self._cache_bytes = 0
                self._cache_keyframe = False
            else:
                self._cache_bytes -= len(cache.popleft().body)

    def _add_worker(self, destination: Destination) -> DestinationWorker:
        label = f"{self.label} -> {destination.service} #{destination.id}"
        worker = DestinationWorker(destination, label, self, self._settings, self._worker_done)
        self.workers[destination.id] = worker
        return worker

    def _worker_done(self, worker: DestinationWorker) -> None:
        self._release_start()
        self._check_closed()

    def _check_closed(self) -> None:
        if self.ended and all(w.done for w in (*self.workers.values(), *self.retired)):
            self._closed.set()
