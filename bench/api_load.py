"""rig's API under load: `wrk` against one rig process on loopback.

A small Lua script sets the Authorization header from the environment (the token never
appears in a process's arguments) and prints one JSON line with the request count and
the latency percentiles wrk measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import clean_env, tree_cpu_seconds

MARK = "BENCH_RESULT "

LUA = r"""
local token = os.getenv("BENCH_TOKEN")
wrk.headers["Authorization"] = "Bearer " .. token

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d,'
    .. ' "max_us": %d, "status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class ApiFigures:
    """One route under load."""

    route: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    connections: int = 0
    rig_cpu_ms_per_request: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def have_wrk() -> bool:
    """wrk is installed."""
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    route: str,
    token: str,
    work_dir: Path,
    *,
    seconds: int = 10,
    connections: int = 32,
    threads: int = 2,
    rig_pid: int | None = None,
) -> ApiFigures:
    """GET `url` with a bearer token for `seconds`; rig's CPU per request if `rig_pid`."""
    script = work_dir / "bench.lua"
    script.write_text(LUA)
    cpu0 = tree_cpu_seconds(rig_pid) if rig_pid else 0.0
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
         "--timeout", "5s", "-s", str(script), url],
        env=clean_env(BENCH_TOKEN=token),
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    cpu1 = tree_cpu_seconds(rig_pid) if rig_pid else 0.0
    line = next((x for x in out.stdout.splitlines() if x.startswith(MARK)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr}")
    data = json.loads(line[len(MARK) :])
    secs = data["duration_us"] / 1e6
    requests = data["requests"]
    return ApiFigures(
        route=route,
        requests=requests,
        seconds=round(secs, 2),
        rps=round(requests / secs, 1) if secs else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["status_errors"] + data["socket_errors"],
        connections=connections,
        rig_cpu_ms_per_request=(
            round((cpu1 - cpu0) * 1000 / requests, 3) if rig_pid and requests else None
        ),
    )
