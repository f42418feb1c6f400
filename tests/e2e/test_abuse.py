"""What strangers may cost a real agent (issue 12, items 2, 3 and 4).

On loopback every 127.x.y.z is an address of its own: the attacks come from 127.0.0.2
(or from 100 addresses, to measure memory without the per-address limits), the
legitimate streamers from 127.0.0.1 (ffmpeg's default source address).

- Memory: connections that never publish park partial messages as large as the agent
  allows. Before: 8 MiB messages on two chunk streams each, about 20 MB per connection
  (100 connections took an agent from 59 MB to 1.9 GB). Now a stranger's message is
  at most 64 KiB, its partial messages 128 KiB, all strangers together 32 MiB.
- Slowloris: one address holds every slot it can and floods new connections, while 10
  ffmpeg publishes from another address get in and are relayed whole; the log stays
  short (refusals are summed up), /metrics keeps the count.
- Wrong keys: guessing from one address reaches rig for a burst only, then the agent
  refuses by itself; the same wrong key again is refused without asking rig; a
  legitimate key on another address is not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
import urllib.request
from pathlib import Path

import pytest

from agent.rtmp import ClientHandshake, ClientSession, PublishRefused, PublishStarted
from agent.rtmp import message as msg
from agent.rtmp.amf0 import encode
from agent.rtmp.chunk import ChunkWriter
from tests.agent.test_agent_ops import samples

from .flvtools import assert_whole_stream
from .harness import Agent, dest_keys, key_id, wait_until

pytestmark = pytest.mark.e2e

ATTACKER = "127.0.0.2"
MiB = 1024 * 1024


def metrics(agent: Agent, name: str) -> dict[str, float]:
    """Samples of one metric from the agent's /metrics, by label set."""
    url = f"http://{agent.env['RIG_AGENT_HTTP_LISTEN']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return samples(resp.read().decode(), name)


def peak_rss_mb(agent: Agent) -> float:
    """The peak RSS of the agent: its process and its workers' (each its own peak)."""
    total = 0
    for pid in agent.processes():
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        total += int(match.group(1))
    return total / 1024


