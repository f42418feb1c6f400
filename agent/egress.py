"""Our outgoing RTMP/RTMPS publish to one destination, on the agent's event loop.

The protocol is the sans-I/O `ClientSession`; this module only moves its bytes. The
socket is ours, not PyAV's (which opens `rtmp://` outputs with no options): TCP_NODELAY
(no Nagle stalls), a deadline on connecting (TCP, TLS, handshake, publish, all together),
TLS for `rtmps://`, and flow control: `paused` says the connection's write buffer is full;
a destination that takes nothing back for the write deadline is failed instead of
holding media forever.

Media goes out already chunked (`agent.rtmp.chunk.message_chunks`): the relay chunks
each message once for every destination with the same chunk size and message stream id
(`chunk_key`). Control and command messages (acks, pings, unpublish) are the session's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, cast
from urllib.parse import urlsplit

from agent.logsafe import escape
from agent.rtmp import ClientSession, ProtocolError
from agent.rtmp.events import PublishRefused, PublishStarted, ServerClosed
from rig.netpolicy import address_problem, allowed_addresses, literal_address

log: Final = logging.getLogger(__name__)

DEFAULT_PORTS: Final = {"rtmp": 1935, "rtmps": 443}
#: The chunk size we send with: large chunks mean fewer headers and fewer Python
#: objects per message. nginx-rtmp accepts up to 10 MiB (NGX_RTMP_MAX_CHUNK_SIZE), SRS
#: 128-65536 (SRS_CONSTS_RTMP_MAX_CHUNK_SIZE; larger ones only warn), FFmpeg any;
#: YouTube and Twitch publish no limit and receive 4096 from OBS and FFmpeg.
LARGE_CHUNK_SIZE: Final = 65536
#: What OBS and FFmpeg send with: used for a destination that refused a large one.
FALLBACK_CHUNK_SIZE: Final = 4096
#: Write buffer above which a destination counts as backed up (media then waits in the
#: destination's own bounded queue, where whole GOPs can be dropped).
WRITE_BUFFER_HIGH: Final = 256 * 1024

# What a refusal's status code means, in words for lastError (never the peer's text).
_REFUSALS: Final = {
    "NetStream.Publish.BadName": " (bad stream key or stream already publishing)",
    "NetStream.Publish.Denied": " (publishing denied)",
    "NetStream.Publish.BadConnection": " (bad connection)",
    "NetConnection.Connect.Rejected": " (connection rejected)",
    "NetConnection.Connect.Failed": " (connect failed)",
    "NetConnection.Connect.InvalidApp": " (unknown application)",
}


class EgressError(Exception):
    """The destination cannot be reached, refused the publish, or stopped reading.

    Messages never contain the destination URL: it embeds the destination's stream key.
    `connected`: it happened once the connection was up (during the RTMP session);
    `refused`: the destination answered the publish with an error.
    """

    def __init__(self, message: str, *, connected: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.connected = connected
        self.refused = refused


@dataclass(frozen=True)
class RtmpTarget:
    """Where to publish: the server URL's parts, and the stream key as given."""

    scheme: str
    host: str
    port: int
    app: str
    stream_name: str = field(repr=False)  # the destination's key

    @property
    def tc_url(self) -> str:
        """The tcUrl announced in connect: the URL without the stream name."""
        default = DEFAULT_PORTS[self.scheme]
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}/{self.app}"

    @property
    def safe_name(self) -> str:
        """scheme://host:port/app for logs and lastError: not the stream name (the key),
        and of the application only its first segment (an instance after it may be a
        key pasted into the server URL, as `rtmp://host/app/KEY`: OBS's commonest
        mistake, which rig cannot tell from a Wowza-style `app/instance`)."""
        path, query, _ = self.app.partition("?")  # rig refuses queries; a token if any
        first, more, _ = path.partition("/")
        hidden = ("/…" if more else "") + ("?…" if query else "")
        return f"{self.scheme}://{self.host}:{self.port}/{first}{hidden}"


