"""One benchmark run: the measurements, in order, for every relay, alternately.

Workload (per relay, N, repetition): fresh receivers and a fresh relay process, N
`ffmpeg -re -stream_loop -1` publishers (each teeing what it sends into a file), a
warm-up, a measured window (relay tree CPU at its edges, memory sampled every 0.2 s),
then the publishers stop, the relay drains, and every destination's recording is checked
against what its publisher sent. The agent makes stream pictures only while someone asks
for them: by default nobody does (a streamer's dashboard is closed most of the time);
`--watch` asks for every stream's picture every 10 s, as an open dashboard does.

Latency (per relay, background load, repetition): the real-time publisher and the sink
of `bench.latency`, through the relay and straight to the sink at once, optionally with
background ffmpeg streams through the same relay.

For our relay the rig API decides where each stream goes, and rig only knows two
services, so the YouTube service's port is shared: an nginx receiver listens on it during
the workload, the latency sink during the latency measurements (when background streams
use Twitch-only destinations).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import flvcheck, latency
from bench.api_load import ApiFigures, have_wrk, run_wrk
from bench.fixture import read_tags
from bench.procs import (
    REPO,
    Child,
    RssSampler,
    free_port,
    main_thread_cpu_seconds,
    tree_cpu_seconds,
    tree_cpu_times,
    wait_until,
)
from bench.relays import NginxRelay, Receivers, RigStack, StreamInfo, Viewers

YOUTUBE_APP, TWITCH_APP = "live2", "app"
# With --watch, the warm-up lasts at least this long (s): the agent's next heartbeat
# (5 s) makes the pictures wanted, then one comes per stream every 10 s.
WATCH_WARMUP = 10.0


@dataclass
class Config:
    """What to measure, and for how long."""

    relays: list[str]
    ns: list[int]
    d: int
    window: float
    warmup: float
    reps: int
    latency_seconds: float
    latency_bg: int
    latency_skip: float
    api_seconds: int
    api_connections: list[int]
    api_threads: int
    out: Path
    keep: bool = False
    profile: bool = False
    do_latency: bool = True
    do_api: bool = True
    latency_bg_levels: list[int] = field(default_factory=list)
    agent_env: dict[str, str] = field(default_factory=dict)  # e.g. RIG_AGENT_EVENT_LOOP
    watch: bool = False  # ours: a dashboard looks at every stream's picture (Viewers)


@dataclass
class WorkloadRun:
    """One workload measurement."""

    relay: str
    n: int
    d: int
    rep: int
    window_s: float
    cpu_s: float
    cpu_system_share: float  # share of the CPU spent in the kernel
    cpu_per_stream_min_dest: float  # per minute of media published in the window
    realtime_ratio: float  # media published in the window / (N x window): 1 = real time
    peak_rss_mb: float  # the process tree's VmRSS summed (shared pages once per process)
    peak_pss_mb: float  # its PSS summed (shared pages counted once in all)
    delivered_ratio: float  # bytes recorded in the window / (D x bytes sent in the window)
    drain_s: float  # from stopping the publishers until nothing more was recorded
    rig_cpu_s: float | None
    main_thread_share: float  # of the relay process's CPU: for ours, the event loop (ingest)
    destinations: list[dict[str, Any]]
    publisher_errors: list[str]
    # Ours: stream pictures made in the window and the CPU they took (agent/thumbnails.py).
    thumbnails: int | None = None
    thumbnail_cpu_s: float | None = None
    agent_path: str | None = None  # ours: its per-message modules compiled or not
    watched: bool = False  # ours: every stream's picture was asked for (--watch)
    pictures_seen: int | None = None  # --watch: JPEGs the viewers got (warm-up and window)

    def worst(self, track: str, part: str) -> int:
        """The largest loss (ms) of `track` at `part` over every destination."""
        return max((d[track][f"{part}_ms"] for d in self.destinations), default=0)

    def damaged(self) -> int:
        """Destinations with no recording, foreign or reordered frames."""
        return sum(
            1
            for d in self.destinations
            if not d["recordings"]
            or any(d[t]["foreign"] or d[t]["out_of_order"] for t in ("video", "audio"))
        )


@dataclass
class LatencyRun:
    """One latency measurement."""

    relay: str
    background: int
    rep: int
    relay_path: dict[str, Any]
    direct_path: dict[str, Any]
    added_p50_ms: float | None
    added_p99_ms: float | None
    added_max_ms: float | None


def _stop_all(children: list[Child], sig: int = signal.SIGINT, timeout: float = 10) -> None:
    for child in children:
        child.signal(sig)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(timeout=10)


def _wait_quiet(receivers: Receivers, quiet: float = 1.0, limit: float = 30.0) -> float:
    """Until nothing more is recorded for `quiet` s (the relay drained), at most `limit` s;
    return when the last byte was recorded, in seconds from the call."""
    start = time.monotonic()
    last, since = -1, start
    while time.monotonic() < start + limit:
        size = receivers.total_bytes()
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.1)
    return since - start


def timestamp_at(path: Path, offset: int) -> int:
    """Timestamp of the last complete FLV tag before byte `offset` of a file (0 if none)."""
    with path.open("rb") as f:
        header = f.read(9)
        pos = int.from_bytes(header[5:9], "big") + 4
        timestamp = 0
        while pos + 11 <= offset:
            f.seek(pos)
            tag = f.read(11)
            if len(tag) < 11:
                break
            end = pos + 11 + int.from_bytes(tag[1:4], "big") + 4
            if end > offset:
                break
            if tag[0] in (8, 9):
                timestamp = int.from_bytes(tag[4:7], "big") | (tag[7] << 24)
            pos = end
        return timestamp


class Bench:
    """A whole run: rig once, then every measurement."""

    def __init__(self, config: Config, fixture: Path, log: Any = print) -> None:
        self.config = config
        self.fixture = fixture
        self.log = log
        self.run_dir = config.out / "runs" / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.yt_port, self.tw_port = free_port(), free_port()
        self.rig = RigStack(
            self.run_dir / "rig",
            {
                "YouTube": f"rtmp://127.0.0.1:{self.yt_port}/{YOUTUBE_APP}",
                "Twitch": f"rtmp://127.0.0.1:{self.tw_port}/{TWITCH_APP}",
            },
            config.agent_env,
        )
        self.nginx = NginxRelay()
        self.work_streams: list[StreamInfo] = []
        self.bg_streams: list[StreamInfo] = []
        self.lat_stream: StreamInfo | None = None
        self.tags = read_tags(fixture)
        self.workload: list[WorkloadRun] = []
        self.latency: list[LatencyRun] = []
        self.api: list[ApiFigures] = []
        self.notes: list[str] = []
        self.profile: dict[str, Any] | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Start rig; create the user, streams and destinations our relay needs."""
        started = time.monotonic()
        self.rig.start()
        self.log(f"rig up on :{self.rig.port} in {time.monotonic() - started:.1f} s")
        if "ours" not in self.config.relays:
            return
        d = self.config.d
        api = self.rig.api
        for j in range(max(self.config.ns)):
            self.work_streams.append(api.stream([(_service(i), f"w{j}d{i}") for i in range(d)]))
        if self.config.do_latency:
            for j in range(max(self.config.latency_bg_levels, default=0)):
                self.bg_streams.append(api.stream([("Twitch", f"b{j}d{i}") for i in range(d)]))
            self.lat_stream = api.stream([("YouTube", "lat")])

    def close(self) -> None:
        """Stop everything still running."""
        self.nginx.stop()
        self.rig.stop()

    # ------------------------------------------------------------------ destinations

    def workload_blocks(self) -> dict[int, list[str]]:
        d = self.config.d
        return {
            self.yt_port: [YOUTUBE_APP] + [f"d{i}" for i in range(2, d) if i % 2 == 0],
            self.tw_port: [TWITCH_APP] + [f"d{i}" for i in range(3, d) if i % 2 == 1],
        }

    def _port(self, i: int) -> int:
        return self.yt_port if i % 2 == 0 else self.tw_port

    @staticmethod
    def _nginx_app(i: int) -> str:
        return YOUTUBE_APP if i == 0 else TWITCH_APP if i == 1 else f"d{i}"

    def _record_location(self, relay: str, j: int, i: int) -> tuple[int, str, str]:
        """(port, app, stream name) where destination `i` of publisher `j` is recorded."""
        if relay == "ours":
            app = YOUTUBE_APP if i % 2 == 0 else TWITCH_APP
            return self._port(i), app, self.work_streams[j].destinations[i][1]
        return self._port(i), self._nginx_app(i), f"n{j}"

    def _start_relay(self, relay: str, root: Path, *, latency_phase: bool) -> tuple[Child, int]:
        d = self.config.d
        if relay == "ours":
            return self.rig.start_agent(root / "agent.log"), self.rig.agent_port
        if latency_phase:
            live = [
                f"rtmp://127.0.0.1:{self.tw_port}/{TWITCH_APP if i == 0 else f'd{i}'}"
                for i in range(d)
            ]
        else:
            live = [f"rtmp://127.0.0.1:{self._port(i)}/{self._nginx_app(i)}" for i in range(d)]
        lat = [f"rtmp://127.0.0.1:{self.yt_port}/{YOUTUBE_APP}"]
        return self.nginx.start(root / "nginx-relay", live, lat), self.nginx.port

    def _stop_relay(self, relay: str) -> None:
        if relay == "ours":
            self.rig.stop_agent()
        else:
            self.nginx.stop()

    def publish_url(self, relay: str, port: int, j: int, background: bool = False) -> str:
        if relay == "ours":
            streams = self.bg_streams if background else self.work_streams
            return f"rtmp://127.0.0.1:{port}/live/{streams[j].key}"
        return f"rtmp://127.0.0.1:{port}/live/{'b' if background else 'n'}{j}"

    def publisher(self, url: str, log_path: Path, tee: Path | None) -> Child:
        argv = [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-re", "-stream_loop", "-1", "-i", str(self.fixture), "-map", "0", "-c", "copy",
        ]  # fmt: skip
        if tee is None:
            argv += ["-f", "flv", url]
        else:
            argv += ["-f", "tee", f"[f=flv]{url}|[f=flv]{tee}"]
        return Child("ffmpeg", argv, log_path).start()

    # ------------------------------------------------------------------ workload

    def run_workload(
        self, relay: str, n: int, rep: int, profile_to: Path | None = None
    ) -> WorkloadRun:
        """One workload measurement (see the module docstring)."""
        cfg = self.config
        root = self.run_dir / f"{relay}-n{n}-d{cfg.d}-rep{rep}"
        if profile_to is not None:
            root = root.with_name(root.name + "-profile")
        receivers = Receivers(root / "receivers", self.workload_blocks()).start()
        publishers: list[Child] = []
        watched = relay == "ours" and cfg.watch
        try:
            relay_child, port = self._start_relay(relay, root, latency_phase=False)
            with RssSampler(relay_child.pid) as rss, contextlib.ExitStack() as viewing:
                sent_files = [root / f"sent-{j}.flv" for j in range(n)]
                publishers = [
                    self.publisher(
                        self.publish_url(relay, port, j), root / f"ffmpeg-{j}.log", sent_files[j]
                    )
                    for j in range(n)
                ]
                # ffmpeg takes a moment to start (seconds, for 32 at once on two cores):
                # the warm-up counts from the moment every publisher is sending.
                wait_until(
                    lambda: all(f.exists() and f.stat().st_size > 0 for f in sent_files),
                    30,
                    "every publisher to start",
                    interval=0.1,
                )
                warmup, viewers = cfg.warmup, None
                if watched:
                    ids = [s.id for s in self.work_streams[:n]]
                    viewers = viewing.enter_context(Viewers(self.rig.api, ids))
                    # The agent hears of it at its next heartbeat (5 s): then one picture
                    # per stream every 10 s, the steady state the window should measure.
                    warmup = max(warmup, WATCH_WARMUP)
                time.sleep(warmup)

                def window_edge() -> tuple:
                    """Counters read at each edge of the measured window."""
                    return (
                        tree_cpu_times(relay_child.pid),
                        tree_cpu_seconds(self.rig.rig.pid),
                        time.monotonic(),
                        main_thread_cpu_seconds(relay_child.pid),
                        [f.stat().st_size for f in sent_files],
                        receivers.total_bytes(),
                        self.rig.thumbnail_figures() if relay == "ours" else (0.0, 0.0),
                    )

                cpu0, rig0, t0, main0, offsets0, recorded0, thumbs0 = window_edge()
                if profile_to is not None:
                    self.profile = _py_spy(relay_child.pid, cfg.window, profile_to)
                else:
                    time.sleep(cfg.window)
                cpu1, rig1, t1, main1, offsets1, recorded1, thumbs1 = window_edge()
                pictures_seen = None if viewers is None else viewers.pictures
                errors = [
                    f"publisher {j} exited early: {p.log()[-300:].strip()}"
                    for j, p in enumerate(publishers)
                    if not p.running
                ]
                _stop_all(publishers)
                drain = _wait_quiet(receivers)
                peak, peak_pss = rss.stop(), rss.peak_pss
            self._stop_relay(relay)
            receivers.stop()
            # Stream-minutes actually published in the window: media time between the tags
            # the teed files had reached at the window's edges.
            media_s = sum(
                (timestamp_at(f, b) - timestamp_at(f, a)) / 1000
                for f, a, b in zip(sent_files, offsets0, offsets1, strict=True)
            )
            destinations = []
            for j in range(n):
                sent = flvcheck.Sent.load(sent_files[j])
                for i in range(cfg.d):
                    files = receivers.recordings(*self._record_location(relay, j, i))
                    result = flvcheck.check(sent, files).as_dict()
                    result.update(publisher=j, destination=i)
                    destinations.append(result)
        finally:
            _stop_all(publishers, signal.SIGKILL)
            self._stop_relay(relay)
            receivers.stop()
        if not cfg.keep:
            receivers.remove_recordings()
            for path in root.glob("sent-*.flv"):
                path.unlink()
        window = t1 - t0
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        cpu = user + system
        return WorkloadRun(
            relay=relay,
            n=n,
            d=cfg.d,
            rep=rep,
            window_s=round(window, 3),
            cpu_s=round(cpu, 3),
            cpu_system_share=round(system / cpu, 3) if cpu else 0.0,
            cpu_per_stream_min_dest=cpu / (cfg.d * media_s / 60),
            realtime_ratio=round(media_s / (n * window), 3),
            peak_rss_mb=peak / 2**20,
            peak_pss_mb=peak_pss / 2**20,
            delivered_ratio=round(
                (recorded1 - recorded0) / max(1, cfg.d * (sum(offsets1) - sum(offsets0))), 3
            ),
            drain_s=round(drain, 2),
            rig_cpu_s=round(rig1 - rig0, 3) if relay == "ours" else None,
            main_thread_share=round((main1 - main0) / cpu, 3) if cpu else 0.0,
            destinations=destinations,
            publisher_errors=errors,
            thumbnails=round(thumbs1[0] - thumbs0[0]) if relay == "ours" else None,
            thumbnail_cpu_s=round(thumbs1[1] - thumbs0[1], 4) if relay == "ours" else None,
            agent_path=self.rig.agent_path if relay == "ours" else None,
            watched=watched,
            pictures_seen=pictures_seen,
        )

    # ------------------------------------------------------------------ latency

    def run_latency(self, relay: str, background: int, rep: int) -> LatencyRun:
        """One latency measurement: relay path and direct path at once."""
        cfg = self.config
        root = self.run_dir / f"latency-{relay}-bg{background}-rep{rep}"
        root.mkdir(parents=True, exist_ok=True)
        receivers = None
        if background:
            tw_apps = [TWITCH_APP] + [f"d{i}" for i in range(1, cfg.d)]
            receivers = Receivers(root / "receivers", {self.tw_port: tw_apps}).start()
        sink = latency.Sink(self.yt_port)
        publishers: list[Child] = []
        try:
            _, port = self._start_relay(relay, root, latency_phase=True)
            publishers = [
                self.publisher(
                    self.publish_url(relay, port, j, background=True),
                    root / f"ffmpeg-bg-{j}.log",
                    None,
                )
                for j in range(background)
            ]
            if background:
                time.sleep(2.0)
            if relay == "ours":
                assert self.lat_stream is not None
                names = ("live", self.lat_stream.key, "lat")
            else:
                names = ("lat", "latn", "latn")
            result = latency.measure(
                sink,
                self.tags,
                cfg.latency_seconds,
                port,
                *names,
                direct_name="direct",
                skip_seconds=cfg.latency_skip,
            )
        finally:
            _stop_all(publishers, signal.SIGKILL)
            self._stop_relay(relay)
            sink.close()
            if receivers is not None:
                receivers.stop()
                receivers.remove_recordings()
        return LatencyRun(
            relay=relay,
            background=background,
            rep=rep,
            relay_path=asdict(result.relay),
            direct_path=asdict(result.direct),
            added_p50_ms=result.added("p50_ms"),
            added_p99_ms=result.added("p99_ms"),
            added_max_ms=result.added("max_ms"),
        )

    # ------------------------------------------------------------------ API

    def run_api(self) -> None:
        """wrk against /agents/config/{streamKey} and /streams/{id}."""
        cfg = self.config
        if not have_wrk():
            self.notes.append("wrk is not installed: API load not measured")
            return
        stream = (
            self.work_streams[0]
            if self.work_streams
            else self.rig.api.stream([("YouTube", "api"), ("Twitch", "api")])
        )
        root = self.run_dir / "api"
        root.mkdir(parents=True, exist_ok=True)
        routes = (
            ("GET /agents/config/{streamKey}", f"/agents/config/{stream.key}",
             self.rig.agent_token()),
            ("GET /streams/{id}", f"/streams/{stream.id}", self.rig.api.token),
        )  # fmt: skip
        for route, path, token in routes:
            for connections in cfg.api_connections:
                figures = run_wrk(
                    self.rig.url + path,
                    route,
                    token,
                    root,
                    seconds=cfg.api_seconds,
                    connections=connections,
                    threads=cfg.api_threads,
                    rig_pid=self.rig.rig.pid,
                )
                self.api.append(figures)
                self.log(
                    f"api {route} c={connections}: {figures.rps:.0f} req/s"
                    f" p50 {figures.p50_ms:.1f} ms p99 {figures.p99_ms:.1f} ms"
                    f" errors {figures.errors}"
                )

    # ------------------------------------------------------------------ everything

    def run(self) -> None:
        """Every measurement, relays alternating (the order flips every repetition). A
        measurement that fails is logged and noted; the others still run."""
        cfg = self.config
        if cfg.do_api:
            self._attempt("API load", self.run_api)
        for rep in range(cfg.reps):
            order = cfg.relays if rep % 2 == 0 else cfg.relays[::-1]
            for n in cfg.ns:
                for relay in order:
                    what = f"workload {relay} N={n} rep {rep}"
                    self._attempt(what, self._workload, relay, n, rep)
        if cfg.do_latency:
            for rep in range(cfg.reps):
                order = cfg.relays if rep % 2 == 0 else cfg.relays[::-1]
                for background in cfg.latency_bg_levels:
                    for relay in order:
                        self._attempt(
                            f"latency {relay} bg={background} rep {rep}",
                            self._latency,
                            relay,
                            background,
                            rep,
                        )
        if cfg.profile and "ours" in cfg.relays:
            self.log("profiling ours at N=8 with py-spy (not counted in the figures)")
            self._attempt("profile", self.run_workload, "ours", 8, 0, cfg.out)

    def _attempt(self, what: str, func: Callable[..., object], *args: Any) -> None:
        try:
            func(*args)
        except Exception as exc:  # one failed measurement must not lose the whole run
            self.log(f"{what} FAILED: {type(exc).__name__}: {exc}")
            self.notes.append(f"{what} failed: {type(exc).__name__}: {str(exc)[:300]}")

    def _workload(self, relay: str, n: int, rep: int) -> None:
        started = time.monotonic()
        result = self.run_workload(relay, n, rep)
        self.workload.append(result)
        self.log(
            f"workload {relay:5} N={n:<2} D={self.config.d} rep {rep}:"
            f" {result.cpu_per_stream_min_dest:.3f} CPU-s/stream-min/dest,"
            f" peak RSS {result.peak_rss_mb:.0f} MB (PSS {result.peak_pss_mb:.0f} MB),"
            f" delivered {result.delivered_ratio:.2f}, drain {result.drain_s:.1f} s,"
            f" loss v {_hmt(result, 'video')} a {_hmt(result, 'audio')} ms,"
            f" {time.monotonic() - started:.0f} s"
        )

    def _latency(self, relay: str, background: int, rep: int) -> None:
        result = self.run_latency(relay, background, rep)
        self.latency.append(result)
        error = result.relay_path["error"] or result.direct_path["error"]
        self.log(
            f"latency {relay:5} bg={background} rep {rep}: added p50"
            f" {_fmt(result.added_p50_ms)} p99 {_fmt(result.added_p99_ms)}"
            f" max {_fmt(result.added_max_ms)} ms, first video"
            f" {_fmt(result.relay_path['first_video_ms'], 0)} ms"
            f" (direct {_fmt(result.direct_path['first_video_ms'], 0)})"
            + (f" error {error}" if error else "")
        )


