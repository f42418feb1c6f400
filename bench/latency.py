"""Added latency and time to first video: a real-time publisher and a logging sink.

The publisher is our own sans-I/O `agent.rtmp.ClientSession` over a TCP_NODELAY socket.
It sends the fixture's tags in real time (tag timestamp = send time since the publish
started) and logs `time.monotonic()` just before handing each tag to the socket. The sink
is an RTMP server (`agent.rtmp.ServerSession`) that accepts every publish and logs the
monotonic time of the `recv()` that completed each audio/video message. Packets are
paired by (type, timestamp, SHA-1 of the body), which relays must not change.

A measurement runs two publishers at once from the same process: one straight to the
sink (no relay) and one through the relay under test, whose destination is the sink.
The added latency is the relay path's percentile minus the direct path's, so what both
share (the publisher, the sink, loopback, this Python process) cancels out.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from agent.flv import AUDIO, SCRIPT, VIDEO, add_set_data_frame
from agent.rtmp import (
    ClientSession,
    MediaReceived,
    PublishEnded,
    PublishRefused,
    PublishRequested,
    PublishStarted,
    ServerClosed,
    ServerSession,
)
from bench.flvcheck import is_sequence_header

Key = tuple[int, int, bytes]


def packet_key(type_id: int, timestamp: int, body: bytes) -> Key:
    """What identifies a media packet end to end."""
    return (type_id, timestamp, hashlib.sha1(body, usedforsecurity=False).digest())


# ---------------------------------------------------------------------- the sink


@dataclass
class SinkStream:
    """One publish the sink received."""

    name: str
    app: str
    connected_at: float
    arrivals: dict[Key, float] = field(default_factory=dict)
    first_video: float | None = None
    ended: bool = False


class Sink:
    """An RTMP server on 127.0.0.1 that accepts any publish and logs media arrival times."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.streams: dict[str, SinkStream] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="sink", daemon=True)
        self._thread.start()

    def stream(self, name: str) -> SinkStream | None:
        """The publish named `name`, if it arrived."""
        with self._lock:
            return self.streams.get(name)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
            conn.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        session = ServerSession()
        connected = time.monotonic()
        current: SinkStream | None = None
        try:
            while not session.closed:
                data = conn.recv(1 << 18)
                now = time.monotonic()
                if not data:
                    break
                for event in session.receive_data(data):
                    if isinstance(event, MediaReceived):
                        message = event.message
                        if current is None or message.type_id not in (AUDIO, VIDEO):
                            continue
                        payload = bytes(message.payload)
                        key = packet_key(message.type_id, message.timestamp, payload)
                        current.arrivals.setdefault(key, now)
                        if (
                            current.first_video is None
                            and message.type_id == VIDEO
                            and not is_sequence_header(VIDEO, payload)
                        ):
                            current.first_video = now
                    elif isinstance(event, PublishRequested):
                        session.accept_publish()
                        current = SinkStream(event.stream_name, session.app or "", connected)
                        with self._lock:
                            self.streams[event.stream_name] = current
                    elif isinstance(event, PublishEnded) and current is not None:
                        current.ended = True
                out = session.data_to_send()
                if out:
                    conn.sendall(out)
        except (OSError, ValueError):
            pass
        finally:
            if current is not None:
                current.ended = True
            conn.close()


# ---------------------------------------------------------------------- the publisher


@dataclass
class PublishLog:
    """What a real-time publisher did."""

    connect_at: float = 0.0  # just before the TCP connect
    started_at: float = 0.0  # NetStream.Publish.Start received; media clock zero
    sent: dict[Key, float] = field(default_factory=dict)
    error: str | None = None


