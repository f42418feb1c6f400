"""`bench/run --holding N[,N...]`: what holding a disconnect slate costs the agent,
against relaying the same streams (issue 15).

For each N, with a fresh rig-agent: N streams, each relayed to D destinations (nginx-rtmp
receivers recording every publish), fed by N `ffmpeg -re -stream_loop -1` publishers of
the benchmark's fixture (720p30 H.264 4.5 Mbit/s + AAC). After the warm-up the agent's
process tree CPU is measured over the window (*relaying*). Then every publisher is
killed (SIGKILL: its connection closes without an unpublish), every stream holds
(disconnect protection on, `graceSeconds` 600: the slate to every destination, the
broadcasts kept), and once the agent reports all N holding (`rig_agent_holding_ingests`
on /metrics) the same window is measured again (*holding*). Reported: CPU-s per
stream-minute per destination, both phases, and holding / relaying. The slate itself is
encoded once, during the warm-up (one set of facts: the fixture's); its cost is that of
`python -m bench.slate`.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.procs import Child, tree_cpu_times, wait_until
from bench.relays import Receivers

if TYPE_CHECKING:
    from bench.runner import Bench

GRACE_SECONDS = 600  # longer than any window: every stream holds to the end


@dataclass
class HoldingRun:
    """One N: the agent's CPU relaying, then holding, the same streams."""

    n: int
    d: int
    rep: int
    window_s: float
    relaying_cpu_s: float
    holding_cpu_s: float

    def per_stream_min_dest(self, cpu_s: float) -> float:
        return cpu_s / (self.n * self.d * self.window_s / 60)

    @property
    def relaying(self) -> float:
        """CPU-s per stream-minute per destination, relaying."""
        return self.per_stream_min_dest(self.relaying_cpu_s)

    @property
    def holding(self) -> float:
        """CPU-s per stream-minute per destination, holding."""
        return self.per_stream_min_dest(self.holding_cpu_s)


def protect(bench: Bench) -> None:
    """Every work stream holds for GRACE_SECONDS when its publisher is gone."""
    body = {"disconnectProtection": {"enabled": True, "graceSeconds": GRACE_SECONDS}}
    for stream in bench.work_streams:
        bench.rig.api.call("PATCH", f"/streams/{stream.id}", body)


def _gauge(bench: Bench, name: str) -> float:
    url = f"http://127.0.0.1:{bench.rig.agent_http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _window(agent: Child, seconds: float) -> float:
    user0, system0 = tree_cpu_times(agent.pid)
    time.sleep(seconds)
    user1, system1 = tree_cpu_times(agent.pid)
    return user1 - user0 + system1 - system0


def run_holding(bench: Bench, n: int, rep: int) -> HoldingRun:
    """Relay N streams, then hold them, measuring the agent's CPU in each phase."""
    cfg = bench.config
    root = bench.run_dir / f"holding-n{n}-d{cfg.d}-rep{rep}"
    receivers = Receivers(root / "receivers", bench.workload_blocks()).start()
    publishers: list[Child] = []
    try:
        agent = bench.rig.start_agent(root / "agent.log")
        port = bench.rig.agent_port
        publishers = [
            bench.publisher(bench.publish_url("ours", port, j), root / f"ffmpeg-{j}.log", None)
            for j in range(n)
        ]
        wait_until(lambda: _gauge(bench, "rig_agent_live_ingests") == n, 60, "N live")
        time.sleep(cfg.warmup)
        relaying = _window(agent, cfg.window)
        for publisher in publishers:
            publisher.signal(signal.SIGKILL)
        wait_until(lambda: _gauge(bench, "rig_agent_holding_ingests") == n, 30, "N holding")
        time.sleep(1.0)  # the slate's first batch (the catch-up) is behind us
        holding = _window(agent, cfg.window)
        if _gauge(bench, "rig_agent_holding_ingests") != n:
            bench.notes.append(f"holding N={n}: not every stream held to the end")
    finally:
        for publisher in publishers:
            publisher.signal(signal.SIGKILL)
        bench.rig.stop_agent()
        receivers.stop()
        receivers.remove_recordings()
    return HoldingRun(n, cfg.d, rep, cfg.window, round(relaying, 3), round(holding, 3))


def table(runs: list[HoldingRun]) -> str:
    """The holding table: per N, relaying and holding CPU per stream-minute per dest."""
    lines = [
        f"{'N':>3} {'D':>2} {'rep':>3} {'relaying':>9} {'holding':>9} {'holding/relaying':>16}",
    ]
    for run in runs:
        ratio = run.holding / run.relaying if run.relaying else float("nan")
        lines.append(
            f"{run.n:>3} {run.d:>2} {run.rep:>3} {run.relaying:>9.4f} {run.holding:>9.4f}"
            f" {ratio:>16.2f}"
        )
    return "\n".join(lines)
