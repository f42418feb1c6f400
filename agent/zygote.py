"""Worker processes forked from a copy of the agent made before anything started.

A worker started as a new interpreter imports Python, uvloop, aiohttp and PyAV anew:
~64 MB of its own before its first stream, most of them the same bytes in every worker.
So, as Chromium's zygote and gunicorn's `--preload` do, the supervisor imports the
worker's code once and then forks this process, the zygote, while it is still one
thread with no event loop. The zygote forks each worker when the supervisor asks and
reaps it when it ends. Pages no process writes to after the fork (the modules' code
objects, PyAV's libraries once relocated) stay shared by the supervisor, the zygote and
every worker; a worker freezes what it inherited (`gc.freeze`) before the garbage
collector would touch, and so copy, each object. A worker also (re)starts in
milliseconds, with nothing to import. Measured in docs/performance.md (Run J).

The zygote does nothing else. It ignores SIGINT and SIGTERM (a terminal's Ctrl-C or
systemd's stop reaches the whole process group: the workers act on them, the
supervisor stops the agent) and ends when the supervisor's end of its socket closes.

One JSON message per packet on a SOCK_SEQPACKET socketpair:

- supervisor to zygote: `{"spawn": index}`, the worker's end of its channel attached;
- zygote to supervisor: `{"started": index, "pid": pid}`, then `{"exited": pid, "code":
  code}` (as `Popen.returncode`: the exit status, or minus the signal that ended it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096
PR_SET_NAME = 15  # prctl(2)

# What a forked worker runs: (its channel to the supervisor, its index) -> exit status.
WorkerMain = Callable[[socket.socket, int], int]


def name_process(name: str) -> None:
    """Set the process's name as `top` and `ps -e` show it (Linux, 15 bytes at most):
    forked, the zygote and the workers would all show the supervisor's."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class ZygoteGone(OSError):
    """The zygote ended: no worker can be started any more."""


class ForkedProcess:
    """A worker the zygote forked, as the supervisor sees it (the parts of
    `asyncio.subprocess.Process` it uses)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = asyncio.get_running_loop().create_future()

    async def wait(self) -> int | None:
        """Its exit status (None: it outlived the zygote, which could not tell)."""
        return await asyncio.shield(self._ended)

    def send_signal(self, sig: int) -> None:
        if self._ended.done():  # reaped: the pid may be another process's by now
            raise ProcessLookupError(self.pid)
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def ended(self, code: int | None) -> None:
        self.returncode = code
        if not self._ended.done():
            self._ended.set_result(code)


class Zygote:
    """The supervisor's handle on the zygote: start it, ask it for workers."""

    def __init__(self, pid: int, control: socket.socket) -> None:
        self.pid = pid
        self._control = control
        self._starting: dict[int, asyncio.Future[ForkedProcess]] = {}  # by worker index
        self._processes: dict[int, ForkedProcess] = {}  # by pid
        self._reading = False
        self.gone = False

    @classmethod
    def fork(cls, worker_main: WorkerMain) -> Zygote:
        """Fork the zygote (call it with one thread and no event loop running)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()  # no later collection in any of them walks (and so copies) these
        pid = os.fork()
        if pid == 0:  # the zygote; never back into the supervisor's code
            ours.close()
            try:
                _serve(theirs, worker_main)
            except BaseException:
                log.exception("the zygote failed")
                os._exit(1)
            os._exit(0)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours)

    async def spawn(self, index: int, channel: socket.socket) -> ForkedProcess:
        """A new worker with `channel` as its link to the supervisor."""
        if self.gone:
            raise ZygoteGone("the zygote ended: no worker can be started")
        self._listen()
        started = asyncio.get_running_loop().create_future()
        self._starting[index] = started
        try:
            request = json.dumps({"spawn": index}).encode()
            socket.send_fds(self._control, [request], [channel.fileno()])
            return await started
        finally:
            self._starting.pop(index, None)

    def close(self) -> None:
        """Let the zygote end (the workers are the supervisor's to stop)."""
        loop = asyncio.get_running_loop()
        if self._reading:
            loop.remove_reader(self._control.fileno())
            self._reading = False
        self._control.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)  # it ends as soon as it reads the end of its socket

    def _listen(self) -> None:
        if not self._reading:
            asyncio.get_running_loop().add_reader(self._control.fileno(), self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        while True:
            try:
                packet = self._control.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                self._lost()
                return
            message = json.loads(packet)
            if "started" in message:
                # Known from here, before any other packet: its exit may be the next one.
                process = self._processes[message["pid"]] = ForkedProcess(message["pid"])
                future = self._starting.get(message["started"])
                if future is not None and not future.done():
                    future.set_result(process)
            elif "exited" in message:
                process = self._processes.pop(message["exited"], None)
                if process is not None:
                    process.ended(message["code"])

    def _lost(self) -> None:
        """The zygote is gone (killed): nothing more can be started or reaped. Its
        workers are asked to end (they drain as on any SIGTERM) and count as ended."""
        self.gone = True
        asyncio.get_running_loop().remove_reader(self._control.fileno())
        self._reading = False
        log.error("the zygote (pid %d) ended: no worker can be started any more", self.pid)
        for future in self._starting.values():
            if not future.done():
                future.set_exception(ZygoteGone("the zygote ended while starting a worker"))
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            process.ended(None)
        self._processes.clear()


# ---------------------------------------------------------------- in the zygote


def _serve(control: socket.socket, worker_main: WorkerMain) -> None:
    """Fork a worker per request and report it; report every worker that ends."""
    name_process("agent-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.devnull, "rb") as devnull:
        os.dup2(devnull.fileno(), 0)  # no worker reads the supervisor's stdin
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)

    def forget_the_zygote() -> None:
        """In a new worker: none of the zygote's, all of a plain process's."""
        selector.close()
        control.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                packet, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
                if not packet:
                    return  # the supervisor is gone
                index = json.loads(packet)["spawn"]
                pid = os.fork()
                if pid == 0:
                    forget_the_zygote()
                    _run_worker(worker_main, fds[0], index)
                for fd in fds:
                    os.close(fd)
                control.send(json.dumps({"started": index, "pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
        _reap(control)


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        control.send(json.dumps({"exited": pid, "code": code}).encode())


def _run_worker(worker_main: WorkerMain, channel_fd: int, index: int) -> None:
    """The forked worker's whole life; it never returns into the zygote's loop."""
    gc.freeze()  # first: what it inherited stays shared (a collection would copy it)
    name_process(f"agent-worker-{index}")
    code = 1
    try:
        code = worker_main(socket.socket(fileno=channel_fd), index)
    except SystemExit as exc:  # sys.exit(): None is success, as in any process
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):  # os._exit flushes nothing
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
