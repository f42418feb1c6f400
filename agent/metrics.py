"""The agent's Prometheus metrics, read from the live objects at each scrape.

Nothing on the media path updates a metric: a scrape reads `IngestServer.live` (each
ingest's bytes received), each StreamRelay's destination workers (`bytes_sent`, `reconnects`,
`state`, dropped packets) and `AgentStats`, the few counters the server keeps itself
(accepted and refused publishes, connections refused or closed before their publish by
the abuse limits, and the totals of ingests that have ended, so the `_total` counters
never go back).

Labels name destinations by rig's destination id and service only: never a stream
key, a destination key or a URL.
"""

import collections
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.server import IngestServer, LiveIngest

# Why a publish was refused (the `reason` label of rig_agent_publishes_refused_total).
REFUSAL_REASONS = (
    "unknown_application",
    "malformed_key",
    "already_live_here",
    "live_elsewhere",
    "unknown_key",
    "unknown_key_cached",  # refused a moment ago: not asked again (RIG_AGENT_REFUSED_KEY_TTL)
    "throttled",  # too many refused publishes from the address
    "rig_unavailable",
    "handoff_failed",
)
# Why a connection was refused at accept or closed before its publish (the `reason`
# label of rig_agent_connections_refused_total; agent/limits.py, agent/ingest.py).
CONNECTION_REFUSAL_REASONS = (
    "server_full",
    "address_connections",
    "address_unauthenticated",
    "handshake_timeout",
    "publish_timeout",
    "protocol_error",
    "buffer_limit",
    "not_reading",
)
STATES = ("connecting", "live", "backoff", "failed", "off")


class AgentStats:
    """Counters the ingest server keeps: publishes accepted and refused, ended totals."""

    def __init__(self) -> None:
        self.accepted = 0
        self.replaced = 0  # hung publishing connections replaced by a new one
        self.refused: collections.Counter[str] = collections.Counter()
        self.connections_refused: collections.Counter[str] = collections.Counter()
        self.ended_bytes_in = 0
        self.ended_bytes_out = 0
        self.ended_reconnects = 0
        self._tracked: list[LiveIngest] = []

    def refuse(self, reason: str) -> None:
        """A publish was refused (one of REFUSAL_REASONS)."""
        self.refused[reason] += 1

    def refuse_connection(self, reason: str) -> None:
        """A connection was refused, or closed before its publish (one of
        CONNECTION_REFUSAL_REASONS)."""
        self.connections_refused[reason] += 1

    def accept(self, ingest: "LiveIngest") -> None:
        """A publish was accepted: count it and follow its bytes until it has ended."""
        self.accepted += 1
        self._tracked.append(ingest)

    def fold(self, live: Iterable["LiveIngest"]) -> list["LiveIngest"]:
        """Move ingests that have ended (off the server, every destination closed) into
        the totals; return the ones still followed."""
        current = {id(i) for i in live}
        kept = []
        for ingest in self._tracked:
            relay = ingest.relay
            if id(ingest) not in current and (relay is None or relay.done):
                self.ended_bytes_in += ingest.bytes_in
                for worker in _workers(ingest):
                    self.ended_bytes_out += worker.bytes_sent
                    self.ended_reconnects += worker.reconnects
            else:
                kept.append(ingest)
        self._tracked = kept
        return kept


def _workers(ingest: "LiveIngest") -> list[Any]:
    relay = ingest.relay
    if relay is None:
        return []
    return [*relay.workers.values(), *relay.retired]


