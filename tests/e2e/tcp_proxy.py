"""A transparent TCP proxy that records every byte a client sends through it.

Placed between a publisher and the agent, it is the independent witness of what the
publisher sent; between the agent and a receiver, of what the agent sent that
destination. It forwards bytes unchanged in both directions, so neither end can tell
it is there (beyond a loopback hop), and writes the client-to-server bytes of each
connection to `<dir>/<name>-<n>.up` (the server's answers to `.down`, for debugging),
read afterwards by `rtmp_capture.read_capture`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path


class RecordingProxy:
    """Listens on an ephemeral 127.0.0.1 port and forwards to `target_port`."""

    def __init__(self, directory: Path, name: str, target_port: int) -> None:
        self.dir = directory
        self.name = name
        self.target_port = target_port
        directory.mkdir(parents=True, exist_ok=True)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0  # accepted so far
        self.active = 0  # still open
        # While set, connections are closed as soon as they are accepted (a destination
        # that is down), so a client connects later: a late joiner.
        self.refusing = threading.Event()
        self.refused = 0
        self._accepter = threading.Thread(target=self._accept, name=f"proxy-{name}", daemon=True)
        self._accepter.start()

    def url(self, app: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}"

    def upstream(self, n: int) -> Path:
        """The client-to-server bytes of connection `n` (1-based)."""
        return self.dir / f"{self.name}-{n}.up"

    def upstreams(self) -> list[Path]:
        return [self.upstream(n) for n in range(1, self.connections + 1)]

    def _accept(self) -> None:
        self._listener.settimeout(0.2)  # close() does not wake a blocked accept()
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refusing.is_set():
                self.refused += 1
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self.active += 1
                n = self.connections
            thread = threading.Thread(
                target=self._serve, args=(client, n), name=f"proxy-{self.name}-{n}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, n: int) -> None:
        try:
            self._forward(client, n)
        finally:
            with self._lock:
                self.active -= 1

    def _forward(self, client: socket.socket, n: int) -> None:
        up_path, down_path = self.upstream(n), self.dir / f"{self.name}-{n}.down"
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()  # the client sees what it would without us: refused
            up_path.write_bytes(b"")
            return
        self._sockets += [client, server]
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Unbuffered: a test may read what was recorded while the connection still ends
        # (a capture read too early missed the last messages of a killed publisher).
        with up_path.open("wb", buffering=0) as up, down_path.open("wb", buffering=0) as down:
            self._pump(client, server, up, down)
        client.close()
        server.close()

    def _pump(self, client: socket.socket, server: socket.socket, up, down) -> None:
        """Move bytes both ways until both directions are closed; an end of stream is
        passed on as a half-close (shutdown of the write side) once all is written."""
        route = {client: (server, up), server: (client, down)}
        waiting = {client: bytearray(), server: bytearray()}  # to be written to the key
        reading = {client, server}
        while not self._closed.is_set() and (reading or any(waiting.values())):
            readable = [s for s in reading if len(waiting[route[s][0]]) < 4 << 20]
            writable = [s for s in (client, server) if waiting[s]]
            readable, writable, _ = select.select(readable, writable, [], 0.2)
            for sock in readable:
                peer, record = route[sock]
                try:
                    data = sock.recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    record.write(data)
                    waiting[peer] += data
                else:
                    reading.discard(sock)
            for sock in writable:
                try:
                    sent = sock.send(waiting[sock])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # the peer is gone: nothing more goes either way
                    waiting[sock].clear()
                    reading.discard(route[sock][0])
                    continue
                del waiting[sock][:sent]
            for sock in (client, server):
                if sock not in reading and not waiting[route[sock][0]]:
                    with contextlib.suppress(OSError):
                        route[sock][0].shutdown(socket.SHUT_WR)

    def drop(self) -> None:
        """The destination goes down: every open connection is cut, new ones are refused
        until `refusing` is cleared."""
        self.refusing.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._accepter.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
