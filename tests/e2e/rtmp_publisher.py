"""A publisher that sends exactly the messages a test gives it (ffmpeg re-muxes what it
reads, so it cannot send a corrupt frame, a cue point or a timestamp jump as such).

It is the sans-I/O `ClientSession` of agent/rtmp over a blocking socket, paced in real
time by the messages' timestamps (jumps do not pause it). It can end with garbage
instead of an unpublish: a publisher that breaks mid-stream.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from agent.flv import FlvTagReader
from agent.rtmp import ClientSession, PublishRefused, PublishStarted
from agent.rtmp.amf0 import encode

Sent = tuple[int, int, bytes]  # (type, timestamp, body)

SET_DATA_FRAME = encode("@setDataFrame")


def flv_messages(path: Path) -> list[Sent]:
    """The tags of an FLV file as a publisher sends them (metadata after @setDataFrame)."""
    out = []
    for type_id, timestamp, body in FlvTagReader(64 * 1024 * 1024).feed(path.read_bytes()):
        out.append((type_id, timestamp, SET_DATA_FRAME + body if type_id == 18 else body))
    return out


def publish(
    port: int,
    key: str,
    messages: list[Sent],
    *,
    garbage: bytes | None = None,
    realtime: bool = True,
) -> None:
    """Publish `messages` to rtmp://127.0.0.1:port/live/key, then unpublish (or send
    `garbage` and close). Raises if the publish is refused."""
    session = ClientSession("live", f"rtmp://127.0.0.1:{port}/live", key)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session.start()
        while not session.publishing:
            sock.sendall(session.data_to_send())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the agent closed the connection before publishing")
            for event in session.receive_data(data):
                if isinstance(event, PublishRefused):
                    raise ConnectionError(f"publish refused: {event.code}")
                assert not isinstance(event, PublishStarted) or session.publishing
        sock.setblocking(False)
        started = time.monotonic()
        base = None
        previous = None
        for type_id, timestamp, body in messages:
            if realtime:
                # Pace by the timestamps; a jump (more than 5 s) is not waited for.
                if base is None or previous is None or abs(timestamp - previous) > 5000:
                    base = timestamp - (time.monotonic() - started) * 1000
                delay = (timestamp - base) / 1000 - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
                previous = timestamp
            session.send_media(type_id, timestamp, body)
            _send(sock, session.data_to_send())
            _drain_input(sock, session)
        if garbage is not None:
            _send(sock, garbage)
            time.sleep(0.2)
            return
        session.unpublish()
        _send(sock, session.data_to_send())
        time.sleep(0.2)


def _send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[sent:]


def _drain_input(sock: socket.socket, session: ClientSession) -> None:
    """Read acks and pings so the agent never waits for us."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionError("the agent closed the connection")
        session.receive_data(data)
        _send(sock, session.data_to_send())