async def handshaken(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from `source` that did the RTMP handshake and sent `connect`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    handshake = ClientHandshake()
    writer.write(handshake.start())
    while not handshake.done:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed during the handshake")
        writer.write(handshake.feed(data))
    chunks = ChunkWriter()
    connect = {"app": "live", "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1:{port}/live"}
    writer.write(chunks.write(msg.Message(msg.COMMAND_AMF0, 0, 0, encode("connect", 1.0, connect))))
    await writer.drain()
    return reader, writer


def partial_messages(message_size: int, chunk_size: int) -> bytes:
    """Two messages of `message_size` bytes but their last chunks, after the chunk size:
    the same bytes for every connection, so made once (made per connection, 16 MiB
    each, they held the attacker's event loop long enough for the agent to time out
    the handshakes of the connections waiting behind them)."""
    chunks = ChunkWriter()
    out = [chunks.set_chunk_size(chunk_size)]
    last = message_size % chunk_size or chunk_size
    for csid in (4, 5):
        data = chunks.write(msg.Message(msg.VIDEO, 1, 0, bytes(message_size)), csid)
        out.append(data[: -(1 + last)])  # the last chunk has a 1-byte header
    return b"".join(out)


async def park(port: int, source: str, partial: bytes) -> asyncio.StreamWriter | None:
    """From `source`: the `partial` messages. The connection if the agent still holds it
    a second later, else None."""
    try:
        reader, writer = await handshaken(port, source)
    except (ConnectionError, OSError):
        return None
    writer.write(partial)
    try:
        await writer.drain()
        async with asyncio.timeout(1.0):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return writer  # silent, and still open: parked
    except (ConnectionError, OSError):
        pass
    writer.transport.abort()
    return None


async def parking_attack(port: int, connections: int, message_size: int, chunk_size: int) -> int:
    """`connections` parking connections at once, each from an address of its own;
    returns how many the agent held (then closes them)."""
    partial = partial_messages(message_size, chunk_size)
    parked = await asyncio.gather(
        *(park(port, f"127.0.1.{n + 1}", partial) for n in range(connections))
    )
    held = [writer for writer in parked if writer is not None]
    for writer in held:
        writer.transport.abort()
    return len(held)


def test_strangers_cannot_make_the_agent_hold_memory(e2e):
    stack = e2e.stack()
    agent = stack.agent
    time.sleep(1)
    before = peak_rss_mb(agent)
    # The attack of the issue: 8 MiB partial messages (the publishers' limit).
    held = asyncio.run(parking_attack(agent.port, 100, 8 * MiB, 64 * 1024))
    big = peak_rss_mb(agent)
    # The best a stranger can do now: just under the limits, on 100 addresses.
    held_small = asyncio.run(parking_attack(agent.port, 100, 63 * 1024, 4096))
    small = peak_rss_mb(agent)
    print(f"\nagent peak RSS: {before:.0f} MB at start, {big:.0f} MB after 100 connections"
          f" parking 2 x 8 MiB, {small:.0f} MB after 100 parking 2 x 63 KiB")  # fmt: skip
    assert held == 0  # each was closed at its first oversized message header
    assert held_small == 100
    assert big - before < 32, (before, big)
    assert small - before < 64, (before, small)

    # Each worker counts what it closed; one still busy with the attack answers the
    # supervisor's scrape late, so the agent-wide sum is polled for, not read once.
    deadline = time.monotonic() + 30
    while True:
        refused = metrics(agent, "rig_agent_connections_refused_total")
        if refused['{reason="protocol_error"}'] >= 100 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert refused['{reason="protocol_error"}'] >= 100, refused
    assert agent.process.running


async def slowloris(port: int, seconds: float) -> dict[str, int]:
    """From ATTACKER: hold as many connections as the agent lets (trickling a byte now
    and then), and open new ones as fast as possible; for `seconds`."""
    held: list[asyncio.StreamWriter] = []
    counts = {"opened": 0, "refused": 0}
    deadline = asyncio.get_running_loop().time() + seconds

    async def one() -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
        except OSError:
            counts["refused"] += 1
            return
        counts["opened"] += 1
        writer.write(b"\x03")  # C0, and then C1 a byte at a time: forever
        held.append(writer)

    async def trickle() -> None:
        while asyncio.get_running_loop().time() < deadline:
            for writer in list(held):
                if writer.is_closing():
                    held.remove(writer)
                    continue
                with contextlib.suppress(OSError):
                    writer.write(b"\x00")
            await asyncio.sleep(1)

    trickler = asyncio.create_task(trickle())
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.gather(*(one() for _ in range(50)))
        held[:] = [w for w in held if not w.is_closing()]
        await asyncio.sleep(0.01)
    await trickler
    for writer in held:
        writer.transport.abort()
    return counts


def test_one_address_cannot_lock_others_out(e2e, media):
    stack = e2e.stack()
    agent = stack.agent
    keys = [dest_keys(n) for n in range(10)]
    streams = [stack.api.stream({"YouTube": k["YouTube"]}) for k in keys]
    lines_before = len(agent.log().splitlines())

    async def attack_while_publishing() -> dict[str, int]:
        attack = asyncio.create_task(slowloris(agent.port, seconds=media.duration + 6))
        await asyncio.sleep(3)  # the attacker holds everything it can by now
        publishes = [e2e.publish(media, agent, s.key) for s in streams]
        for publish in publishes:
            rc = await asyncio.to_thread(publish.wait, 60)
            assert rc == 0, publish.stderr
        return await attack

    counts = asyncio.run(attack_while_publishing())
    for stream, key in zip(streams, keys, strict=True):
        agent.wait_closed(stream, ("YouTube",))
        assert_whole_stream(stack.youtube.recording(key["YouTube"]), media.flv, media.info)
    assert counts["opened"] > 1000, counts
    refused = metrics(agent, "rig_agent_connections_refused_total")
    assert refused['{reason="address_unauthenticated"}'] > 500, refused
    log = agent.log().splitlines()[lines_before:]
    # Each publish logs a few lines; refusals are 20 lines per 10 s and a summary.
    print(f"\n{counts['opened']} attacking connections, {len(log)} log lines")
    assert len(log) < 10 * 12 + 60, "\n".join(log[-50:])
    assert any("more refusal(s) not logged" in line for line in log)


async def try_publish(port: int, key: str, source: str) -> object:
    """Publish with our client from `source`; PublishStarted or PublishRefused."""
    session = ClientSession("live", f"rtmp://127.0.0.1:{port}/live", key)
    session.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        async with asyncio.timeout(10):
            while True:
                writer.write(session.data_to_send())
                data = await reader.read(65536)
                assert data, "the agent closed the connection"
                for event in session.receive_data(data):
                    if isinstance(event, PublishStarted | PublishRefused):
                        return event
    finally:
        writer.close()


def test_wrong_keys_cost_rig_a_burst_only(e2e):
    stack = e2e.stack()
    agent = stack.agent
    # Without disconnect protection: the legitimate publish below closes its connection
    # without an unpublish and must end at once, not be held for the grace.
    good = stack.api.stream(dest_keys(), {"enabled": False})
    claims_before = stack.rig.process.log().count("/claim ->")

    async def guess() -> list[object]:
        return [
            await try_publish(agent.port, secrets.token_urlsafe(16), ATTACKER) for _ in range(40)
        ]

    answers = asyncio.run(guess())
    assert all(isinstance(a, PublishRefused) for a in answers)
    assert [a.code for a in answers[:10]] == ["NetStream.Publish.BadName"] * 10
    assert {a.code for a in answers[10:]} == {"NetStream.Publish.Denied"}
    assert "Too many refused publishes" in answers[-1].description
    refused = metrics(agent, "rig_agent_publishes_refused_total")
    assert refused['{reason="unknown_key"}'] == 10
    assert refused['{reason="throttled"}'] == 30
    wait_until(lambda: stack.rig.process.log().count("/claim ->") >= claims_before + 10, 5, "log")
    assert stack.rig.process.log().count("/claim ->") == claims_before + 10  # rig saw 10

    # The same wrong key twice from another address: rig is asked once.
    wrong = secrets.token_urlsafe(16)
    first = asyncio.run(try_publish(agent.port, wrong, "127.0.0.3"))
    again = asyncio.run(try_publish(agent.port, wrong, "127.0.0.3"))
    assert isinstance(first, PublishRefused) and isinstance(again, PublishRefused)
    refused = metrics(agent, "rig_agent_publishes_refused_total")
    assert refused['{reason="unknown_key"}'] == 11
    assert refused['{reason="unknown_key_cached"}'] == 1
    assert wrong not in agent.log()

    # A legitimate streamer elsewhere is not affected while the guesser is throttled.
    started = asyncio.run(try_publish(agent.port, good.key, "127.0.0.1"))
    assert isinstance(started, PublishStarted)
    agent.wait_for_log(rf"stream {key_id(good.key)}: publish from 127\.0\.0\.1:\d+ ended")
    agent.wait_for_log(rf"stream {key_id(good.key)} ended")  # not held for a grace


def test_a_reactivated_stream_is_accepted_once_the_refusal_expired(e2e):
    """The negative cache is short (RIG_AGENT_REFUSED_KEY_TTL, 5 s): a stream switched
    on a moment after a refused publish is accepted on the next try after it."""
    stack = e2e.stack(refused_key_ttl=2)
    agent = stack.agent
    stream = stack.api.stream(dest_keys())
    stack.api.call("PATCH", f"/streams/{stream.id}", {"isActive": False})
    refused = asyncio.run(try_publish(agent.port, stream.key, "127.0.0.1"))
    assert isinstance(refused, PublishRefused)
    stack.api.call("PATCH", f"/streams/{stream.id}", {"isActive": True})
    time.sleep(2.2)
    started = asyncio.run(try_publish(agent.port, stream.key, "127.0.0.1"))
    assert isinstance(started, PublishStarted)
