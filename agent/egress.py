"""Our outgoing RTMP/RTMPS publish to one destination.

PyAV cannot pass socket options to an `rtmp://` output, so the socket is ours:
TCP_NODELAY (no Nagle stalls), a connect deadline, a write deadline (a destination
that stops reading is failed instead of holding media forever) and TLS for
`rtmps://`. The protocol itself is the sans-I/O `ClientSession`.

`open` connects and publishes over a blocking socket (in a connector thread); after
that the socket is non-blocking and the ingest's relay thread drives it: `queue`
media, `write_some` when the socket is writable, `read_some` when it is readable.
"""

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.rtmp import ClientSession, ProtocolError
from agent.rtmp.events import PublishRefused, PublishStarted, ServerClosed

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


class EgressError(Exception):
    """The destination cannot be reached, refused the publish, or stopped reading.

    Messages never contain the destination URL: it embeds the destination's stream key.
    """


@dataclass(frozen=True)
class RtmpTarget:
    """Where to publish: parsed from a destination's full ingest URL."""

    scheme: str
    host: str
    port: int
    app: str
    stream_name: str

    @property
    def tc_url(self) -> str:
        """The tcUrl announced in connect: the URL without the stream name."""
        default = DEFAULT_PORTS[self.scheme]
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}/{self.app}"

    @property
    def safe_name(self) -> str:
        """host:port/app, for logs: everything but the secret stream name."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.app}"


def parse_target(url: str) -> RtmpTarget:
    """Split `rtmp[s]://host[:port]/app[/more]/streamname`; the last segment is the name.

    Everything before the last path segment is the application, as FFmpeg's
    `rtmp_app` would be for such URLs; a query string stays with the stream name.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EgressError("destination URL must be rtmp:// or rtmps:// with a host")
    path = parts.path.strip("/")
    app, _, name = path.rpartition("/")
    if not app or not name:
        raise EgressError("destination URL must have an application and a stream key")
    if parts.query:
        name = f"{name}?{parts.query}"
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    return RtmpTarget(parts.scheme, parts.hostname, port, app, name)


class RtmpPublisher:
    """One publish to a destination: connect, handshake, publish, send media, close."""

    def __init__(
        self,
        target: RtmpTarget,
        *,
        connect_timeout: float = 10.0,
        write_timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = target
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._tls_context = tls_context
        self._session = ClientSession(target.app, target.tc_url, target.stream_name)
        self._sock: socket.socket | None = None
        self.bytes_sent = 0
        # Non-blocking phase: bytes accepted by `queue` and not yet taken by the socket.
        self._out = bytearray()
        self._retry_len = 0  # TLS: a write that wanted to be retried, with this length
        self._tls = False
        self._last_progress = 0.0

    def open(self) -> None:
        """Connect and publish; returns once the destination said NetStream.Publish.Start."""
        deadline = time.monotonic() + self._connect_timeout
        target = self.target
        try:
            sock = socket.create_connection((target.host, target.port), self._connect_timeout)
        except OSError as exc:
            raise EgressError(
                f"cannot connect to {target.safe_name}: {exc.strerror or exc}"
            ) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.scheme == "rtmps":
            context = self._tls_context or ssl.create_default_context()
            try:
                sock = context.wrap_socket(sock, server_hostname=target.host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise EgressError(f"TLS with {target.safe_name} failed: {exc}") from exc
        self._sock = sock
        self._session.start()
        while True:
            self._flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EgressError(f"{target.safe_name} did not accept the publish in time")
            sock.settimeout(remaining)
            for event in self._receive(self._recv()):
                if isinstance(event, PublishStarted):
                    sock.settimeout(self._write_timeout)
                    return
                if isinstance(event, PublishRefused):
                    raise EgressError(f"{target.safe_name} refused the publish: {event.code}")
                if isinstance(event, ServerClosed):
                    raise EgressError(f"{target.safe_name} closed the connection")

    # ------------------------------------------------------------ non-blocking phase

    def start_streaming(self) -> None:
        """From now on the socket is non-blocking, driven by the relay thread."""
        assert self._sock is not None
        self._sock.setblocking(False)
        self._tls = isinstance(self._sock, ssl.SSLSocket)
        self._last_progress = time.monotonic()

    def fileno(self) -> int:
        """The socket's descriptor, for poll()."""
        return self._sock.fileno() if self._sock is not None else -1

    @property
    def pending(self) -> int:
        """Bytes queued and not yet taken by the socket."""
        return len(self._out)

    def queue(self, messages: list[tuple[int, int, bytes]]) -> None:
        """Chunk (type, timestamp, body) messages for sending; `write_some` sends them."""
        session = self._session
        for type_id, timestamp, payload in messages:
            session.send_media(type_id, timestamp, payload)
        if not self._out:
            self._last_progress = time.monotonic()  # the write deadline starts now
        self._out += session.data_to_send()

    def write_some(self, now: float) -> None:
        """Send what the socket takes without blocking; fail once nothing could be sent
        for the write deadline (the destination stopped reading)."""
        out, sock = self._out, self._sock
        if not out or sock is None:
            return
        try:
            while out:
                if self._tls:
                    # OpenSSL wants a retried write repeated with the same length.
                    size = self._retry_len or min(len(out), 16384)
                    self._retry_len = size
                    sent = sock.send(out[:size])
                    self._retry_len = 0
                else:
                    sent = sock.send(out)
                if not sent:
                    break
                del out[:sent]
                self.bytes_sent += sent
                self._last_progress = now
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as exc:
            raise EgressError(f"sending to {self.target.safe_name} failed: {exc}") from exc
        if out and now - self._last_progress > self._write_timeout:
            raise EgressError(f"{self.target.safe_name} stopped reading (write timed out)")

    def read_some(self) -> None:
        """Take what the destination sent (acks, pings, a close) without blocking."""
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                raise EgressError(f"receiving from {self.target.safe_name} failed: {exc}") from exc
            if not data:
                raise EgressError(f"{self.target.safe_name} closed the connection")
            for event in self._receive(data):
                if isinstance(event, ServerClosed | PublishRefused):
                    raise EgressError(f"{self.target.safe_name} ended the publish")
            if not self._out:
                self._last_progress = time.monotonic()
            self._out += self._session.data_to_send()  # acks, pong

    def close(self, *, clean: bool = True) -> None:
        """Unpublish (when `clean`) and close; never raises."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if clean and self._session.publishing and not self._out:
                self._session.unpublish()
                data = self._session.data_to_send()
                sock.settimeout(1.0)
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if not data or self._sock is None:
            return
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise EgressError(f"{self.target.safe_name} stopped reading (write timed out)") from exc
        except OSError as exc:
            raise EgressError(f"sending to {self.target.safe_name} failed: {exc}") from exc
        self.bytes_sent += len(data)

    def _recv(self) -> bytes:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except TimeoutError as exc:
            raise EgressError(f"{self.target.safe_name} did not answer in time") from exc
        except OSError as exc:
            raise EgressError(f"receiving from {self.target.safe_name} failed: {exc}") from exc
        if not data:
            raise EgressError(f"{self.target.safe_name} closed the connection")
        return data

    def _receive(self, data: bytes) -> list:
        try:
            return self._session.receive_data(data)
        except ProtocolError as exc:
            raise EgressError(f"{self.target.safe_name} broke the protocol: {exc}") from exc
