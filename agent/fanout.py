"""The fan-out of one ingest: demuxed once by PyAV, muxed once, relayed to every destination.

The RTMP server hands each audio/video/data message to `Relay.feed`, which wraps it
as an FLV tag and queues it for the ingest's relay thread (cheap, never blocks the
event loop). The relay thread runs PyAV's FLV demuxer over that byte stream, muxes
each packet once (`agent.remux`: the resulting bytes are the same for every
destination), appends the messages to every destination's bounded queue and at once
moves them to each connected destination's non-blocking socket.

One thread per ingest does all of it: no hand-off between threads per packet, which
measured as the main cost of a thread per destination (futex wake-ups and GIL
hand-offs on every packet). While the demuxer waits for input, the same thread
poll()s the destinations' sockets (acks, pings, a socket writable again) and a wake-up
socket the event loop writes to when it queues tags or a destination connects.
Connecting to a destination is blocking and runs in that destination's connector
thread (`agent.destination`), so a slow destination never holds the ingest.
"""

import asyncio
import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable

import av

from agent.destination import Destination, DestinationWorker, EgressSettings, InputStreams
from agent.flv import AUDIO, FLV_HEADER, SCRIPT, VIDEO, flv_tag, strip_set_data_frame
from agent.ingest_reader import IngestEnded, IngestReader
from agent.remux import Remuxer
from agent.rtmp import ServerSession, amf0

log = logging.getLogger(__name__)

ON_METADATA = amf0.encode("onMetaData")
# The relay thread's longest sleep: destinations' write deadlines are checked this often.
IDLE_WAIT_MS = 250

# Open the demuxer as soon as the codec configuration is in: do not buffer to probe.
DEMUXER_OPTIONS = {"probesize": "32", "analyzeduration": "0"}


class IngestTooSlow(Exception):
    """The demuxer fell too far behind the publisher (the host is overloaded)."""


class _TagStream:
    """File-like reader over the queued FLV tags, for PyAV's demuxer (demux thread only)."""

    def __init__(
        self,
        source: "queue.SimpleQueue[bytes | None]",
        drained: Callable[[], None],
        wait: Callable[[], None],
    ) -> None:
        self._source = source
        # Called when every tag read so far has been demuxed: the demuxer asks for more
        # only once it has returned the packets of whole tags it holds.
        self._drained = drained
        self._wait = wait  # blocks until woken, serving the destinations meanwhile
        self._buffer = b""
        self._offset = 0  # into _buffer: a large tag is read in pieces without re-copying
        self._ended = False
        self.consumed = 0

    def read(self, size: int) -> bytes:
        if self._offset >= len(self._buffer) and not self._ended:
            self._drained()
            while self._source.empty():
                self._wait()
            item = self._source.get_nowait()
            if item is None:
                self._ended = True
                self._buffer, self._offset = b"", 0
            else:
                self._buffer, self._offset = item, 0
        start = self._offset
        if start == 0 and size >= len(self._buffer):
            out = self._buffer  # the common case: a whole tag, no copy
        else:
            out = self._buffer[start : start + size]
        self._offset = start + len(out)
        self.consumed += len(out)
        return out


