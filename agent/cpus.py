"""How many CPUs this process may use: the default number of agent workers.

nginx's `worker_processes auto` counts the CPUs the process may run on (its affinity);
in a container with a CPU limit (cgroup v2 `cpu.max`: Docker `--cpus`, Kubernetes
`resources.limits.cpu`, systemd `CPUQuota=`) that is still every CPU of the host, and
more workers than the quota allows only take turns on it. So the limit counts too,
rounded up: a limit of 1.5 CPUs gives 2 workers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> float | None:
    """The tightest CPU limit (in CPUs) on this process's cgroup and its parents
    (cgroup v2 `cpu.max`, or v1's CFS quota), or None without one."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    path = next((line[3:] for line in membership.splitlines() if line.startswith("0::")), "/")
    limits = []
    directory = root / path.strip().lstrip("/")
    while True:
        try:
            quota, period = (directory / "cpu.max").read_text().split()
            if quota != "max" and int(period) > 0:
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    v1 = _cgroup_v1_limit(root / "cpu")
    if v1 is not None:
        limits.append(v1)
    return min(limits) if limits else None


def _cgroup_v1_limit(directory: Path) -> float | None:
    """cgroup v1 (older Docker hosts): the container's own cgroup is mounted at the
    root of the `cpu` hierarchy."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may run on, no more than its cgroup's CPU limit (rounded up)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)
