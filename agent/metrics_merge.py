"""One agent's metrics from many workers: each worker's families as JSON, summed.

Each worker reads its live objects at scrape time (agent/metrics.py) and answers the
supervisor's request with `snapshot()`; the supervisor adds the samples of every worker
up, label set by label set (a stream and its destinations live on one worker, so
per-destination samples never collide; agent-wide ones add up), plus what workers that
have died had counted (`departed`: their counters without a `destination` label), so
that the agent-wide `_total` counters never go back. Per-destination series describe
live ingests only, as in a single agent: a dead worker's go with it, and start from 0
where its streams are relayed next (docs/agent.md, "Metrics and health").

We weighed prometheus_client's multiprocess mode: it aggregates metric objects that
processes update in memory-mapped files as things happen, while the agent's metrics are
read from the live objects when scraped (nothing on the media path updates a metric),
which that mode does not support; it also needs a shared directory cleaned of dead
processes' files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

Snapshot = list[dict[str, Any]]  # [{"name", "type", "help", "samples": [[name, labels, value]]}]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    """Every family of `registry`, as JSON-ready data."""
    return [
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
        for family in registry.collect()
    ]


def counters_kept(families: Snapshot) -> Snapshot:
    """What a departed worker's counters add to the agent's totals for good: its
    agent-wide counters (per-destination figures describe live ingests only)."""
    kept = []
    for family in families:
        if family.get("type") != "counter":
            continue
        samples = [s for s in family["samples"] if "destination" not in s[1]]
        if samples:
            kept.append({**family, "samples": samples})
    return kept


def merge(snapshots: Iterable[Snapshot]) -> list[Metric]:
    """The sum of the snapshots, family by family, label set by label set."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families_of_one in snapshots:
        for family in families_of_one:
            name = family["name"]
            if name not in families:
                families[name] = Metric(name, family["help"], family["type"])
                values[name] = {}
            sums = values[name]
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                sums[key] = sums.get(key, 0.0) + value
    for name, metric in families.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def registry_of(metrics: list[Metric]) -> CollectorRegistry:
    """A registry that exposes exactly `metrics` (for one scrape)."""
    registry = CollectorRegistry()
    registry.register(_Fixed(metrics))
    return registry


def family(name: str, kind: str, text: str, samples: list[tuple[dict[str, str], float]]) -> dict:
    """One family in snapshot form (the supervisor's own figures)."""
    suffix = "_total" if kind == "counter" else ""
    return {
        "name": name,
        "type": kind,
        "help": text,
        "samples": [[name + suffix, labels, value] for labels, value in samples],
    }
