"""The dashboard's live updates: what they cost rig and PostgreSQL, and how late they are.

    .venv/bin/python -m bench.live_updates [--streams 20] [--watchers 2] [--duration 20]
                                           [--heartbeat 5]

Starts `rig serve` on an embedded PostgreSQL in a fresh temporary directory, makes a user
with `--streams` live streams (claimed by one agent, which heartbeats all of them every
`--heartbeat` seconds with new figures, as `RIG_AGENT_HEARTBEAT_INTERVAL` says), and
`--watchers` dashboards per stream. Measured twice, the same way:

- **events**: each dashboard holds `GET /streams/{id}/events` open (server-sent events,
  woken by PostgreSQL notifications);
- **poll**: each dashboard polls `GET /streams/{id}/stats` every second instead (what a
  page without live updates would do to be current within a second).

For each: the delay from a heartbeat being sent to the dashboard having its figures
(p50, p99), the updates received, and the CPU seconds per minute of rig and of
PostgreSQL (all its processes) over the window, and of an idle baseline (heartbeats,
no dashboards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import REPO, Child, clean_env, cpu_times, free_port, tree_pids

PASSWORD = "correct horse battery staple"
POLL_SECONDS = 1.0  # how often a page without live updates would ask to be as current


def postgres_pids(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL's processes: its postmaster (whose command line names the
    data dir) and the backends it forked."""
    out = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True)
    return [pid for root in out.stdout.split() for pid in tree_pids(int(root))]


def cpu(pids: list[int]) -> float:
    return sum(sum(cpu_times(pid)) for pid in pids)


class Load:
    """One user's streams, claimed by one agent that heartbeats them all every second."""

    def __init__(self, session: aiohttp.ClientSession, base: str, heartbeat: float) -> None:
        self.session = session
        self.heartbeat = heartbeat
        self.base = base
        self.user_token = ""
        self.agent_token = ""
        self.streams: list[dict] = []
        self.claims: list[dict] = []
        self.beat_at: dict[int, float] = {}  # bitrate sent -> when its heartbeat was sent
        self.sequence = 0

    async def call(self, method: str, path: str, body: object = None, token: str = "") -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, (method, path, answer)
            return answer["payload"]

    async def setup(self, streams: int, agent_key: str) -> None:
        name = f"bench{secrets.token_hex(3)}"
        account = {"username": name, "password": PASSWORD, "email": f"{name}@example.org"}
        await self.call("POST", "/accounts/", account)
        login = await self.call(
            "POST", "/accounts/auth/local", {"username": name, "password": PASSWORD}
        )
        self.user_token = login["token"]
        self.agent_token = (await self.call("POST", "/agents/auth", {"apiKey": agent_key}))["token"]
        for _ in range(streams):
            stream = await self.call("POST", "/streams/", token=self.user_token)
            self.streams.append(stream)
            claim = await self.call(
                "POST",
                f"/agents/streams/{stream['streamKey']}/claim",
                {"ingestUrl": "rtmp://bench.example/live"},
                self.agent_token,
            )
            self.claims.append({"claimId": claim["claimId"], "streamKey": stream["streamKey"]})

    async def heartbeats(self, until: float) -> None:
        """Every second, new figures for every stream; the bitrate names the beat."""
        while time.monotonic() < until:
            self.sequence += 1
            bitrate = 4_000_000 + self.sequence
            health = {
                "ingestUrl": "rtmp://bench.example/live",
                "ingest": {"bitrate": bitrate, "frameRate": 30.0, "bytesIn": self.sequence},
                "destinations": [],
            }
            body = {"claims": [{**claim, "health": health} for claim in self.claims]}
            self.beat_at[bitrate] = time.monotonic()
            await self.call("POST", "/agents/heartbeat", body, self.agent_token)
            await asyncio.sleep(self.heartbeat)


async def watch_events(load: Load, stream: dict, until: float, delays: list[float]) -> None:
    headers = {"Authorization": f"Bearer {load.user_token}"}
    url = f"{load.base}/streams/{stream['id']}/events"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with load.session.get(url, headers=headers, timeout=timeout) as resp:
        assert resp.status == 200, await resp.text()
        while time.monotonic() < until:
            try:
                async with asyncio.timeout(until - time.monotonic()):
                    block = await resp.content.readuntil(b"\n\n")
            except TimeoutError:
                return
            for line in block.decode().splitlines():
                if line.startswith("data: "):
                    record(load, json.loads(line[6:]), delays)