def _service(i: int) -> str:
    return "YouTube" if i % 2 == 0 else "Twitch"


def _hmt(run: WorkloadRun, track: str) -> str:
    return "/".join(str(run.worst(track, part)) for part in ("head", "mid", "tail"))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _py_spy(pid: int, seconds: float, out_dir: Path) -> dict[str, Any]:
    """Profile `pid` for `seconds`: half as a flame graph (SVG), half as collapsed stacks
    summarised into the hottest functions."""
    exe = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(exe).exists():
        time.sleep(seconds)
        return {"error": "py-spy is not installed (pip install py-spy)"}
    half = max(1, int(seconds / 2))
    svg, raw = out_dir / "profile.svg", out_dir / "profile.txt"
    # The flame graph shows every running thread; the summary only the one holding the GIL,
    # which is what limits a Python relay on many cores.
    for fmt, path, extra in (("flamegraph", svg, []), ("raw", raw, ["--gil"])):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [exe, "record", "--pid", str(pid), "--subprocesses", "--duration", str(half),
                 "--rate", "200", "--format", fmt, "--output", str(path), "--nonblocking",
                 *extra],
                capture_output=True, timeout=half + 60, check=False,
            )  # fmt: skip
    return {"svg": str(svg), "collapsed": str(raw), **summarise_profile(raw)}


# Frames every stack goes through (thread start, the event loop, the entry point).
INCLUSIVE_SKIP = (
    "process ", "Thread.", "Thread._", "_run_module_as_main", "_run_code", "<module>",
    "main (agent/cli.py", "run (asyncio/runners", "Runner.run", "BaseEventLoop.run_",
)  # fmt: skip


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in collapsed stacks."""
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # "function (path:line)" -> "function (path)": aggregate a function's lines.
        frames = [re.sub(r":\d+\)$", ")", f).replace(f"{REPO}/", "") for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if frame.startswith(tuple(INCLUSIVE_SKIP)):
                continue
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {"error": "empty profile"}

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100 * count / total, 1)) for name, count in ranked]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}
