"""rig-agent's settings: environment variables with matching flags, read once."""

import argparse
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.cpus import available_cpus
from agent.destination import EgressSettings
from agent.limits import AdmissionLimits
from rig.logs import log_format, log_level
from rig.services import rtmp_server_url
from rig.settings import (
    LISTEN_PORT,
    NO_LIMIT_OR_MORE,
    PORT,
    POSITIVE,
    SECONDS,
    SECONDS_OR_ZERO,
    Number,
    Option,
    add_option_arguments,
    option_values,
    switch,
)


@dataclass(frozen=True)
class AgentSettings:
    """Everything one rig-agent needs."""

    rig_url: str = "http://127.0.0.1:8080"
    agent_key: str = ""
    name: str = socket.gethostname()
    rtmp_listen: str = "127.0.0.1:1935"
    rtmp_app: str = "live"
    public_url: str = ""
    max_connections: int = 200
    handshake_timeout: float = 5.0
    publish_timeout: float = 5.0
    idle_timeout: float = 30.0
    # No data this long: the publisher is stalled (held, or its backup takes over).
    stall_timeout: float = 2.0
    max_message_bytes: int = 8 * 1024 * 1024
    # Abuse limits: what a stranger may cost before a key is checked (agent/limits.py).
    max_connections_per_address: int = 64
    max_unauthenticated_per_address: int = 32
    unauthenticated_max_message_bytes: int = 64 * 1024
    unauthenticated_buffer_bytes: int = 32 * 1024 * 1024
    failed_publish_burst: int = 10
    failed_publishes_per_minute: float = 12.0
    refused_key_ttl: float = 5.0
    queue_seconds: float = 10.0
    queue_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 10.0
    write_timeout: float = 10.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    tls_ca_file: str = ""
    shutdown_timeout: float = 5.0
    heartbeat_interval: float = 5.0
    log_level: str = "INFO"
    # Operations: the HTTP listener for /metrics, /healthz, /readyz ("off": none), logs.
    http_listen: str = "127.0.0.1:9935"
    log_format: str = "text"
    event_loop: str = "uvloop"
    allow_private_destinations: bool = False
    thumbnails: bool = True  # a picture of each live stream for rig, every 10 s
    # Worker processes sharing the RTMP port (agent/supervisor.py); 1: one process.
    workers: int = field(default_factory=available_cpus)
    # A worker that answers the supervisor nothing this long is killed and restarted.
    worker_hang_timeout: float = 30.0
    # New streams go to the lowest-numbered worker relaying fewer than this many (0: each
    # stays on the worker the kernel gave its connection to): agent/hub.py.
    pack_streams: int = 16

    @property
    def listen_host(self) -> str:
        """Host part of rtmp_listen (brackets of an IPv6 address removed)."""
        return self.rtmp_listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104

    @property
    def listen_port(self) -> int:
        """Port part of rtmp_listen."""
        return int(self.rtmp_listen.rpartition(":")[2])

    def admission(self) -> AdmissionLimits:
        """The connection limits, for agent.limits.Admission."""
        return AdmissionLimits(
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            max_unauthenticated_per_address=self.max_unauthenticated_per_address,
            unauthenticated_buffer_bytes=self.unauthenticated_buffer_bytes,
        )

    def egress(self) -> EgressSettings:
        """The destination workers' limits and timings."""
        context = None
        if self.tls_ca_file:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
        return EgressSettings(
            queue_bytes=self.queue_bytes,
            queue_seconds=self.queue_seconds,
            connect_timeout=self.connect_timeout,
            write_timeout=self.write_timeout,
            backoff_initial=self.retry_initial,
            backoff_max=self.retry_max,
            tls_context=context,
            allow_private_destinations=self.allow_private_destinations,
        )


# Heartbeats renew claims: at least 1 s apart (0 flooded rig with hundreds a second),
# and well under rig's RIG_CLAIM_TTL (its least is twice this: rig/settings.py).
HEARTBEAT_INTERVAL = Number(float, 1)
WORKERS = Number(int, 1)
PACK_STREAMS = Number(int, 0)


def listen_address(value: str) -> str:
    """`host:port` (an IPv6 host in brackets, an empty host: every address), the port
    from 0 to 65535, 0 being any free port."""
    _host, colon, port = value.rpartition(":")
    try:
        LISTEN_PORT(port if colon else "")
    except ValueError:
        raise ValueError(f"must be host:port, the port {LISTEN_PORT}, not {value!r}") from None
    return value


class CannotListen(OSError):
    """An address the agent must listen on cannot be bound: its str is one line naming
    the setting and the address (`RIG_AGENT_RTMP_LISTEN 127.0.0.1:1935: address already
    in use`), which is what the agent logs before it exits 1."""

    def __init__(self, setting: str, listen: str, exc: OSError) -> None:
        # os.strerror, not exc.strerror: uvloop's says "error while attempting to bind
        # on address (...): ..."; a resolver's error (gaierror) has an EAI_ number.
        if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
            words = os.strerror(exc.errno)
        else:
            words = exc.strerror or str(exc) or type(exc).__name__
        words = words[:1].lower() + words[1:]
        super().__init__(exc.errno, f"{setting} {listen}: {words}")

    def __str__(self) -> str:
        return str(self.strerror)


