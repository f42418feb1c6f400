"""The supervisor of a multi-worker agent (`rig-agent --workers N`, N > 1).

As nginx's master process: it starts N worker processes (agent/worker.py, forked by the
zygote, agent/zygote.py, so that they share the memory of what they import), each one
event loop with its own RTMP listener on the same port (SO_REUSEPORT: the kernel spreads
new connections over them), restarts a worker that dies, and stops them all on SIGTERM
or SIGINT. It relays no media itself. It also holds what the workers must share:

- **the hub** (agent/hub.py): the stream registry every worker asks before and after
  each claim, and the forwarding of connections from worker to worker;
- **the HTTP listener** (`/metrics`, `/healthz`, `/readyz`) for the whole agent: the
  metrics are every worker's, summed (agent/metrics_merge.py).

Each worker talks to rig itself, with the agent's one key: it claims the streams
published to it, heartbeats the claims it holds (so kicks and destination changes reach
the worker relaying the stream, with no hop through here) and releases them. One
heartbeat per worker per interval is the whole cost, and a worker's trouble with rig
touches only its own streams. The supervisor asks rig nothing but its readiness.

A worker that hangs (its event loop answers nothing: the supervisor asks each one for a
sign of life every PING_INTERVAL seconds) is counted as not ready at once and killed
after RIG_AGENT_WORKER_HANG_TIMEOUT (30 s): the kernel keeps dealing it new connections,
which it would never serve. Then it is restarted as a worker that died.

A worker that dies is restarted at once, unless it dies within 10 s of its start: then
after 1 s, and 2 s, 4 s ... up to 30 s while it keeps doing so (`restart_delay`). Its
claims at rig are left to expire: its publishers' connections died with it, their
encoders reconnect (to any worker), and rig gives this agent the same claim back, so
the broadcast goes on as one session; a publisher that does not come back is ended by
rig's claim expiry (`RIG_CLAIM_TTL`, reason `expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import socket
import time
from collections.abc import Callable

from agent.channel import ChannelError, Frame, Link
from agent.hub import Hub
from agent.metrics_merge import Snapshot, counters_kept, family, merge, registry_of
from agent.settings import AgentSettings, CannotListen
from agent.zygote import ForkedProcess, Zygote, ZygoteGone

log = logging.getLogger(__name__)

RESTART_INITIAL = 1.0
RESTART_MAX = 30.0
STABLE_AFTER = 10.0  # a worker up this long has not been crash-looping
METRICS_TIMEOUT = 2.0
PING_INTERVAL = 1.0  # how often every worker is asked for a sign of life
START_TIMEOUT = 60.0


@dataclasses.dataclass
class WorkerProcess:
    index: int
    process: ForkedProcess
    link: Link
    started: float
    ready: bool = False
    answered: float = 0.0  # monotonic time of its last sign of life
    metrics: Snapshot = dataclasses.field(default_factory=list)  # its last answer


def restart_delay(quick_deaths: int, uptime: float) -> tuple[int, float]:
    """A worker died after `uptime` seconds, having died `quick_deaths` times in a row
    within STABLE_AFTER of its start before: (the new count, seconds until its restart).
    At once after a run of STABLE_AFTER or more; while it keeps dying younger, 1 s, 2 s,
    4 s ... up to RESTART_MAX."""
    if uptime >= STABLE_AFTER:
        return 0, 0.0
    quick = quick_deaths + 1
    return quick, min(RESTART_MAX, RESTART_INITIAL * 2 ** (quick - 1))


def _share(limit: int, workers: int) -> int:
    """One worker's part of an agent-wide limit."""
    return max(1, math.ceil(limit / workers))


