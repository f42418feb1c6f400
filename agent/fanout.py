"""The fan-out of one ingest: demuxed once by PyAV, relayed to every destination.

The RTMP server hands each audio/video/data message to `Relay.feed`, which wraps it
as an FLV tag and queues it for the demux thread (cheap, never blocks the event
loop). The demux thread runs PyAV's FLV demuxer over that byte stream, muxes each
packet once (`agent.remux`: the resulting bytes are the same for every destination)
and appends the messages to the bounded queue of every destination worker; only the
workers talk to the network, each in its own thread.
"""

import logging
import queue
import threading

import av

from agent.destination import Destination, DestinationWorker, EgressSettings, InputStreams
from agent.flv import AUDIO, FLV_HEADER, SCRIPT, VIDEO, flv_tag, strip_set_data_frame
from agent.remux import Remuxer
from agent.rtmp import amf0

log = logging.getLogger(__name__)

ON_METADATA = amf0.encode("onMetaData")

# Open the demuxer as soon as the codec configuration is in: do not buffer to probe.
DEMUXER_OPTIONS = {"probesize": "32", "analyzeduration": "0"}


class IngestTooSlow(Exception):
    """The demuxer fell too far behind the publisher (the host is overloaded)."""


class _TagStream:
    """File-like reader over the queued FLV tags, for PyAV's demuxer (demux thread only)."""

    def __init__(self, source: "queue.SimpleQueue[bytes | None]") -> None:
        self._source = source
        self._buffer = b""
        self._offset = 0  # into _buffer: a large tag is read in pieces without re-copying
        self._ended = False
        self.consumed = 0

    def read(self, size: int) -> bytes:
        if self._offset >= len(self._buffer) and not self._ended:
            item = self._source.get()
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
        self.audio_packets = 0
        self._tags: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._reader = _TagStream(self._tags)
        self._fed = 0
        self._pending: list[bytes] = []
        self._max_pending = max_pending_bytes
        self._thread = threading.Thread(target=self._demux, name=f"demux-{label}", daemon=True)
        self.packets_in = 0
        self._started = False

    def start(self) -> None:
        """Start every destination connecting, and the demuxer."""
        self._started = True
        self._put(FLV_HEADER)
        for worker in self.workers.values():
            worker.start()
        self._thread.start()

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
        """Hand what `feed` gathered to the demuxer in one piece: one wake-up of the demux
        thread per socket read instead of one per message."""
        if self._pending:
            self._put(b"".join(self._pending))
            self._pending.clear()

    def finish(self) -> None:
        """The publisher stopped: let every destination drain and close cleanly."""
        self.flush()
        self._tags.put(None)

    def stop(self) -> None:
        """Stop every destination now (after the drain deadline on shutdown)."""
        self._tags.put(None)
        for worker in [*self.workers.values(), *self.retired]:
            worker.stop()

    @property
    def done(self) -> bool:
        """The demuxer and every destination have ended."""
        workers = [*self.workers.values(), *self.retired]
        threads_alive = self._thread.is_alive() or any(w.alive for w in workers)
        return self._started and not threads_alive

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the demuxer and every worker; True if all ended."""
        self._thread.join(timeout)
        workers = [*self.workers.values(), *self.retired]
        return all(worker.join(timeout) for worker in workers) and not self._thread.is_alive()

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
        worker = DestinationWorker(destination, label, self.inputs, self._settings)
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
                self.packets_in += 1
                if messages[-1].type_id == VIDEO:
                    self.video_packets += 1
                else:
                    self.audio_packets += 1
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