def parse_target(server_url: str, stream_key: str) -> RtmpTarget:
    """Where to publish `stream_key`: `rtmp[s]://host[:port]/app[/instance]` is the
    server (OBS's "Server"), its whole path the application; the key is the stream name,
    exactly as given (OBS's "Stream Key": it may hold `/`, `?`, `#`, `%`...)."""
    if not server_url:
        raise EgressError("the destination's URL does not end with its stream key")
    try:
        parts = urlsplit(server_url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        raise EgressError("destination server URL is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise EgressError("destination server URL must be rtmp:// or rtmps:// with a host")
    app = parts.path.strip("/")
    if parts.query:
        app = f"{app}?{parts.query}"
    if not app:
        raise EgressError("destination server URL must have an application")
    if parts.fragment:
        raise EgressError("destination server URL must not have a fragment")
    if not stream_key:
        raise EgressError("destination has no stream key")
    return RtmpTarget(parts.scheme, parts.hostname, port, app, stream_key)


def _os_error_words(exc: OSError) -> str:
    """What an OS error means, without the addresses asyncio adds to its text."""
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class RtmpPublish(asyncio.Protocol):
    """One publish to a destination: made by `open_publish`, then fed chunked media.

    `closed` resolves when the connection is over: with None after our own `close`,
    with the EgressError that ended it otherwise.
    """

    def __init__(self, target: RtmpTarget, chunk_size: int, write_timeout: float) -> None:
        self.target = target
        self._write_timeout = write_timeout
        self._session = ClientSession(
            target.app, target.tc_url, target.stream_name, chunk_size=chunk_size
        )
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.started: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[EgressError | None] = loop.create_future()
        self.bytes_sent = 0
        # The write buffer is full: the destination is not keeping up.
        self.paused = False
        # What the bytes of chunked media depend on: (message stream id, chunk size);
        # known once the destination accepted the publish.
        self.chunk_key = (0, chunk_size)
        self.on_resume: Callable[[], None] | None = None  # called when writable again
        self._closing = False
        self._abort_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- for the owner

    @property
    def chunk_size(self) -> int:
        """The chunk size media must be chunked with."""
        return self._session.chunk_size

    @property
    def stream_id(self) -> int:
        """The message stream id media must be sent on."""
        return self._session.stream_id

    def write(self, data: bytes) -> None:
        """Send chunked media (never blocks; see `paused`)."""
        transport = self._transport
        if transport is None or self._closing:
            return
        transport.write(data)
        self.bytes_sent += len(data)

    def fail(self, error: EgressError) -> None:
        """End the connection now because of `error` (e.g. the write deadline passed)."""
        self._finish(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self, *, clean: bool, drain_timeout: float = 5.0) -> None:
        """Unpublish (when `clean`) and close once what is buffered is sent; abort after
        `drain_timeout` seconds if the destination does not take it. Never raises."""
        transport = self._transport
        if transport is None or self._closing:
            self._finish(None)
            return
        self._closing = True
        if clean and self._session.publishing:
            self._session.unpublish()
            self._flush()
        if not clean:
            transport.abort()
            return
        transport.close()  # after the buffer is written
        self._abort_timer = self._loop.call_later(drain_timeout, transport.abort)

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self._session.start()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._session.receive_data(data)
        except ProtocolError as exc:
            message = f"{self.target.safe_name} broke the protocol: {escape(exc)}"
            self.fail(EgressError(message, connected=True))
            return
        self._flush()  # acks, pongs, the publish sequence
        for event in events:
            if isinstance(event, PublishStarted):
                self.chunk_key = (self._session.stream_id, self._session.chunk_size)
                if not self.started.done():
                    self.started.set_result(None)
            elif isinstance(event, PublishRefused):
                why = _REFUSALS.get(event.code, "")
                message = f"{self.target.safe_name} refused the publish{why}"
                self.fail(EgressError(message, connected=True, refused=True))
                # The code is the peer's: logged escaped and cut short, never in lastError.
                log.info(
                    "%s refused the publish: %s", self.target.safe_name, escape(event.code, 100)
                )
            elif isinstance(event, ServerClosed):
                self.fail(self._closed_by_peer())

    def eof_received(self) -> bool:
        # After our unpublish the destination closing its side is the expected answer
        # (a TLS close_notify arrives as an end of file too).
        self._finish(None if self._closing else self._closed_by_peer())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._abort_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        if self._closing:
            self._finish(None)
        elif exc is not None:
            words = _os_error_words(exc) if isinstance(exc, OSError) else type(exc).__name__
            message = f"sending to {self.target.safe_name} failed: {words}"
            self._finish(EgressError(message, connected=True))
        else:
            self._finish(self._closed_by_peer())
        self._transport = None

    def pause_writing(self) -> None:
        # The write deadline: the destination must take some of it back within it.
        self.paused = True
        self._stall_timer = self._loop.call_later(self._write_timeout, self._stalled)

    def resume_writing(self) -> None:
        self.paused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self.on_resume is not None:
            self.on_resume()

    # -------------------------------------------------------------- internals

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)
            self.bytes_sent += len(data)

    def _stalled(self) -> None:
        message = f"{self.target.safe_name} stopped reading (write timed out)"
        self.fail(EgressError(message, connected=True))

    def _closed_by_peer(self) -> EgressError:
        return EgressError(f"{self.target.safe_name} closed the connection", connected=True)

    def _finish(self, error: EgressError | None) -> None:
        if not self.started.done():
            self.started.set_exception(error or self._closed_by_peer())
            self.started.exception()  # retrieved: no "never retrieved" warning
        if not self.closed.done():
            self.closed.set_result(error)


def check_public_literal(target: RtmpTarget) -> None:
    """EgressError if the target's host is a literal address that is not public: a
    destination that may only reach public addresses never will reach it. (A name is
    checked at each connection instead: what it resolves to may change.)"""
    literal = literal_address(target.host)
    problem = address_problem(literal) if literal is not None else None
    if problem:
        raise EgressError(
            f"the destination's address is not public ({problem}): this agent does not"
            " connect to such addresses (RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS)"
        )


async def _public_address(loop: asyncio.AbstractEventLoop, target: RtmpTarget) -> str:
    """The first public address of the target's host; AddressNotAllowed if it has none."""
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    return allowed_addresses(infos, allow_private=False)[0][4][0]


async def open_publish(
    target: RtmpTarget,
    *,
    chunk_size: int,
    timeout: float,  # noqa: ASYNC109 (one deadline for connect, TLS, handshake, publish)
    write_timeout: float,
    tls_context: ssl.SSLContext | None = None,
    public_only: bool = False,
) -> RtmpPublish:
    """Connect, (TLS,) handshake and publish within `timeout` seconds; EgressError if not.
    Once publishing, a destination that takes nothing for `write_timeout` seconds while
    our write buffer is full is failed. `public_only` (a user's Custom destination):
    connect only to a public address, the very one checked (rig/netpolicy.py)."""
    loop = asyncio.get_running_loop()
    context = None
    if target.scheme == "rtmps":
        context = tls_context or ssl.create_default_context()
    protocol: RtmpPublish | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                host = await _public_address(loop, target) if public_only else target.host
                _, protocol = await loop.create_connection(
                    lambda: RtmpPublish(target, chunk_size, write_timeout),
                    host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
            except ssl.SSLError as exc:
                raise EgressError(f"TLS with {target.safe_name} failed: {exc}") from None
            except socket.gaierror as exc:
                # Its errno is a negative EAI code, which os.strerror cannot name.
                raise EgressError(
                    f"cannot resolve {target.host} (DNS): {exc.strerror or 'lookup failed'}"
                ) from None
            except OSError as exc:
                raise EgressError(
                    f"cannot connect to {target.safe_name}: {_os_error_words(exc)}"
                ) from None
            await protocol.started
    except TimeoutError:
        if protocol is not None:
            protocol.close(clean=False)
        message = f"{target.safe_name} did not accept the publish in time"
        raise EgressError(message, connected=protocol is not None) from None
    except BaseException:
        if protocol is not None:
            protocol.close(clean=False)
        raise
    return protocol
