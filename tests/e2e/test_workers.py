"""`rig-agent --workers 2`, end to end: real ffmpeg publishers, real nginx-rtmp and a
wire-exact recorder as destinations, a real rig.

The kernel spreads connections over the workers (SO_REUSEPORT, by a hash of the
addresses): a test cannot choose the worker a connection lands on, so the tests that
need a connection on a given worker publish again until one lands there (each attempt
lands on either worker with even odds; the caps make a false failure less likely than
one in a thousand)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .flvtools import AUDIO, SCRIPT, VIDEO, assert_whole_stream, parse_flv
from .harness import Agent, Publish, StreamInfo, dest_keys, key_id, wait_until

pytestmark = pytest.mark.e2e

# One stream per worker before the next (packing, agent/hub.py): two streams, one on each.
WORKERS = {"workers": 2, "heartbeat_interval": 1, "pack_streams": 1}
ATTEMPTS = 12


def accepted_on(agent: Agent, stream: StreamInfo) -> list[int]:
    """The workers that accepted a publish of `stream`, in order."""
    pattern = rf"\(worker (\d+)\): publish of stream {key_id(stream.key)} from \S+ accepted"
    return [int(n) for n in re.findall(pattern, agent.log())]


def handed_over(agent: Agent, to: int) -> int:
    """How many connections were handed to worker `to`."""
    return agent.count(rf"\(worker \d+\): RTMP connection from \S+ handed to worker {to}\b")


def worker_pids(agent: Agent) -> dict[int, int]:
    """Each worker's latest pid, from the supervisor's log."""
    started = re.findall(r"worker (\d+) started \(pid (\d+)\)", agent.log())
    return {int(n): int(pid) for n, pid in started}


def scrape(agent: Agent, path: str = "/metrics") -> str:
    listen = agent.env["RIG_AGENT_HTTP_LISTEN"]
    with urllib.request.urlopen(f"http://{listen}{path}", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in the metrics"
    return float(match.group(1))


def live_on_both_workers(e2e, stack, media) -> dict[int, tuple[StreamInfo, Publish]]:
    """Publish new streams until each worker relays one; returns one per worker. The
    streams have no disconnect protection: a publish that landed on a worker already
    taken is killed, and must end at once rather than be held with the slate."""
    per_worker: dict[int, tuple[StreamInfo, Publish]] = {}
    for _ in range(ATTEMPTS):
        stream = stack.api.stream(dest_keys(len(per_worker)), {"enabled": False})
        publish = e2e.publish(media, stack.agent, stream.key)
        wait_until(lambda s=stream: accepted_on(stack.agent, s), 20, "the publish accepted")
        worker = accepted_on(stack.agent, stream)[0]
        if worker in per_worker:
            publish.process.kill()
            continue
        per_worker[worker] = (stream, publish)
        if len(per_worker) == 2:
            return per_worker
    raise AssertionError(f"every publish landed on worker {list(per_worker)}")


def test_streams_on_both_workers_metrics_kicks_and_destination_changes(e2e, long_media):
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    live = live_on_both_workers(e2e, stack, long_media)
    (first, first_publish), (second, second_publish) = live[1], live[2]
    for stream in (first, second):
        for service in ("YouTube", "Twitch"):
            agent.wait_for_log(agent.destination_pattern(stream, service) + " live on")

    # One agent towards rig and Prometheus: both streams live, every worker counted.
    text = scrape(agent)
    assert sample(text, "rig_agent_live_ingests") == 2
    assert sample(text, "rig_agent_workers") == 2
    assert sample(text, "rig_agent_publishes_total") >= 2
    assert sample(text, 'rig_agent_destinations{state="live"}') == 4
    assert sample(text, "rig_agent_ingest_bytes_total") > 0
    health = scrape(agent, "/healthz")
    assert '"ready": 2' in health and '"total": 2' in health
    for stream in (first, second):
        assert stack.api.call("GET", f"/streams/{stream.id}")["isStreaming"] is True

    # A destination change reaches the worker relaying that stream (worker 2) ...
    twitch = second.destinations["Twitch"]
    stack.api.call("PATCH", f"/streams/{second.id}/destination/{twitch['id']}", {"isActive": False})
    ended = rf"\(worker 2\): stream {key_id(second.key)} -> Twitch #{twitch['id']}: stream ended"
    agent.wait_for_log(ended, timeout=10)
    # ... and a key rotation kicks the publisher on worker 1 within a heartbeat.
    stack.api.call("POST", f"/streams/{first.id}/changeKey")
    assert first_publish.wait(10) != 0, "the publisher of the rotated key was not kicked"
    agent.wait_for_log(rf"\(worker 1\): stream {key_id(first.key)}: rig revoked the claim")

    # The other stream was not touched: it plays to its end on YouTube.
    assert second_publish.wait(60) == 0, second_publish.stderr
    agent.wait_closed(second, ("YouTube",))
    keys = {s: d["streamKey"] for s, d in second.destinations.items()}
    assert_whole_stream(stack.youtube.recording(keys["YouTube"]), long_media.flv, long_media.info)
    assert agent.count(r"rig revoked the claim") == 1


def test_sigterm_drains_every_worker(e2e, long_media):
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    live = live_on_both_workers(e2e, stack, long_media)
    for stream, _ in live.values():
        for service in ("YouTube", "Twitch"):
            agent.wait_for_log(agent.destination_pattern(stream, service) + " live on")
    pids = worker_pids(agent)
    time.sleep(2)
    agent.process.signal(signal.SIGTERM)
    assert agent.process.wait(20) == 0, agent.log()[-3000:]
    for stream, publish in live.values():
        agent.wait_closed(stream, timeout=0)  # every destination unpublished and closed
        wait_until(lambda p=publish: p.returncode is not None, 10, "ffmpeg to notice")
        assert stack.api.call("GET", f"/streams/{stream.id}")["isStreaming"] is False
    for worker, pid in pids.items():
        assert not pid_alive(pid), f"worker {worker} outlived the agent"
    assert "agent stopped" in agent.log()
    assert "restarting" not in agent.log()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_worker_is_restarted_and_its_stream_can_come_back(e2e, long_media, media):
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    stream = stack.api.stream(dest_keys())
    publish = e2e.publish(long_media, agent, stream.key)
    wait_until(lambda: accepted_on(agent, stream), 20, "the publish accepted")
    worker = accepted_on(agent, stream)[0]
    agent.wait_for_log(agent.destination_pattern(stream, "YouTube") + " live on")
    victim = worker_pids(agent)[worker]

    def counted() -> tuple[int, int]:
        [session] = stack.api.call("GET", f"/streams/{stream.id}/sessions")
        youtube = [d for d in session["destinations"] if d["service"] == "YouTube"]
        return session["ingest"]["bytesIn"], youtube[0]["bytesSent"] if youtube else 0

    # rig tells a restarted count by its figures going back: the first worker has counted
    # more than the second will (all of `media`) before it dies.
    more = media.path.stat().st_size * 1.1
    wait_until(lambda: min(counted()) > more, 20, "the first worker's figures past `media`")
    before = counted()

    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    assert publish.wait(20) != 0  # its publisher's connection died with it
    agent.wait_for_log(rf"worker {worker} \(pid {victim}\) exited with code -9")
    wait_until(lambda: worker_pids(agent)[worker] != victim, 20, "a new worker")
    agent.wait_for_log(rf"worker {worker} listening on port", count=2)
    text = scrape(agent)
    assert sample(text, "rig_agent_worker_restarts_total") == 1
    assert sample(text, "rig_agent_workers") == 2
    assert agent.process.running

    # The claim was left to expire, and rig gives this agent the same claim back: the
    # encoder reconnecting at once (to any worker) is not locked out, same session.
    again = e2e.publish(media, agent, stream.key)
    wait_until(lambda: len(accepted_on(agent, stream)) == 2, 20, "the publish back")
    assert again.wait(60) == 0, again.stderr
    agent.wait_closed(stream)
    sessions = stack.api.call("GET", f"/streams/{stream.id}/sessions")
    assert len(sessions) == 1, sessions
    # The new worker counted from 0; the session adds its figures to the first worker's.
    bytes_in, sent = counted()
    assert bytes_in >= before[0] + media.path.stat().st_size * 0.95, (before, bytes_in)
    assert sent >= before[1] + media.path.stat().st_size * 0.9, (before, sent)


def test_a_hung_worker_is_killed_and_restarted(e2e):
    """A worker whose event loop answers nothing (SIGSTOP stands in for a hang) takes the
    connections the kernel deals it and serves none: the supervisor, which asks every
    worker for a sign of life, kills it after RIG_AGENT_WORKER_HANG_TIMEOUT and starts a
    new one; /healthz counts it as not ready meanwhile."""
    stack = e2e.stack(**WORKERS, worker_hang_timeout=4)
    agent = stack.agent

    def health() -> str:
        try:
            return scrape(agent, "/healthz")
        except OSError:  # the listener not up yet
            return ""

    wait_until(lambda: '"ready": 2' in health(), 20, "two workers ready")
    victim = worker_pids(agent)[1]
    subprocess.run(["kill", "-STOP", str(victim)], check=True)
    try:
        wait_until(lambda: '"ready": 1' in health(), 10, "the hung worker not ready")
        agent.wait_for_log(rf"worker 1 \(pid {victim}\) has answered nothing for", timeout=20)
        wait_until(lambda: worker_pids(agent)[1] != victim, 20, "a new worker")
        agent.wait_for_log(r"worker 1 listening on port", count=2)
        wait_until(lambda: '"ready": 2' in health(), 10, "both ready again")
        assert sample(scrape(agent), "rig_agent_worker_restarts_total") == 1
        assert not pid_alive(victim)
    finally:
        subprocess.run(["kill", "-KILL", str(victim)], check=False, capture_output=True)


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def memory(pid: int) -> dict[str, int]:
    """Rss and Pss of a process, kB."""
    fields = (line.split() for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines())
    return {f[0].rstrip(":"): int(f[1]) for f in fields if f[0] in ("Rss:", "Pss:")}


def test_the_workers_are_forked_by_the_zygote_and_share_what_they_imported(e2e):
    """The supervisor forks one zygote before anything starts; the zygote forks every
    worker, so the pages of what they imported are shared: a worker's proportional share
    of its memory (PSS) is well under what it maps (RSS). Started as new interpreters
    they measured PSS 70 % of RSS (45 of 64 MB), forked 40 % (16 of 41 MB)."""
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    agent.wait_for_log(r"worker 2 listening on port")
    (zygote,) = children(agent.process.pid)
    assert sorted(children(zygote)) == sorted(worker_pids(agent).values())
    # Named for top and ps -e, though forked from the supervisor.
    assert Path(f"/proc/{zygote}/comm").read_text() == "agent-zygote\n"
    for index, pid in worker_pids(agent).items():
        assert Path(f"/proc/{pid}/comm").read_text() == f"agent-worker-{index}\n"
    for pid in worker_pids(agent).values():
        used = memory(pid)
        assert used["Pss"] < 0.55 * used["Rss"], used


def test_a_killed_zygote_stops_the_agent_with_an_error(e2e):
    """Without its zygote no worker can be restarted: the agent ends its workers (they
    drain as on SIGTERM) and exits 1, for its service manager to start it again."""
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    agent.wait_for_log(r"worker 2 listening on port")
    (zygote,) = children(agent.process.pid)
    workers = list(worker_pids(agent).values())
    subprocess.run(["kill", "-KILL", str(zygote)], check=True)
    assert agent.process.wait(30) == 1, agent.log()[-3000:]
    agent.wait_for_log(rf"the zygote \(pid {zygote}\) ended: no worker can be started")
    agent.wait_for_log(r"agent stopped: the zygote ended")
    for pid in workers:
        wait_until(lambda p=pid: not pid_alive(p), 20, f"worker {pid} to end")


def test_a_duplicate_is_refused_whichever_worker_it_reaches(e2e, long_media, media):
    stack = e2e.stack(**WORKERS)
    agent = stack.agent
    keys = dest_keys()
    stream = stack.api.stream(keys)
    publish = e2e.publish(long_media, agent, stream.key)
    wait_until(lambda: accepted_on(agent, stream), 20, "the publish accepted")
    holder = accepted_on(agent, stream)[0]
    kid = key_id(stream.key)

    attempts = 0
    while handed_over(agent, holder) == 0 or attempts < 2:
        assert attempts < ATTEMPTS, "no duplicate reached the other worker"
        attempts += 1
        intruder = e2e.publish(media, agent, stream.key)
        assert intruder.wait(20) != 0, "an active duplicate was accepted"
        refused = rf"\(worker {holder}\): refused publish of stream {kid} .*already live here"
        agent.wait_for_log(refused, count=attempts)
    # Every duplicate was refused by the worker holding the stream, handed over or not.
    assert agent.count(rf"refused publish of stream {kid}") == attempts
    assert accepted_on(agent, stream) == [holder]

    assert publish.wait(60) == 0, publish.stderr  # the first publisher was never hurt
    agent.wait_closed(stream)
    assert_whole_stream(stack.youtube.recording(keys["YouTube"]), long_media.flv, long_media.info)


def test_a_hung_publisher_is_replaced_whichever_worker_the_new_one_reaches(e2e, long_media):
    youtube = e2e.receiver("live2")
    kick = e2e.wire_recorder("app")
    rig = e2e.rig(YouTube=youtube.url, Kick=kick.url)
    agent = e2e.agent(rig, **WORKERS)
    keys = {"YouTube": dest_keys()["YouTube"], "Kick": f"kick-{time.monotonic_ns()}"}
    api = e2e.api(rig)
    stream = api.stream(keys)
    current = e2e.publish(long_media, agent, stream.key)
    wait_until(lambda: accepted_on(agent, stream), 20, "the publish accepted")
    holder = accepted_on(agent, stream)[0]
    for service in keys:
        agent.wait_for_log(agent.destination_pattern(stream, service) + " live on")
    replaces = rf"\(worker {holder}\): stream {key_id(stream.key)}: the publish from \S+ replaces"

    rounds = 0
    stopped: list[Publish] = []
    while handed_over(agent, holder) == 0 or rounds < 2:
        assert rounds < ATTEMPTS, "no new publisher reached the other worker"
        rounds += 1
        time.sleep(1)
        current.process.send_signal(signal.SIGSTOP)  # hung: its connection stays open, silent
        stopped.append(current)
        time.sleep(2.5)
        started = time.monotonic()
        current = e2e.publish(long_media, agent, stream.key)
        agent.wait_for_log(replaces, count=rounds, timeout=10)
        assert time.monotonic() - started < 5  # at once: not after the 30 s idle timeout
    for hung in stopped:  # the agent closed them: woken, they find their connection gone
        hung.process.send_signal(signal.SIGCONT)
        assert hung.wait(20) != 0
    assert current.wait(60) == 0, current.stderr
    agent.wait_closed(stream)

    # One relay all along: one publish at each destination, one session at rig.
    assert len(youtube.recordings(keys["YouTube"])) == 1
    (recording,) = (parse_flv(p) for p in kick.recordings(keys["Kick"]))
    assert agent.count(r"stream ended, destination closed") == 2
    assert len(api.call("GET", f"/streams/{stream.id}/sessions")) == 1
    assert accepted_on(agent, stream) == [holder]
    # Each new publisher starts at timestamp 0 again and disconnect protection (on by
    # default) continues the broadcast's timeline, so no track's time goes back; from each
    # switch on (the new publisher's onMetaData: the slate sends none), the destination
    # gets the new publisher's sequence headers before its media, from a keyframe.
    tags = recording.tags
    for kind in (AUDIO, VIDEO):
        stamps = [t.timestamp for t in tags if t.type == kind]
        assert stamps == sorted(stamps), f"type {kind} went back in time"
    switches = [i for i in range(1, len(tags)) if tags[i].type == SCRIPT]
    assert len(switches) == rounds, switches
    for start in switches:
        head = tags[start : start + 3]
        assert all(t.is_sequence_header for t in head[1:]), head
        assert next(t for t in tags[start:] if t.type == 9 and not t.is_sequence_header).is_keyframe


def test_one_worker_is_one_process_and_replaces_a_hung_publisher(e2e, long_media):
    """`--workers 1`: one process as before (no supervisor), and the hung publisher of
    issue 12 replaced there too."""
    stack = e2e.stack(workers=1)
    agent = stack.agent
    stream = stack.api.stream(dest_keys())
    hung = e2e.publish(long_media, agent, stream.key)
    agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from \S+ accepted")
    assert agent.processes() == [agent.process.pid]  # no workers
    assert "(worker" not in agent.log() and "supervisor" not in agent.log()
    agent.wait_for_log(agent.destination_pattern(stream, "YouTube") + " live on")
    time.sleep(1)
    hung.process.send_signal(signal.SIGSTOP)
    time.sleep(2.5)
    started = time.monotonic()
    current = e2e.publish(long_media, agent, stream.key)
    agent.wait_for_log(rf"stream {key_id(stream.key)}: the publish from \S+ replaces", timeout=10)
    assert time.monotonic() - started < 5
    hung.process.send_signal(signal.SIGCONT)
    assert hung.wait(20) != 0
    assert current.wait(60) == 0, current.stderr
    agent.wait_closed(stream)
    keys = {s: d["streamKey"] for s, d in stream.destinations.items()}
    assert len(stack.youtube.recordings(keys["YouTube"])) == 1  # one publish there
    assert len(stack.api.call("GET", f"/streams/{stream.id}/sessions")) == 1


def test_an_address_gets_the_agents_connection_limit_not_one_per_worker(e2e):
    """The per-address limits are the agent's: with two workers, an address holds at
    most RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS connections (one more at worst: each
    worker takes its half, rounded up), not twice it. Silent connections, as a
    slowloris opens them; the ones over the limit are closed at accept."""
    limit = 4
    stack = e2e.stack(**WORKERS, max_unauthenticated_per_address=limit, handshake_timeout=60)
    agent = stack.agent
    tries = 16
    sockets = [socket.create_connection(("127.0.0.1", agent.port), timeout=5) for _ in range(tries)]
    try:
        refused = 'rig_agent_connections_refused_total{reason="address_unauthenticated"}'
        wait_until(lambda: sample(scrape(agent), refused) >= tries - limit - 1, 10, "refusals")
        time.sleep(0.5)  # any late refusal is counted too
        kept = []
        for sock in sockets:
            sock.setblocking(False)
            try:
                kept.append(sock.recv(1) != b"")  # b"": closed by the agent
            except BlockingIOError:
                kept.append(True)  # open, waiting for our handshake
            except ConnectionResetError:
                kept.append(False)
        # At least one per worker (the kernel spreads them: 16 on one worker is a 1 in
        # 32,768 chance), at most the limit and one.
        assert 2 <= sum(kept) <= limit + 1, kept
        assert sample(scrape(agent), refused) == tries - sum(kept)
    finally:
        for sock in sockets:
            sock.close()
