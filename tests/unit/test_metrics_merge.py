"""What a worker that died leaves in the agent's metrics (docs/agent.md, "Metrics and
health of the whole agent"): its agent-wide counters, not its per-destination series
nor its gauges."""

from agent.metrics_merge import counters_kept, family, merge


def test_a_dead_workers_agent_wide_counters_are_kept_not_its_destinations():
    dead = [
        family("rig_agent_publishes", "counter", "p", [({}, 3)]),
        family("rig_agent_egress_bytes", "counter", "e", [({}, 682848)]),
        family("rig_agent_publishes_refused", "counter", "r", [({"reason": "unknown_key"}, 2)]),
        family(
            "rig_agent_destination_bytes_sent", "counter", "d",
            [({"destination": "3", "service": "YouTube"}, 682848)],
        ),
        family("rig_agent_live_ingests", "gauge", "l", [({}, 1)]),
    ]  # fmt: skip
    kept = {f["name"]: f["samples"] for f in counters_kept(dead)}
    assert kept == {
        "rig_agent_publishes": [["rig_agent_publishes_total", {}, 3]],
        "rig_agent_egress_bytes": [["rig_agent_egress_bytes_total", {}, 682848]],
        "rig_agent_publishes_refused": [
            ["rig_agent_publishes_refused_total", {"reason": "unknown_key"}, 2]
        ],
    }

    # The stream back on a live worker: the agent-wide total goes on from the dead
    # worker's, the destination's series starts again from what this worker sent.
    live = [
        family("rig_agent_egress_bytes", "counter", "e", [({}, 572244)]),
        family(
            "rig_agent_destination_bytes_sent", "counter", "d",
            [({"destination": "3", "service": "YouTube"}, 572244)],
        ),
    ]  # fmt: skip
    merged = {m.name: [s.value for s in m.samples] for m in merge([live, counters_kept(dead)])}
    assert merged["rig_agent_egress_bytes"] == [682848 + 572244]
    assert merged["rig_agent_destination_bytes_sent"] == [572244]