class AgentCollector(Collector):
    """Reads one IngestServer at each scrape."""

    def __init__(self, server: "IngestServer") -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        server = self.server
        stats = server.stats
        broadcasts = server.broadcasts()
        followed = stats.fold(broadcasts)
        live = [i for i in broadcasts if i.relay is not None]

        yield _gauge("rig_agent_live_ingests", "Publishes being relayed now", len(live))
        yield _gauge(
            "rig_agent_holding_ingests",
            "Publishes whose publisher is gone, the slate feeding their destinations",
            sum(i.ingest_state == "holding" for i in live),
        )
        yield _gauge(
            "rig_agent_rtmp_connections",
            "Open RTMP connections (publishing or not)",
            len(server.connections),
        )
        yield _counter("rig_agent_publishes", "Publishes accepted", stats.accepted)
        yield _counter(
            "rig_agent_publishers_replaced",
            "Hung publishing connections replaced by a new publish of their stream",
            stats.replaced,
        )
        refused = CounterMetricFamily(
            "rig_agent_publishes_refused", "Publishes refused, by reason", labels=["reason"]
        )
        for reason in sorted(set(REFUSAL_REASONS) | set(stats.refused)):
            refused.add_metric([reason], stats.refused.get(reason, 0))
        yield refused
        refused = CounterMetricFamily(
            "rig_agent_connections_refused",
            "Connections refused at accept or closed before their publish, by reason",
            labels=["reason"],
        )
        for reason in sorted(set(CONNECTION_REFUSAL_REASONS) | set(stats.connections_refused)):
            refused.add_metric([reason], stats.connections_refused.get(reason, 0))
        yield refused
        admission = server.admission
        yield _gauge(
            "rig_agent_unauthenticated_connections",
            "Open RTMP connections whose publish is not accepted (yet)",
            sum(1 for c in server.connections if not c.authenticated),
        )
        yield _gauge(
            "rig_agent_unauthenticated_buffered_bytes",
            "Bytes buffered for connections whose publish is not accepted (yet)",
            admission.unauthenticated_bytes,
        )

        bytes_in = stats.ended_bytes_in + sum(i.bytes_in for i in followed)
        yield _counter("rig_agent_ingest_bytes", "Bytes received from publishers", bytes_in)
        workers = [w for i in followed for w in _workers(i)]
        yield _counter(
            "rig_agent_egress_bytes",
            "Bytes sent to destinations, all together",
            stats.ended_bytes_out + sum(w.bytes_sent for w in workers),
        )
        yield _counter(
            "rig_agent_reconnects",
            "Destination reconnections, all together",
            stats.ended_reconnects + sum(w.reconnects for w in workers),
        )

        # Per destination of the live ingests. A destination changed while live has a
        # retired worker (draining) and a new one: they are added up under one id.
        per_dest: dict[tuple[str, str], dict[str, Any]] = {}
        for ingest in live:
            relay = ingest.relay
            assert relay is not None
            for worker, current in [
                *((w, True) for w in relay.workers.values()),
                *((w, False) for w in relay.retired),
            ]:
                key = (str(worker.destination.id), worker.destination.service)
                entry = per_dest.setdefault(
                    key, {"bytes": 0, "reconnects": 0, "dropped": 0, "state": None}
                )
                entry["bytes"] += worker.bytes_sent
                entry["reconnects"] += worker.reconnects
                entry["dropped"] += worker.dropped_packets
                if current or entry["state"] is None:
                    entry["state"] = str(worker.state.value)
        sent = CounterMetricFamily(
            "rig_agent_destination_bytes_sent",
            "Bytes sent to each destination of the live ingests",
            labels=["destination", "service"],
        )
        reconnects = CounterMetricFamily(
            "rig_agent_destination_reconnects",
            "Reconnections of each destination of the live ingests",
            labels=["destination", "service"],
        )
        dropped = CounterMetricFamily(
            "rig_agent_destination_dropped_packets",
            "Packets dropped for a destination that fell behind",
            labels=["destination", "service"],
        )
        state = GaugeMetricFamily(
            "rig_agent_destination_state",
            "1 for each destination's current state",
            labels=["destination", "service", "state"],
        )
        by_state: collections.Counter[str] = collections.Counter()
        for (dest, service), entry in sorted(per_dest.items()):
            sent.add_metric([dest, service], entry["bytes"])
            reconnects.add_metric([dest, service], entry["reconnects"])
            dropped.add_metric([dest, service], entry["dropped"])
            state.add_metric([dest, service, entry["state"]], 1)
            by_state[entry["state"]] += 1
        yield sent
        yield reconnects
        yield dropped
        yield state
        states = GaugeMetricFamily(
            "rig_agent_destinations", "Destinations of the live ingests, by state", labels=["state"]
        )
        for name in sorted(set(STATES) | set(by_state)):
            states.add_metric([name], by_state.get(name, 0))
        yield states
        yield from _thumbnail_metrics(server)


def _thumbnail_metrics(server: "IngestServer") -> Iterator[Any]:
    """Pictures made for rig (agent/thumbnails.py) and the CPU they took."""
    thumbnailer = server.thumbnailer
    pictures = CounterMetricFamily(
        "rig_agent_thumbnails", "Thumbnails made from keyframes, by result", labels=["result"]
    )
    pictures.add_metric(["made"], thumbnailer.made if thumbnailer else 0)
    pictures.add_metric(["failed"], thumbnailer.failed if thumbnailer else 0)
    yield pictures
    yield _counter(
        "rig_agent_thumbnail_cpu_seconds",
        "CPU seconds the thumbnail worker thread took to decode, scale and encode",
        thumbnailer.cpu_seconds if thumbnailer else 0.0,
    )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def registry_for(server: "IngestServer") -> CollectorRegistry:
    """A registry holding the server's collector (one per agent process)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(server))
    return registry
