"""The zygote (agent/zygote.py) with a stand-in for the worker: each forked process reads
the exit status it should end with from its channel. Real workers under a real
supervisor: tests/e2e/test_workers.py."""

import asyncio
import os
import signal
import socket
import time

import pytest

from agent.zygote import Zygote, ZygoteGone


def exit_with_what_it_is_told(channel: socket.socket, index: int) -> int:
    channel.sendall(f"{index} {os.getppid()}\n".encode())
    told = channel.recv(16)
    return int(told) if told else 99


async def start(zygote: Zygote, index: int) -> tuple[object, socket.socket, str]:
    ours, theirs = socket.socketpair()
    try:
        process = await zygote.spawn(index, theirs)
    except ZygoteGone:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    hello = (await asyncio.get_running_loop().sock_recv(ours, 64)).decode()
    return process, ours, hello


async def test_workers_are_forked_reported_and_reaped_with_their_status() -> None:
    zygote = Zygote.fork(exit_with_what_it_is_told)
    try:
        first, first_channel, hello = await start(zygote, 1)
        assert hello == f"1 {zygote.pid}\n"  # forked by the zygote, not by us
        second, second_channel, _ = await start(zygote, 2)
        assert first.pid != second.pid != zygote.pid

        first_channel.send(b"3")
        assert await asyncio.wait_for(first.wait(), 10) == 3
        assert first.returncode == 3
        with pytest.raises(ProcessLookupError):  # reaped: its pid is no longer its own
            first.kill()

        second.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(second.wait(), 10) == -signal.SIGKILL
        for channel in (first_channel, second_channel):
            channel.close()
    finally:
        zygote.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(zygote.pid, os.WNOHANG)  # closing it reaped it


async def test_a_zygote_killed_ends_its_workers_and_starts_no_more() -> None:
    zygote = Zygote.fork(exit_with_what_it_is_told)
    try:
        worker, channel, _ = await start(zygote, 1)
        os.kill(zygote.pid, signal.SIGKILL)
        assert await asyncio.wait_for(worker.wait(), 10) is None  # nobody could tell
        assert zygote.gone
        with pytest.raises(ZygoteGone):
            await start(zygote, 2)
        # The worker was asked to end (SIGTERM): its channel closes.
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(channel, 16), 10) == b""
        channel.close()
    finally:
        zygote.close()


async def test_a_worker_that_ends_at_once_is_still_reported() -> None:
    """Its exit can reach us in the same read as its start."""
    zygote = Zygote.fork(lambda channel, index: 5)
    ours, theirs = socket.socketpair()
    try:
        spawning = asyncio.create_task(zygote.spawn(1, theirs))
        await asyncio.sleep(0)  # the request is sent
        time.sleep(0.5)  # the loop held: "started" and "exited" both wait to be read
        process = await spawning
        assert await asyncio.wait_for(process.wait(), 5) == 5
    finally:
        theirs.close()
        ours.close()
        zygote.close()