class RealtimePublisher(threading.Thread):
    """Publishes `tags` to rtmp://127.0.0.1:port/app/name in real time, logging send times."""

    def __init__(
        self,
        port: int,
        app: str,
        name: str,
        tags: list[tuple[int, int, bytes]],
        seconds: float,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(name=f"publisher-{app}", daemon=True)
        self.port, self.app, self.stream_name = port, app, name
        self.tags = [t for t in tags if t[1] <= seconds * 1000]
        self.timeout = timeout
        self.log = PublishLog()

    def run(self) -> None:
        try:
            self._publish()
        except (OSError, RuntimeError) as exc:
            self.log.error = f"{type(exc).__name__}: {exc}"

    def _publish(self) -> None:
        log = self.log
        log.connect_at = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tc_url = f"rtmp://127.0.0.1:{self.port}/{self.app}"
        session = ClientSession(self.app, tc_url, self.stream_name)
        session.start()
        try:
            while not session.publishing:
                sock.sendall(session.data_to_send())
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("connection closed before the publish started")
                for event in session.receive_data(data):
                    if isinstance(event, PublishRefused | ServerClosed):
                        raise RuntimeError(f"publish refused: {event}")
                    if isinstance(event, PublishStarted):
                        break
            sock.sendall(session.data_to_send())
            log.started_at = start = time.monotonic()
            for type_id, timestamp, body in self.tags:
                delay = start + timestamp / 1000 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                payload = add_set_data_frame(body) if type_id == SCRIPT else body
                session.send_media(type_id, timestamp, payload)
                data = session.data_to_send()
                now = time.monotonic()
                if type_id in (AUDIO, VIDEO):
                    log.sent.setdefault(packet_key(type_id, timestamp, body), now)
                sock.sendall(data)
                while select.select([sock], [], [], 0)[0]:  # acks, pings
                    incoming = sock.recv(65536)
                    if not incoming:
                        raise RuntimeError("relay closed the connection")
                    session.receive_data(incoming)
                    sock.sendall(session.data_to_send())
            session.unpublish()
            sock.sendall(session.data_to_send())
            sock.shutdown(socket.SHUT_WR)
        finally:
            sock.close()


# ---------------------------------------------------------------------- figures


@dataclass
class PathFigures:
    """Latency of one path (publisher to sink) and its time to first video."""

    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    packets: int = 0
    unpaired: int = 0
    first_video_ms: float | None = None
    error: str | None = None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def figures(log: PublishLog, stream: SinkStream | None, skip_seconds: float) -> PathFigures:
    """Pair a publisher's sends with the sink's arrivals; skip the first `skip_seconds`."""
    if log.error or stream is None:
        return PathFigures(error=log.error or "nothing arrived at the sink")
    cutoff = log.started_at + skip_seconds
    latencies = []
    unpaired = 0
    for key, sent_at in log.sent.items():
        if sent_at < cutoff:
            continue
        arrived = stream.arrivals.get(key)
        if arrived is None:
            unpaired += 1
        else:
            latencies.append((arrived - sent_at) * 1000)
    latencies.sort()
    result = PathFigures(packets=len(latencies), unpaired=unpaired)
    if latencies:
        result.p50_ms = percentile(latencies, 50)
        result.p99_ms = percentile(latencies, 99)
        result.max_ms = latencies[-1]
    if stream.first_video is not None:
        result.first_video_ms = (stream.first_video - log.connect_at) * 1000
    return result


@dataclass
class LatencyResult:
    """A relay path and the direct path, measured at the same time."""

    relay: PathFigures
    direct: PathFigures

    def added(self, name: str) -> float | None:
        """Relay minus direct for `p50_ms`, `p99_ms` or `max_ms`."""
        a, b = getattr(self.relay, name), getattr(self.direct, name)
        return None if a is None or b is None else a - b


def measure(
    sink: Sink,
    tags: list[tuple[int, int, bytes]],
    seconds: float,
    relay_port: int,
    relay_app: str,
    relay_name: str,
    sink_name: str,
    direct_name: str,
    skip_seconds: float = 1.0,
) -> LatencyResult:
    """Publish through the relay (arriving at the sink as `sink_name`) and straight to the
    sink (as `direct_name`) at once, for `seconds` of media."""
    relayed = RealtimePublisher(relay_port, relay_app, relay_name, tags, seconds)
    direct = RealtimePublisher(sink.port, "direct", direct_name, tags, seconds)
    relayed.start()
    direct.start()
    for publisher in (relayed, direct):
        publisher.join(seconds + 30)
    # Let the last packets arrive and the relay end its publish at the sink.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        stream = sink.stream(sink_name)
        if stream is not None and stream.ended:
            break
        time.sleep(0.05)
    return LatencyResult(
        relay=figures(relayed.log, sink.stream(sink_name), skip_seconds),
        direct=figures(direct.log, sink.stream(direct_name), skip_seconds),
    )