async def watch_polling(load: Load, stream: dict, until: float, delays: list[float]) -> None:
    seen = None
    while time.monotonic() < until:
        stats = await load.call("GET", f"/streams/{stream['id']}/stats", token=load.user_token)
        bitrate = (stats.get("ingest") or {}).get("bitrate")
        if bitrate != seen:
            seen = bitrate
            record(load, stats, delays)
        await asyncio.sleep(POLL_SECONDS)


def record(load: Load, stats: dict, delays: list[float]) -> None:
    bitrate = (stats.get("ingest") or {}).get("bitrate")
    sent = load.beat_at.get(bitrate)
    if sent is not None:  # None: the figures from before the window
        delays.append(time.monotonic() - sent)


async def measure(base: str, args: argparse.Namespace, agent_key: str, rig_pid: int, pg: Path):
    results = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        load = Load(session, base, args.heartbeat)
        await load.setup(args.streams, agent_key)
        for mode in ("idle", "events", "poll"):
            until = time.monotonic() + 2 + args.duration
            delays: list[float] = []
            watcher = {"events": watch_events, "poll": watch_polling}.get(mode)
            tasks = [
                asyncio.create_task(watcher(load, stream, until, delays))
                for stream in load.streams
                for _ in range(args.watchers)
                if watcher is not None
            ]
            await asyncio.sleep(2)  # watchers connected (and rig listening) before the window
            load.beat_at.clear()  # only heartbeats sent in the window count
            delays.clear()  # (the figures each watcher got on connecting are older)
            rig_before, pg_before = cpu([rig_pid]), cpu(postgres_pids(pg))
            started = time.monotonic()
            await asyncio.gather(load.heartbeats(until), *tasks)
            minutes = (time.monotonic() - started) / 60
            results[mode] = {
                "rig_cpu_s_per_min": (cpu([rig_pid]) - rig_before) / minutes,
                "postgres_cpu_s_per_min": (cpu(postgres_pids(pg)) - pg_before) / minutes,
                "updates": len(delays),
                "delay_p50_ms": statistics.median(delays) * 1000 if delays else None,
                "delay_p99_ms": sorted(delays)[int(len(delays) * 0.99) - 1] * 1000
                if delays
                else None,
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_updates")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--watchers", type=int, default=2, help="dashboards per stream")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per mode")
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="seconds between heartbeats (agent default 5)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-live-") as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        env = clean_env(RIG_DATA_DIR=str(data), RIG_PORT=str(port), RIG_EVENTS_PER_USER="10000")
        rig = Child("rig", [sys.executable, "-m", "rig", "serve"], Path(tmp) / "rig.log", env)
        rig.start()
        try:
            rig.wait_for_port(port, timeout=60)
            created = subprocess.run(
                [sys.executable, "-m", "rig", "agents", "create", "bench-agent"],
                env=env, cwd=REPO, capture_output=True, text=True, check=True,
            )  # fmt: skip
            agent_key = created.stdout.strip().splitlines()[-1]
            base = f"http://127.0.0.1:{port}"
            results = asyncio.run(measure(base, args, agent_key, rig.pid, data))
        finally:
            rig.stop()
            log = (Path(tmp) / "rig.log").read_text()
    problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    if problems:
        print("rig's warnings:\n  " + "\n  ".join(problems[:10]))
    dashboards = args.streams * args.watchers
    print(
        f"live updates: {args.streams} live streams heartbeating every {args.heartbeat:g} s,"
        f" {dashboards} dashboards, {args.duration:g} s per mode"
    )
    print("  mode    updates  delay p50  delay p99  rig CPU s/min  PostgreSQL CPU s/min")
    for mode, r in results.items():
        p50 = "-" if r["delay_p50_ms"] is None else f"{r['delay_p50_ms']:.0f} ms"
        p99 = "-" if r["delay_p99_ms"] is None else f"{r['delay_p99_ms']:.0f} ms"
        print(
            f"  {mode:<7} {r['updates']:>7}  {p50:>9}  {p99:>9}  {r['rig_cpu_s_per_min']:>13.2f}"
            f"  {r['postgres_cpu_s_per_min']:>20.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