class Relay:
    """One live ingest and its destination workers."""

    def __init__(
        self,
        label: str,
        destinations: list[Destination],
        settings: EgressSettings,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.label = label
        self.inputs = InputStreams()
        self._settings = settings
        self.workers: dict[int, DestinationWorker] = {}
        self.retired: list[DestinationWorker] = []  # removed while live, still draining
        for destination in destinations:
            self._add_worker(destination)
        # What the demux thread appends to: replaced whole, never mutated, so the demux
        # thread can iterate it while the event loop adds or removes destinations.
        self._targets: tuple[DestinationWorker, ...] = tuple(self.workers.values())
        self.ingest_info: dict[str, object] = {}
        self.video_packets = 0
        self._tags: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._reader = _TagStream(self._tags, self._send_demuxed, self._wait)
        self._fed = 0
        self._pending: list[bytes] = []
        self._max_pending = max_pending_bytes
        # Written by the event loop and connectors, read by the relay thread in poll().
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._wake_fd = self._wake_reader.fileno()
        # The relay thread's poll object and what it was built for (rebuilt on change).
        self._poller = select.poll()
        self._polled: list[tuple[int, int]] = []
        self._wake_scheduled = False
        # The publisher's connection, once handed over, and who to tell when it ends.
        self._handover: tuple[IngestReader, bytes, Callable[[str], None]] | None = None
        self._ingest: IngestReader | None = None
        self._on_ingest_end: Callable[[str], None] | None = None
        self._kicked = False
        self._kick_reason = "kicked"
        self._next_full_serve = 0.0  # relay thread: when every destination is served next
        self._handed_over = False  # set on the event loop by attach_ingest
        self._thread = threading.Thread(target=self._run, name=f"relay-{label}", daemon=True)
        self._started = False

    def start(self) -> None:
        """Start every destination connecting, and the demuxer."""
        self._started = True
        self._put(FLV_HEADER)
        for worker in self.workers.values():
            worker.start()
        self._thread.start()

    def attach_ingest(
        self,
        sock: socket.socket,
        session: ServerSession,
        buffered: bytes,
        idle_timeout: float,
        on_end: Callable[[str], None],
    ) -> None:
        """Hand the publisher's connection to the relay thread (called on the event loop
        once the publish is accepted): from now on the relay thread reads it itself.
        `on_end(reason)` is called from the relay thread when the publish is over."""
        self._queue_fed()
        self._handed_over = True
        reader = IngestReader(sock, session, self.feed, idle_timeout)
        self._handover = (reader, buffered, on_end)
        self._wake()

    def kick(self, reason: str = "kicked") -> None:
        """End the publish now: rig revoked it ("kicked"), or the agent shuts down."""
        self._kick_reason = reason
        self._kicked = True
        self._wake()

    def feed(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one RTMP media message (called on the event loop; does not block)."""
        if type_id == SCRIPT:
            payload = strip_set_data_frame(payload)
            if payload.startswith(ON_METADATA):
                self.inputs.script = payload  # replayed to every destination connection
        elif type_id not in (AUDIO, VIDEO):
            return
        if self._fed - self._reader.consumed > self._max_pending:
            raise IngestTooSlow(
                f"{self.label}: demuxer is more than {self._max_pending} bytes behind"
            )
        self._pending.append(flv_tag(type_id, timestamp, payload))

    def flush(self) -> None:
        """Hand what `feed` gathered on the event loop (before the hand-over) to the
        demuxer: one wake-up of the relay thread per event-loop round, not per message."""
        if self._queue_fed() and not self._wake_scheduled:
            # Wake the relay thread once this round of the event loop is over (other
            # ingests' reads included): it then finds the GIL free instead of waking
            # only to wait for it.
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_wake)

    def _scheduled_wake(self) -> None:
        self._wake_scheduled = False
        self._wake()

    def finish(self) -> None:
        """The publisher stopped: let every destination drain and close cleanly."""
        if self._handed_over:
            self.kick()  # the relay thread reads the publisher: it ends the input itself
            return
        self.flush()
        self._tags.put(None)
        self._wake()

    def stop(self) -> None:
        """Stop every destination now (after the drain deadline on shutdown)."""
        self._kicked = True
        self._tags.put(None)
        for worker in [*self.workers.values(), *self.retired]:
            worker.stop()
        self._wake()

    @property
    def done(self) -> bool:
        """The relay thread and every destination have ended."""
        workers = [*self.workers.values(), *self.retired]
        threads_alive = self._thread.is_alive() or any(w.alive for w in workers)
        return self._started and not threads_alive

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the relay thread (which waits for every destination
        to drain) and the connectors; True if all ended."""
        self._thread.join(timeout)
        workers = [*self.workers.values(), *self.retired]
        return all(worker.join(0.5) for worker in workers) and not self._thread.is_alive()

    def apply_destinations(self, destinations: list[Destination]) -> None:
        """Bring the live destinations in line with rig's list, touching only what changed:
        removed ones drain and close, new ones start at the next keyframe, changed ones
        (new key or URL) are restarted. The ingest and the others are not interrupted."""
        wanted = {d.id: d for d in destinations}
        for dest_id, worker in list(self.workers.items()):
            if wanted.get(dest_id) != worker.destination:
                log.info("%s: destination removed or changed", worker.label)
                worker.finish()
                self.retired.append(worker)
                del self.workers[dest_id]
        for dest_id, destination in wanted.items():
            if dest_id not in self.workers:
                worker = self._add_worker(destination)
                if self._started:
                    worker.start()
        self._targets = tuple(self.workers.values())

    def _add_worker(self, destination: Destination) -> DestinationWorker:
        label = f"{self.label} -> {destination.service} #{destination.id}"
        worker = DestinationWorker(destination, label, self.inputs, self._settings, self._wake)
        self.workers[destination.id] = worker
        return worker

    def _describe(self, streams: list) -> None:
        """Codec and picture facts of the ingest, for health reports."""
        info: dict[str, object] = {}
        for stream in streams:
            if stream.type == "video":
                info["videoCodec"] = stream.codec_context.name
                info["width"] = stream.codec_context.width
                info["height"] = stream.codec_context.height
            elif stream.type == "audio":
                info["audioCodec"] = stream.codec_context.name
                info["audioSampleRate"] = stream.codec_context.sample_rate
        self.ingest_info = info

    def _put(self, data: bytes) -> None:
        self._fed += len(data)
        self._tags.put(data)
        self._wake()

    def _wake(self) -> None:
        """Wake the relay thread (from the event loop or a connector thread)."""
        # BlockingIOError: plenty of wake-ups already pending; OSError: the relay
        # thread has ended and closed its sockets.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _active(self) -> tuple[DestinationWorker, ...]:
        """Every destination the relay thread still serves: live ones and draining ones."""
        return (*self._targets, *(w for w in tuple(self.retired) if not w.done))

    def _wait(self) -> None:
        """Sleep until woken or a socket is ready: read the publisher (once handed over),
        serve the destinations."""
        if self._handover is not None:
            self._take_over()
        ingest = self._ingest
        by_fd: dict[int, DestinationWorker] = {}
        wanted = [(self._wake_fd, select.POLLIN)]
        if ingest is not None:
            mask = select.POLLIN | (select.POLLOUT if ingest.wants_write else 0)
            wanted.append((ingest.fd, mask))
        workers = self._active()
        for worker in workers:
            fd = worker.fileno()
            if fd is not None and fd >= 0:
                by_fd[fd] = worker
                wanted.append((fd, select.POLLIN | (select.POLLOUT if worker.wants_write else 0)))
        if wanted != self._polled:
            # The set of sockets or what we wait for changed (rare): a new poll object.
            self._poller = poller = select.poll()
            for fd, mask in wanted:
                poller.register(fd, mask)
            self._polled = wanted
        ready: list[DestinationWorker] = []
        serve_all = False
        for fd, events in self._poller.poll(IDLE_WAIT_MS):
            worker = by_fd.get(fd)
            if worker is not None:
                if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    worker.on_readable()
                ready.append(worker)
            elif ingest is not None and fd == ingest.fd:
                self._read_ingest(ingest, events)
            else:
                self._drain_wake_ups()
                serve_all = True  # a connection handed over, a destination finished...
        now = time.monotonic()
        if self._ingest is not None:
            if self._kicked:
                self._end_ingest(self._kick_reason)
            else:
                try:
                    self._ingest.check_idle(now)
                except IngestEnded as exc:
                    self._end_ingest(str(exc))
        # Destinations are served after every demuxed batch (`_send_demuxed`); here only
        # those whose socket is ready, unless woken for them or a deadline check is due.
        if serve_all or now >= self._next_full_serve:
            self._next_full_serve = now + IDLE_WAIT_MS / 1000
            self._serve(workers)
        elif ready:
            self._serve(tuple(ready))

    def _take_over(self) -> None:
        assert self._handover is not None
        reader, buffered, on_end = self._handover
        self._handover = None
        self._ingest, self._on_ingest_end = reader, on_end
        try:
            reader.feed(buffered)
        except IngestEnded as exc:
            self._end_ingest(str(exc))
            return
        self._queue_fed()

    def _read_ingest(self, ingest: IngestReader, events: int) -> None:
        try:
            if events & select.POLLOUT:
                ingest.on_writable()
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                ingest.on_readable()
        except IngestEnded as exc:
            self._end_ingest(str(exc))
            return
        self._queue_fed()

    def _queue_fed(self) -> bool:
        """Hand the tags `feed` gathered to the demuxer in one piece; True if there were
        any. The caller wakes the relay thread if it is not the relay thread itself."""
        if not self._pending:
            return False
        data = b"".join(self._pending)
        self._pending.clear()
        self._fed += len(data)
        self._tags.put(data)
        return True

    def _end_ingest(self, reason: str) -> None:
        """The publish is over: the demuxer gets what is left then its end; the
        connection closes; the event loop is told why."""
        ingest, on_end = self._ingest, self._on_ingest_end
        self._ingest = self._on_ingest_end = None
        self._queue_fed()
        self._tags.put(None)
        if ingest is not None:
            ingest.close()
        if on_end is not None:
            on_end(reason)

    def _send_demuxed(self) -> None:
        """Everything that arrived together has been demuxed: send it now, in one write
        per destination (not one per packet: fewer syscalls and GIL hand-offs, and no
        later than a packet-by-packet send would finish)."""
        self._serve(self._targets)

    def _serve(self, workers: tuple[DestinationWorker, ...]) -> None:
        now = time.monotonic()
        for worker in workers:
            worker.service(now)

    def _drain_wake_ups(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: all read
            while self._wake_reader.recv(4096):
                pass

    def _run(self) -> None:
        """The relay thread: demux and relay, then let the destinations drain."""
        try:
            self._demux()
            if self._handover is not None:
                self._take_over()
            if self._ingest is not None:  # stopped, or the demuxer failed
                failed = "the ingest could not be demuxed"
                self._end_ingest(self._kick_reason if self._kicked else failed)
            while any(worker.alive for worker in self._active()):
                self._wait()
        finally:
            self._wake_reader.close()
            self._wake_writer.close()

    def _demux(self) -> None:
        try:
            container = av.open(self._reader, "r", format="flv", options=DEMUXER_OPTIONS)
        except (av.FFmpegError, ValueError) as exc:
            log.error("%s: cannot read the ingest: %s", self.label, exc)
            self.inputs.publish(None)
            self._end(None)
            return
        remuxer = None
        try:
            streams = [s for s in container.streams if s.type in ("audio", "video")]
            self._describe(streams)
            remuxer = Remuxer(streams)
            self.inputs.publish(remuxer)
            for packet in container.demux():
                messages = remuxer.mux(packet)
                if not messages:
                    continue  # demuxer flush packets, script data, other tracks
                if len(messages) > 1:
                    self.inputs.headers = remuxer.headers()  # new codec configuration
                if messages[-1].type_id == VIDEO:
                    self.video_packets += 1  # frames, for the heartbeat's frame rate
                for worker in self._targets:
                    worker.queue.put_many(messages)
        except (av.FFmpegError, ValueError, IndexError) as exc:
            # IndexError: PyAV on a stream the FLV demuxer adds mid-publish (a second
            # onMetaData can do it); the destinations still end cleanly below.
            log.error("%s: ingest demuxing failed: %s", self.label, exc)
        finally:
            container.close()
            self._end(remuxer)

    def _end(self, remuxer: Remuxer | None) -> None:
        trailer = remuxer.close() if remuxer is not None else []
        for worker in self._targets:
            if trailer:
                worker.queue.put_many(trailer)
            worker.finish()
        self._serve(self._targets)