class Supervisor:
    """Starts, watches and stops the workers; serves the registry and the metrics."""

    def __init__(self, settings: AgentSettings, workers: int, zygote: Zygote) -> None:
        self.settings = settings
        self.count = workers
        self.zygote = zygote
        # Called when the agent cannot go on (its zygote is gone): cli stops it, exit 1.
        self.on_failure: Callable[[str], None] = lambda why: None
        # Each worker takes its share of the agent's connection limits, rounded up:
        # SO_REUSEPORT deals connections by a hash of both addresses and ports, so one
        # address's connections are spread evenly over the workers too, and an address
        # gets its limit (at most workers - 1 more) whichever workers its connections
        # reach, not workers times it. The limits on wrong keys are kept in step
        # (agent/shared_limits.py).
        self.worker_settings = dataclasses.replace(
            settings,
            max_connections=_share(settings.max_connections, workers),
            max_connections_per_address=_share(settings.max_connections_per_address, workers),
            max_unauthenticated_per_address=_share(
                settings.max_unauthenticated_per_address, workers
            ),
            unauthenticated_buffer_bytes=_share(settings.unauthenticated_buffer_bytes, workers),
        )
        self.hub = Hub(self._ready_worker, settings.pack_streams)
        self.workers: dict[int, WorkerProcess] = {}
        self.stopping = False
        self.started = False  # every worker listened once
        self.restarts = 0
        self.departed: Snapshot = []  # counters of workers that died
        self.port = 0
        self._ready = asyncio.Event()
        self._watchers: set[asyncio.Task] = set()
        self._port_holder: socket.socket | None = None
        self._quick_deaths: dict[int, int] = {}  # deaths within STABLE_AFTER in a row

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reserve the port, start every worker, wait until each listens."""
        self._port_holder = self._reserve_port()
        self.port = self._port_holder.getsockname()[1]
        for index in range(1, self.count + 1):
            await self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(w.ready for w in self.workers.values()):
            # A worker that cannot start is not restarted: the agent cannot start.
            if any(w.process.returncode is not None for w in self.workers.values()):
                raise OSError(f"a worker could not start (RTMP port {self.port})")
            if time.monotonic() > deadline:
                raise OSError(f"the workers did not start within {START_TIMEOUT:.0f} s")
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._ready.wait()
        self.started = True
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(), name="watchdog")
        self._watchers.add(watchdog)
        watchdog.add_done_callback(self._watchers.discard)

    async def close(self) -> None:
        """Stop every worker: each ends its ingests, drains its destinations and
        releases its claims, as a single agent does on SIGTERM."""
        self.stopping = True
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_timeout + 10
        waits = [asyncio.ensure_future(w.process.wait()) for w in self.workers.values()]
        if waits:
            await asyncio.wait(waits, timeout=limit)
        for worker in self.workers.values():
            if worker.process.returncode is None:
                log.warning("worker %d did not stop in %s s: killed", worker.index, limit)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
        for task in self._watchers:
            task.cancel()
        for worker in self.workers.values():
            worker.link.close()
        self.zygote.close()
        if self._port_holder is not None:
            self._port_holder.close()

    def stop(self) -> None:
        """A signal came: from now on a worker that ends is not restarted (the workers
        may have the signal too, a terminal's Ctrl-C or systemd's KillMode=control-group,
        and end before `close`)."""
        self.stopping = True

    def _serves(self, worker: WorkerProcess) -> bool:
        """Listening, alive, and answering (a hung worker serves nothing)."""
        return (
            worker.ready
            and worker.process.returncode is None
            and time.monotonic() - worker.answered < 2 * PING_INTERVAL + 1
        )

    @property
    def serving(self) -> bool:
        """Some worker accepts RTMP connections."""
        return any(self._serves(w) for w in self.workers.values())

    def health_details(self) -> dict:
        ready = sum(1 for w in self.workers.values() if self._serves(w))
        return {"workers": {"ready": ready, "total": self.count}}

    # ------------------------------------------------------------------ workers

    def _reserve_port(self) -> socket.socket:
        """Bind (not listen) the RTMP address with SO_REUSEPORT: port 0 becomes a real
        port for every worker, and the port stays ours while a worker restarts. A port
        another process holds, with SO_REUSEPORT or not, is refused."""
        host, port = self.settings.listen_host, self.settings.listen_port
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise CannotListen("RIG_AGENT_RTMP_LISTEN", self.settings.rtmp_listen, exc) from None
        try:
            if port:
                # A bind without SO_REUSEPORT first: another agent of this user holding
                # the port with SO_REUSEPORT (a multi-worker one) would otherwise let us
                # join it, and the kernel would share its connections out with us.
                with socket.socket(family, kind, proto) as probe:
                    probe.bind(address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise CannotListen("RIG_AGENT_RTMP_LISTEN", self.settings.rtmp_listen, exc) from None
        return sock

    async def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        settings = dataclasses.replace(
            self.worker_settings, rtmp_listen=f"{self.listen_host()}:{self.port}"
        )
        try:
            process = await self.zygote.spawn(index, theirs)
        except BaseException:  # the zygote gone, say: no worker, no channel
            ours.close()
            raise
        finally:
            theirs.close()
        link = self.hub.connect(index, ours)
        worker = WorkerProcess(index, process, link, time.monotonic())
        self.workers[index] = worker
        link.notify({"op": "settings", "settings": dataclasses.asdict(settings)})
        log.info("worker %d started (pid %d)", index, process.pid)
        watcher = asyncio.get_running_loop().create_task(self._watch(worker))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def listen_host(self) -> str:
        host = self.settings.listen_host
        return f"[{host}]" if ":" in host else host

    async def _watch(self, worker: WorkerProcess) -> None:
        """Restart the worker when it dies (unless the agent is stopping)."""
        code = await worker.process.wait()
        worker.link.close()
        self.departed = merge_snapshots(self.departed, counters_kept(worker.metrics))
        freed = self.hub.gone(worker.index)
        if self.stopping or not self.started:
            return
        if self.zygote.gone:  # it ended its workers: none can be started again
            self.stopping = True
            self.on_failure("the zygote ended (agent/zygote.py): no worker can be restarted")
            return
        self.restarts += 1
        uptime = time.monotonic() - worker.started
        quick, delay = restart_delay(self._quick_deaths.get(worker.index, 0), uptime)
        self._quick_deaths[worker.index] = quick
        log.error(
            "worker %d (pid %d) exited with code %s after %.0f s; %d stream(s) it held are"
            " free (their claims expire at rig unless their publishers come back);"
            " restarting it in %.0f s",
            worker.index, worker.process.pid, code, uptime, freed, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            await self._spawn(worker.index)
        except ZygoteGone as exc:
            if not self.stopping:
                self.stopping = True
                self.on_failure(f"worker {worker.index} cannot be restarted: {exc}")

    async def _watchdog(self) -> None:
        """Ask every worker for a sign of life; kill one silent for the hang timeout."""
        while not self.stopping:
            await asyncio.gather(*(self._ping(w) for w in list(self.workers.values())))
            await asyncio.sleep(PING_INTERVAL)

    async def _ping(self, worker: WorkerProcess) -> None:
        if not worker.ready or worker.process.returncode is not None:
            return
        try:
            await worker.link.ask({"op": "ping"}, within=PING_INTERVAL)
            worker.answered = time.monotonic()
            return
        except (TimeoutError, ChannelError, OSError):  # ChannelClosed too
            pass
        silent = time.monotonic() - worker.answered
        if silent >= self.settings.worker_hang_timeout and not self.stopping:
            log.error(
                "worker %d (pid %d) has answered nothing for %.0f s"
                " (RIG_AGENT_WORKER_HANG_TIMEOUT): killed, to be restarted",
                worker.index, worker.process.pid, silent,
            )  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

    def _ready_worker(self, index: int, port: object) -> None:
        worker = self.workers.get(index)
        if worker is not None:
            worker.ready = True
            worker.answered = time.monotonic()
            self._ready.set()
            log.info("worker %d listening on port %s", index, port)

    # ------------------------------------------------------------------ metrics

    async def metrics_text(self) -> bytes:
        """Every worker's metrics, summed, and the supervisor's own."""
        from prometheus_client.exposition import generate_latest

        live = [w for w in self.workers.values() if w.ready and w.process.returncode is None]
        answers = await asyncio.gather(
            *(w.link.ask({"op": "metrics"}, within=METRICS_TIMEOUT) for w in live),
            return_exceptions=True,
        )
        for worker, answer in zip(live, answers, strict=True):
            if isinstance(answer, Frame) and isinstance(answer.message.get("families"), list):
                worker.metrics = answer.message["families"]
            # else: busy or gone: its last answer stands in (counters never go back)
        own = [
            family("rig_agent_workers", "gauge", "Workers accepting RTMP", [({}, len(live))]),
            family(
                "rig_agent_worker_restarts", "counter", "Workers restarted after dying",
                [({}, self.restarts)],
            ),
            family(
                "rig_agent_handoffs", "counter",
                "Connections handed from one worker to the worker holding their stream",
                [({"result": r}, n) for r, n in sorted(self.hub.handoffs.items())],
            ),
        ]  # fmt: skip
        snapshots = [w.metrics for w in self.workers.values()] + [self.departed, own]
        return generate_latest(registry_of(merge(snapshots)))


def merge_snapshots(first: Snapshot, second: Snapshot) -> Snapshot:
    """Two snapshots as one (sums), in snapshot form."""
    merged = merge([first, second])
    return [
        {
            "name": metric.name,
            "type": metric.type,
            "help": metric.documentation,
            "samples": [[s.name, s.labels, s.value] for s in metric.samples],
        }
        for metric in merged
    ]
