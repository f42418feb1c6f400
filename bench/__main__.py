"""`python -m bench`: our relay against nginx-rtmp `push` on the same workload.

Prints a table (medians over the repetitions; losses are the worst over repetitions and
destinations) and writes every measurement to a JSON file in bench/out/. With --smoke:
one short repetition at N=1, exiting non-zero if our relay lost media mid-stream or at
the tail at any destination.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import holding as bench_holding
from bench import thumbnails as bench_thumbnails
from bench.fixture import make_fixture
from bench.relays import RTMP_MODULE
from bench.runner import Bench, Config, LatencyRun

OUT = Path(__file__).resolve().parent / "out"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=_ints, default=[1, 8, 32], help="publisher counts (1,8,32)")
    p.add_argument("--d", type=int, default=2, help="destinations per stream (2)")
    # A multiple of the agent's stream-picture interval (10 s, agent/thumbnails.py): a
    # window of 15 s held one picture per stream where the steady state makes 1.5.
    p.add_argument("--window", type=float, default=20.0, help="measured seconds (20)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before the window (3)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    p.add_argument("--relays", default="ours,nginx", help="relays to compare: ours,nginx (both)")
    p.add_argument("--latency-seconds", type=float, default=8.0, help="latency publish (8 s)")
    p.add_argument(
        "--latency-bg", type=int, default=8, help="background streams for latency (8; 0: none)"
    )
    p.add_argument(
        "--latency-skip", type=float, default=1.0,
        help="seconds at the start of a latency publish left out of the percentiles (1)",
    )  # fmt: skip
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")
    p.add_argument("--api-seconds", type=int, default=10, help="wrk duration per route (10)")
    p.add_argument(
        "--api-connections",
        type=_ints,
        default=[16, 32],
        help="wrk connection counts, each a run per route (16,32)",
    )
    p.add_argument("--api-threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--no-api", action="store_true", help="skip the API load")
    p.add_argument(
        "--agent-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for our agent, e.g. RIG_AGENT_EVENT_LOOP=asyncio (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--workers", metavar="N|auto",
        help="our agent's worker processes (RIG_AGENT_WORKERS; default: the agent's own,"
        " one per CPU)",
    )  # fmt: skip
    p.add_argument("--profile", action="store_true", help="also profile ours at N=8 (py-spy)")
    p.add_argument(
        "--thumbnails", action="store_true",
        help="also the CPU of one stream picture per codec and size (bench.thumbnails)",
    )  # fmt: skip
    p.add_argument(
        "--holding", type=_ints, metavar="N[,N...]",
        help="instead: N streams relayed, then N holding the disconnect slate (bench.holding)",
    )  # fmt: skip
    p.add_argument(
        "--watch", action="store_true",
        help="ours: ask for every stream's picture every 10 s, as an open dashboard does"
        " (without, nobody looks and the agent makes none)",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep recordings and teed files")
    p.add_argument("--out", type=Path, default=OUT, help="output directory (bench/out)")
    p.add_argument("--json", type=Path, help="JSON result file (default: in --out)")
    p.add_argument(
        "--smoke", action="store_true",
        help="quick check: N=1, 1 repetition, 4 s window, 3 s latency, 2 s API",
    )  # fmt: skip
    return p


def config_from(args: argparse.Namespace) -> Config:
    """Flags (and --smoke's overrides) to a Config."""
    if args.smoke:
        args.n, args.reps, args.window, args.warmup = [1], 1, 4.0, 2.0
        args.latency_seconds, args.latency_bg, args.api_seconds = 3.0, 0, 2
    relays = [r.strip() for r in args.relays.split(",") if r.strip()]
    if not relays or any(r not in ("ours", "nginx") for r in relays):
        raise SystemExit("bench: --relays takes ours, nginx or both")
    return Config(
        relays=relays,
        ns=args.n,
        d=args.d,
        window=args.window,
        warmup=args.warmup,
        reps=args.reps,
        latency_seconds=args.latency_seconds,
        latency_bg=args.latency_bg,
        latency_skip=args.latency_skip,
        api_seconds=args.api_seconds,
        api_connections=args.api_connections,
        api_threads=args.api_threads,
        out=args.out,
        keep=args.keep,
        profile=args.profile,
        do_latency=not args.no_latency,
        do_api=not args.no_api,
        latency_bg_levels=sorted({0, args.latency_bg}),
        agent_env=agent_env(args),
        watch=args.watch,
    )


def agent_env(args: argparse.Namespace) -> dict[str, str]:
    """Our agent's settings from --agent-env and --workers (which wins)."""
    env = dict(item.split("=", 1) for item in args.agent_env)
    if args.workers is not None:
        env["RIG_AGENT_WORKERS"] = args.workers
    return env


# ---------------------------------------------------------------------- aggregation


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(bench: Bench) -> list[dict[str, Any]]:
    """One row per (relay, N): medians over repetitions, worst-case losses, latency."""
    cfg = bench.config
    rows = []
    for n in cfg.ns:
        for relay in cfg.relays:
            runs = [r for r in bench.workload if r.relay == relay and r.n == n]
            if not runs:
                continue
            row: dict[str, Any] = {
                "relay": relay,
                "n": n,
                "d": cfg.d,
                "reps": len(runs),
                "cpu_per_stream_min_dest": _median([r.cpu_per_stream_min_dest for r in runs]),
                # A relay that falls behind did less work in the window than was published:
                # its CPU per stream-minute it actually delivered.
                "cpu_per_delivered_stream_min_dest": _median(
                    [r.cpu_per_stream_min_dest / max(r.delivered_ratio, 1e-6) for r in runs]
                ),
                "peak_rss_mb": _median([r.peak_rss_mb for r in runs]),
                "peak_pss_mb": _median([r.peak_pss_mb for r in runs]),
                "rig_cpu_s": _median([r.rig_cpu_s for r in runs]),
                "main_thread_share": _median([r.main_thread_share for r in runs]),
                "cpu_system_share": _median([r.cpu_system_share for r in runs]),
                "delivered_ratio_min": min(r.delivered_ratio for r in runs),
                "realtime_ratio_min": min(r.realtime_ratio for r in runs),
                "drain_s_max": max(r.drain_s for r in runs),
                "damaged_destinations": max(r.damaged() for r in runs),
                "publisher_errors": sum(len(r.publisher_errors) for r in runs),
                "thumbnails": _median([r.thumbnails for r in runs]),
                "thumbnail_cpu_s": _median([r.thumbnail_cpu_s for r in runs]),
                "agent_path": ", ".join(sorted({r.agent_path for r in runs if r.agent_path})),
                "watched": any(r.watched for r in runs),
            }
            for track in ("video", "audio"):
                for part in ("head", "mid", "tail"):
                    row[f"{track}_{part}_ms_max"] = max(r.worst(track, part) for r in runs)
            background = {1: 0, cfg.latency_bg: cfg.latency_bg}.get(n)
            lat = [x for x in bench.latency if x.relay == relay and x.background == background]
            row.update(_latency_row(lat, background))
            rows.append(row)
    return rows


def _latency_row(runs: list[LatencyRun], background: int | None) -> dict[str, Any]:
    if not runs:
        return {"latency_background": None}
    return {
        "latency_background": background,
        "added_p50_ms": _median([r.added_p50_ms for r in runs]),
        "added_p99_ms": _median([r.added_p99_ms for r in runs]),
        "added_max_ms": _median([r.added_max_ms for r in runs]),
        "first_video_ms": _median([r.relay_path["first_video_ms"] for r in runs]),
        "direct_first_video_ms": _median([r.direct_path["first_video_ms"] for r in runs]),
        "latency_errors": [r.relay_path["error"] for r in runs if r.relay_path["error"]],
    }


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The summary table, with an ours/nginx ratio line after each N."""
    head = (
        "relay",
        "N",
        "D",
        "CPU-s/stream-min/dest",
        "peak RSS/PSS MB",
        "lost v h/m/t ms",
        "lost a h/m/t ms",
        "latency +p50/+p99/+max ms",
        "first video ms",
    )
    lines = [head]
    by_n: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_n.setdefault(row["n"], {})[row["relay"]] = row
    for n, relays in by_n.items():
        for row in relays.values():
            lat = (
                "-"
                if row.get("latency_background") is None
                else "/".join(
                    _f(row[k], 2) for k in ("added_p50_ms", "added_p99_ms", "added_max_ms")
                )
            )
            lines.append(
                (
                    row["relay"],
                    str(n),
                    str(row["d"]),
                    _f(row["cpu_per_stream_min_dest"], 3),
                    _f(row["peak_rss_mb"], 0) + "/" + _f(row.get("peak_pss_mb"), 0),
                    "/".join(str(row[f"video_{p}_ms_max"]) for p in ("head", "mid", "tail")),
                    "/".join(str(row[f"audio_{p}_ms_max"]) for p in ("head", "mid", "tail")),
                    lat,
                    _f(row.get("first_video_ms"), 0),
                )
            )
        if "ours" in relays and "nginx" in relays:
            ours, ngx = relays["ours"], relays["nginx"]
            lines.append(
                (
                    "ours/nginx",
                    str(n),
                    str(ours["d"]),
                    "x" + _ratio(ours["cpu_per_stream_min_dest"], ngx["cpu_per_stream_min_dest"]),
                    "x" + _ratio(ours["peak_rss_mb"], ngx["peak_rss_mb"]),
                    "",
                    "",
                    "",
                    "",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if k == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def smoke_failures(bench: Bench) -> list[str]:
    """Why --smoke fails: our relay lost media mid-stream or at the tail, or damaged it."""
    problems = []
    for run in bench.workload:
        if run.relay != "ours":
            continue
        for dest in run.destinations:
            where = f"ours N={run.n} rep {run.rep} publisher {dest['publisher']}"
            where += f" destination {dest['destination']}"
            if not dest["recordings"]:
                problems.append(f"{where}: nothing recorded")
                continue
            for track in ("video", "audio"):
                t = dest[track]
                if t["mid_ms"] or t["tail_ms"] or t["foreign"] or t["out_of_order"]:
                    problems.append(
                        f"{where}: {track} lost mid {t['mid_ms']} ms, tail {t['tail_ms']} ms,"
                        f" foreign {t['foreign']}, out of order {t['out_of_order']}"
                    )
        problems += [f"ours N={run.n} rep {run.rep}: {e}" for e in run.publisher_errors]
    return problems


def holding_main(
    args: argparse.Namespace,
    cfg: Config,
    fixture: Path,
    log: Callable[[str], None],
    load_before: tuple[float, float, float],
) -> int:
    """`--holding`: relaying against holding, per N (bench.holding)."""
    cfg.relays, cfg.ns, cfg.do_latency, cfg.do_api = ["ours"], args.holding, False, False
    bench = Bench(cfg, fixture, log)
    runs = []
    try:
        bench.setup()
        bench_holding.protect(bench)
        for rep in range(cfg.reps):
            for n in cfg.ns:
                log(f"holding N={n} rep {rep}")
                runs.append(bench_holding.run_holding(bench, n, rep))
    finally:
        bench.close()
    print()
    print(bench_holding.table(runs))
    print()
    print(
        f"CPU-s per stream-minute per destination of the rig-agent process tree over a"
        f" {cfg.window:g} s window, {cfg.d} destinations per stream: relaying the fixture,"
        f" then holding (publishers killed, the slate to every destination)."
    )
    for note in bench.notes:
        print(f"note: {note}")
    load_after = os.getloadavg()
    print(
        f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        " (other work on the machine skews the figures)"
    )
    result = {
        "command": sys.argv,
        "holding": [asdict(r) | {"relaying": r.relaying, "holding": r.holding} for r in runs],
        "load_average_before_after": [load_before, load_after],
        "notes": bench.notes,
    }
    json_path = args.json or cfg.out / f"holding-{time.strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {json_path}")
    return 0


def check_tools() -> list[str]:
    """External programs the benchmark drives."""
    missing = [t for t in ("ffmpeg", "nginx") if shutil.which(t) is None]
    if not RTMP_MODULE.exists():
        missing.append(f"{RTMP_MODULE} (libnginx-mod-rtmp)")
    return missing


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON."""
    args = build_parser().parse_args(argv)
    cfg = config_from(args)
    missing = check_tools()
    if missing:
        print(f"bench: missing {', '.join(missing)} (bench/run installs them)", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_before = os.getloadavg()
    log: Callable[[str], None] = lambda line: print(  # noqa: E731
        f"[{time.monotonic() - started:6.1f}s] {line}", flush=True
    )
    fixture = make_fixture(cfg.out)
    log(f"fixture {fixture.name}")
    if args.holding:
        return holding_main(args, cfg, fixture, log, load_before)
    bench = Bench(cfg, fixture, log)
    try:
        bench.setup()
        bench.run()
    finally:
        bench.close()
    wall = time.monotonic() - started
    rows = summarise(bench)
    print()
    print(table(rows))
    print()
    print(
        f"CPU: relay process tree (ours: rig-agent; rig itself below), per stream-minute per"
        f" destination, over a {cfg.window:g} s window after {cfg.warmup:g} s warm-up;"
        f" medians of {cfg.reps} repetition(s). Lost media: worst destination, worst"
        f" repetition."
    )
    if cfg.do_latency:
        print(
            f"Latency: added to the direct path measured at the same time, p50/p99/max"
            f" medians over repetitions, first {cfg.latency_skip:g} s of each"
            f" {cfg.latency_seconds:g} s publish left out; N=1 rows: no background stream"
            + (
                f", N={cfg.latency_bg} rows: {cfg.latency_bg} background streams through the"
                f" same relay"
                if cfg.latency_bg
                else ""
            )
            + ". First video: from the publisher's TCP connect to the first video frame at the"
            " destination (one destination)."
        )
    for row in rows:
        print(
            f"{row['relay']} N={row['n']}: {row['cpu_per_delivered_stream_min_dest']:.3f} CPU-s"
            f" per delivered stream-min/dest; kernel {100 * row['cpu_system_share']:.0f} % of"
            f" its CPU, main thread {100 * row['main_thread_share']:.0f} %;"
            f" publishers at {row['realtime_ratio_min']:.2f} x real time; recorded"
            f" {row['delivered_ratio_min']:.2f} x (D x what was sent) in the window;"
            f" drained in {row['drain_s_max']:.1f} s"
            + (f"; rig serve CPU {row['rig_cpu_s']:.2f} s" if row["rig_cpu_s"] is not None else "")
            + (f"; {row['damaged_destinations']} damaged destination(s)"
               if row["damaged_destinations"] else "")
            + (f"; {row['publisher_errors']} publisher error(s)" if row["publisher_errors"] else "")
            + (f"; {row['thumbnails']:.0f} thumbnails in the window took"
               f" {row['thumbnail_cpu_s']:.3f} CPU-s"
               + (" (every picture watched)" if row["watched"] else " (nobody watching)")
               if row["thumbnails"] is not None else "")
            + (f"; per-message path {row['agent_path']}" if row["agent_path"] else "")
        )  # fmt: skip
    for fig in bench.api:
        print(
            f"API {fig.route}: {fig.rps:.0f} req/s, p50 {fig.p50_ms:.2f} ms, p99"
            f" {fig.p99_ms:.2f} ms, max {fig.max_ms:.1f} ms, errors {fig.errors},"
            f" rig CPU {fig.rig_cpu_ms_per_request} ms/request"
            f" ({fig.connections} connections, {cfg.api_threads} threads,"
            f" {cfg.api_seconds} s)"
        )
    thumbnails = bench_thumbnails.run() if args.thumbnails else []
    if bench.profile:
        print(f"profile: {json.dumps(bench.profile)[:3000]}")
    for note in bench.notes:
        print(f"note: {note}")
    load_after = os.getloadavg()
    print(
        f"wall time {wall:.0f} s; load average (1 min) {load_before[0]:.1f} before,"
        f" {load_after[0]:.1f} after (other work on the machine skews the figures)"
    )
    result = {
        "command": sys.argv,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "wall_seconds": round(wall, 1),
        "load_average_before_after": [load_before, load_after],
        "summary": rows,
        "workload": [asdict(r) for r in bench.workload],
        "latency": [asdict(r) for r in bench.latency],
        "api": [f.as_dict() for f in bench.api],
        "profile": bench.profile,
        "thumbnails": [asdict(t) for t in thumbnails],
        "notes": bench.notes,
    }
    json_path = args.json or cfg.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {json_path}")
    if args.smoke:
        problems = smoke_failures(bench)
        for problem in problems:
            print(f"SMOKE FAIL: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
