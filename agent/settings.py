"""rig-agent's settings: environment variables with matching flags, read once."""

import argparse
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.cpus import available_cpus
from agent.destination import EgressSettings
from agent.limits import AdmissionLimits
from rig.logs import log_format
from rig.settings import Option, add_option_arguments, option_values, switch


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


def positive_number(value: str) -> float:
    """A number above 0."""
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be above 0, not {value!r}")
    return number


def event_loop(value: str) -> str:
    """An event loop name: uvloop or asyncio."""
    if value not in ("uvloop", "asyncio"):
        raise ValueError(f"event loop must be uvloop or asyncio, not {value!r}")
    return value


def worker_count(value: str) -> int:
    """A number of worker processes (at least 1), or `auto`: one per CPU."""
    if value.strip().lower() == "auto":
        return available_cpus()
    count = int(value)
    if count < 1:
        raise ValueError(f"workers must be at least 1 (or auto), not {count}")
    return count


OPTIONS: list[Option] = [
    ("--rig-url", "RIG_URL", "rig_url", str, "rig's base URL"),
    # The API key has no flag: process arguments are visible to every local user.
    ("", "RIG_AGENT_KEY", "agent_key", str, "this agent's API key (rig agents create NAME)"),
    ("--name", "RIG_AGENT_NAME", "name", str, "this agent's name in logs and live state"),
    ("--rtmp-listen", "RIG_AGENT_RTMP_LISTEN", "rtmp_listen", str, "host:port for RTMP ingest"),
    ("--rtmp-app", "RIG_AGENT_RTMP_APP", "rtmp_app", str, "RTMP application publishers use"),
    (
        "--public-url",
        "RIG_AGENT_PUBLIC_URL",
        "public_url",
        str,
        "the ingest URL streamers use (default: rtmp://<listen address>/<app>)",
    ),
    (
        "--max-connections",
        "RIG_AGENT_MAX_CONNECTIONS",
        "max_connections",
        int,
        "RTMP connections at once; more are closed at accept",
    ),
    (
        "--max-connections-per-address",
        "RIG_AGENT_MAX_CONNECTIONS_PER_ADDRESS",
        "max_connections_per_address",
        int,
        "RTMP connections at once from one address (IPv4, or IPv6 /64)",
    ),
    (
        "--max-unauthenticated-per-address",
        "RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS",
        "max_unauthenticated_per_address",
        int,
        "connections from one address whose publish is not accepted yet",
    ),
    (
        "--handshake-timeout",
        "RIG_AGENT_HANDSHAKE_TIMEOUT",
        "handshake_timeout",
        float,
        "seconds from connecting to the end of the RTMP handshake",
    ),
    (
        "--publish-timeout",
        "RIG_AGENT_PUBLISH_TIMEOUT",
        "publish_timeout",
        float,
        "seconds from the end of the handshake to the publish command",
    ),
    (
        "--idle-timeout",
        "RIG_AGENT_IDLE_TIMEOUT",
        "idle_timeout",
        float,
        "seconds without data before a publisher is dropped",
    ),
    (
        "--stall-timeout",
        "RIG_AGENT_STALL_TIMEOUT",
        "stall_timeout",
        float,
        "seconds without data after which a publisher counts as stalled: its backup takes"
        " over, or the slate while disconnect protection holds, and a new publish of its"
        " key replaces it",
    ),
    (
        "--max-message-bytes",
        "RIG_AGENT_MAX_MESSAGE_BYTES",
        "max_message_bytes",
        int,
        "largest RTMP message accepted from a publisher",
    ),
    (
        "--unauthenticated-max-message-bytes",
        "RIG_AGENT_UNAUTHENTICATED_MAX_MESSAGE_BYTES",
        "unauthenticated_max_message_bytes",
        int,
        "largest RTMP message accepted before a publish is accepted",
    ),
    (
        "--unauthenticated-buffer-bytes",
        "RIG_AGENT_UNAUTHENTICATED_BUFFER_BYTES",
        "unauthenticated_buffer_bytes",
        int,
        "bytes all connections not yet publishing may buffer together",
    ),
    (
        "--failed-publish-burst",
        "RIG_AGENT_FAILED_PUBLISH_BURST",
        "failed_publish_burst",
        int,
        "refused publishes (wrong key or application) one address may make in a burst"
        " (0: no limit)",
    ),
    (
        "--failed-publishes-per-minute",
        "RIG_AGENT_FAILED_PUBLISHES_PER_MINUTE",
        "failed_publishes_per_minute",
        positive_number,
        "refused publishes one address may make a minute after its burst",
    ),
    (
        "--refused-key-ttl",
        "RIG_AGENT_REFUSED_KEY_TTL",
        "refused_key_ttl",
        float,
        "seconds a key rig refused is refused again without asking rig (0: off)",
    ),
    (
        "--queue-seconds",
        "RIG_AGENT_QUEUE_SECONDS",
        "queue_seconds",
        float,
        "media a slow destination may fall behind before whole GOPs are dropped",
    ),
    (
        "--queue-bytes",
        "RIG_AGENT_QUEUE_BYTES",
        "queue_bytes",
        int,
        "bytes a slow destination may fall behind before whole GOPs are dropped",
    ),
    (
        "--connect-timeout",
        "RIG_AGENT_CONNECT_TIMEOUT",
        "connect_timeout",
        float,
        "seconds to connect and start publishing to a destination",
    ),
    (
        "--write-timeout",
        "RIG_AGENT_WRITE_TIMEOUT",
        "write_timeout",
        float,
        "seconds a write to a destination may block before it counts as failed",
    ),
    (
        "--retry-initial",
        "RIG_AGENT_RETRY_INITIAL",
        "retry_initial",
        float,
        "first reconnect delay of a failed destination (doubles each time)",
    ),
    ("--retry-max", "RIG_AGENT_RETRY_MAX", "retry_max", float, "longest reconnect delay"),
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
        float,
        "seconds destinations get to drain on SIGTERM",
    ),
    (
        "--heartbeat-interval",
        "RIG_AGENT_HEARTBEAT_INTERVAL",
        "heartbeat_interval",
        float,
        "seconds between heartbeats to rig (keep well under rig's RIG_CLAIM_TTL)",
    ),
    ("--log-level", "RIG_AGENT_LOG_LEVEL", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
    (
        "--http-listen",
        "RIG_AGENT_HTTP_LISTEN",
        "http_listen",
        str,
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
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's flags."""
    add_option_arguments(parser, OPTIONS, AgentSettings())


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AgentSettings:
    """Flags win over environment variables, which win over defaults."""
    env = os.environ if env is None else env
    return AgentSettings(**option_values(args, OPTIONS, env))  # type: ignore[arg-type]
