"""An RTMP destination in the test's own event loop: accepts publishes and records every
audio, video and data message exactly as received (type, timestamp, body), per
connection. It can misbehave as real servers do: refuse a chunk size, stop reading,
drop the connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

from agent.rtmp import MediaReceived, ProtocolError, PublishEnded, PublishRequested, ServerSession
from agent.rtmp.chunk import MAX_CHUNK_SIZE

Recorded = tuple[int, int, bytes]  # (type, timestamp, body)


@dataclass
class Connection:
    """One connection to the receiver and what it published."""

    name: str | None = None
    messages: list[Recorded] = field(default_factory=list)
    unpublished: bool = False
    closed_at: float | None = None  # time.monotonic() when the connection ended
    error: str | None = None
    writer: asyncio.StreamWriter | None = None
    bytes: int = 0  # every byte read, handshake included


class Receiver:
    """`async with Receiver() as receiver:` then publish to `receiver.url(key)`."""

    def __init__(
        self, max_chunk_size: int = MAX_CHUNK_SIZE, stall: bool = False, port: int = 0
    ) -> None:
        self.port = port
        self.max_chunk_size = max_chunk_size
        self.stall = stall  # stop reading once a publish started
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Receiver:
        listener = socket.socket()
        if self.stall:  # a small receive buffer: the sender's writes back up quickly
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._serve, sock=listener)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            if connection.writer is not None:
                connection.writer.close()
        await self._server.wait_closed()

    def url(self, key: str, app: str = "live2") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{key}"

    @property
    def publishes(self) -> list[Connection]:
        """Connections that published, in order."""
        return [c for c in self.connections if c.name is not None]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        """Until `predicate()` is true (checked whenever something arrives)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    def drop(self) -> None:
        """Abort every connection (a destination that crashed)."""
        for connection in self.connections:
            if connection.writer is not None:
                connection.writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(writer=writer)
        self.connections.append(connection)
        session = ServerSession(max_chunk_size=self.max_chunk_size)
        try:
            while data := await reader.read(65536):
                connection.bytes += len(data)
                for event in session.receive_data(data):
                    if isinstance(event, PublishRequested):
                        session.accept_publish()
                        connection.name = event.stream_name
                    elif isinstance(event, MediaReceived):
                        m = event.message
                        connection.messages.append((m.type_id, m.timestamp, bytes(m.payload)))
                    elif isinstance(event, PublishEnded):
                        connection.unpublished = True
                writer.write(session.data_to_send())
                self._changed.set()
                if self.stall and connection.name is not None:
                    await asyncio.Event().wait()  # never read again
        except ProtocolError as exc:
            connection.error = str(exc)  # e.g. a chunk size above our limit: we hang up
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancelled: the receiver is closing
        finally:
            connection.closed_at = time.monotonic()
            self._changed.set()
            writer.close()