def http_listen(value: str) -> str:
    """`off`, or a listen address."""
    return value if value.strip().lower() == "off" else listen_address(value)


def rig_url(value: str) -> str:
    """rig's base URL: http:// or https://, a host, and a port from 1 to 65535 if any."""
    try:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError
        if parts.port is not None:  # urlsplit raises on one beyond 65535
            PORT(str(parts.port))
    except ValueError:
        raise ValueError(f"must be http[s]://host[:port], the port {PORT}, not {value!r}") from None
    return value


def event_loop(value: str) -> str:
    """An event loop name: uvloop or asyncio."""
    if value not in ("uvloop", "asyncio"):
        raise ValueError(f"event loop must be uvloop or asyncio, not {value!r}")
    return value


def worker_count(value: str) -> int:
    """A number of worker processes (at least 1), or `auto`: one per CPU."""
    if value.strip().lower() == "auto":
        return available_cpus()
    try:
        return int(WORKERS(value))
    except ValueError:
        raise ValueError(f"must be auto or {WORKERS}, not {value!r}") from None


OPTIONS: list[Option] = [
    ("--rig-url", "RIG_URL", "rig_url", rig_url, "rig's base URL"),
    # The API key has no flag: process arguments are visible to every local user.
    ("", "RIG_AGENT_KEY", "agent_key", str, "this agent's API key (rig agents create NAME)"),
    ("--name", "RIG_AGENT_NAME", "name", str, "this agent's name in logs and live state"),
    (
        "--rtmp-listen",
        "RIG_AGENT_RTMP_LISTEN",
        "rtmp_listen",
        listen_address,
        "host:port for RTMP ingest (port 0: any free one)",
    ),
    ("--rtmp-app", "RIG_AGENT_RTMP_APP", "rtmp_app", str, "RTMP application publishers use"),
    (
        "--public-url",
        "RIG_AGENT_PUBLIC_URL",
        "public_url",
        rtmp_server_url,
        "the ingest URL streamers use (default: rtmp://<listen address>/<app>)",
    ),
    (
        "--max-connections",
        "RIG_AGENT_MAX_CONNECTIONS",
        "max_connections",
        POSITIVE,
        "RTMP connections at once; more are closed at accept",
    ),
    (
        "--max-connections-per-address",
        "RIG_AGENT_MAX_CONNECTIONS_PER_ADDRESS",
        "max_connections_per_address",
        POSITIVE,
        "RTMP connections at once from one address (IPv4, or IPv6 /64)",
    ),
    (
        "--max-unauthenticated-per-address",
        "RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS",
        "max_unauthenticated_per_address",
        POSITIVE,
        "connections from one address whose publish is not accepted yet",
    ),
    (
        "--handshake-timeout",
        "RIG_AGENT_HANDSHAKE_TIMEOUT",
        "handshake_timeout",
        SECONDS,
        "seconds from connecting to the end of the RTMP handshake",
    ),
    (
        "--publish-timeout",
        "RIG_AGENT_PUBLISH_TIMEOUT",
        "publish_timeout",
        SECONDS,
        "seconds from the end of the handshake to the publish command",
    ),
    (
        "--idle-timeout",
        "RIG_AGENT_IDLE_TIMEOUT",
        "idle_timeout",
        SECONDS,
        "seconds without data before a publisher is dropped",
    ),
    (
        "--stall-timeout",
        "RIG_AGENT_STALL_TIMEOUT",
        "stall_timeout",
        SECONDS,
        "seconds without data after which a publisher counts as stalled: its backup takes"
        " over, or the slate while disconnect protection holds, and a new publish of its"
        " key replaces it",
    ),
    (
        "--max-message-bytes",
        "RIG_AGENT_MAX_MESSAGE_BYTES",
        "max_message_bytes",
        POSITIVE,
        "largest RTMP message accepted from a publisher",
    ),
    (
        "--unauthenticated-max-message-bytes",
        "RIG_AGENT_UNAUTHENTICATED_MAX_MESSAGE_BYTES",
        "unauthenticated_max_message_bytes",
        POSITIVE,
        "largest RTMP message accepted before a publish is accepted",
    ),
    (
        "--unauthenticated-buffer-bytes",
        "RIG_AGENT_UNAUTHENTICATED_BUFFER_BYTES",
        "unauthenticated_buffer_bytes",
        POSITIVE,
        "bytes all connections not yet publishing may buffer together",
    ),
    (
        "--failed-publish-burst",
        "RIG_AGENT_FAILED_PUBLISH_BURST",
        "failed_publish_burst",
        NO_LIMIT_OR_MORE,
        "refused publishes (wrong key or application) one address may make in a burst"
        " (0: no limit)",
    ),
    (
        "--failed-publishes-per-minute",
        "RIG_AGENT_FAILED_PUBLISHES_PER_MINUTE",
        "failed_publishes_per_minute",
        SECONDS,
        "refused publishes one address may make a minute after its burst",
    ),
    (
        "--refused-key-ttl",
        "RIG_AGENT_REFUSED_KEY_TTL",
        "refused_key_ttl",
        SECONDS_OR_ZERO,
        "seconds a key rig refused is refused again without asking rig (0: off)",
    ),
    (
        "--queue-seconds",
        "RIG_AGENT_QUEUE_SECONDS",
        "queue_seconds",
        SECONDS,
        "media a slow destination may fall behind before whole GOPs are dropped",
    ),
    (
        "--queue-bytes",
        "RIG_AGENT_QUEUE_BYTES",
        "queue_bytes",
        POSITIVE,
        "bytes a slow destination may fall behind before whole GOPs are dropped",
    ),
    (
        "--connect-timeout",
        "RIG_AGENT_CONNECT_TIMEOUT",
        "connect_timeout",
        SECONDS,
        "seconds to connect and start publishing to a destination",
    ),
    (
        "--write-timeout",
        "RIG_AGENT_WRITE_TIMEOUT",
        "write_timeout",
        SECONDS,
        "seconds a write to a destination may block before it counts as failed",
    ),
    (
        "--retry-initial",
        "RIG_AGENT_RETRY_INITIAL",
        "retry_initial",
        SECONDS,
        "first reconnect delay of a failed destination (doubles each time)",
    ),
    ("--retry-max", "RIG_AGENT_RETRY_MAX", "retry_max", SECONDS, "longest reconnect delay"),
    (
        "--tls-ca-file",
        "RIG_AGENT_TLS_CA_FILE",
        "tls_ca_file",
        str,
        "extra CA bundle to trust for rtmps:// destinations",
    ),
    (
        "--shutdown-timeout",
        "RIG_AGENT_SHUTDOWN_TIMEOUT",
        "shutdown_timeout",
        SECONDS_OR_ZERO,
        "seconds destinations get to drain on SIGTERM",
    ),
    (
        "--heartbeat-interval",
        "RIG_AGENT_HEARTBEAT_INTERVAL",
        "heartbeat_interval",
        HEARTBEAT_INTERVAL,
        "seconds between heartbeats to rig (keep well under rig's RIG_CLAIM_TTL)",
    ),
    (
        "--log-level",
        "RIG_AGENT_LOG_LEVEL",
        "log_level",
        log_level,
        "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    ),
    (
        "--http-listen",
        "RIG_AGENT_HTTP_LISTEN",
        "http_listen",
        http_listen,
        "host:port of the HTTP listener for /metrics, /healthz and /readyz (off: none)",
    ),
    ("--log-format", "RIG_AGENT_LOG_FORMAT", "log_format", log_format, "text (one line) or json"),
    (
        "--event-loop",
        "RIG_AGENT_EVENT_LOOP",
        "event_loop",
        event_loop,
        "uvloop (default) or asyncio: the event loop serving every connection",
    ),
    (
        "--allow-private-destinations",
        "RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS",
        "allow_private_destinations",
        switch,
        "let Custom destinations connect to loopback, private, link-local and other"
        " non-public addresses (yes/no; as rig's RIG_ALLOW_PRIVATE_DESTINATIONS)",
    ),
    (
        "--thumbnails",
        "RIG_AGENT_THUMBNAILS",
        "thumbnails",
        switch,
        "on or off: decode each live stream's newest keyframe every 10 s into a JPEG for rig",
    ),
    (
        "--workers",
        "RIG_AGENT_WORKERS",
        "workers",
        worker_count,
        "worker processes sharing the RTMP port, each one event loop (auto: one per CPU"
        " this process may use, within its container's CPU limit)",
    ),
    (
        "--pack-streams",
        "RIG_AGENT_PACK_STREAMS",
        "pack_streams",
        PACK_STREAMS,
        "with several workers, new streams go to the lowest-numbered worker relaying fewer"
        " than this many (fewer wake-ups per stream while few are live); 0: each stays on"
        " the worker its connection reached",
    ),
    (
        "--worker-hang-timeout",
        "RIG_AGENT_WORKER_HANG_TIMEOUT",
        "worker_hang_timeout",
        SECONDS,
        "seconds a worker may answer the supervisor nothing before it is killed and"
        " restarted (a hung event loop)",
    ),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's flags."""
    add_option_arguments(parser, OPTIONS, AgentSettings())


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AgentSettings:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if env is None else env
    return AgentSettings(**option_values(args, OPTIONS, env))  # type: ignore[arg-type]
