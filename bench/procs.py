"""Child processes and process-tree accounting from /proc: CPU seconds and resident memory.

A relay is measured as its whole process tree (the root process and every descendant):
CPU is utime + stime + cutime + cstime of each live member (so children that already
exited and were reaped still count, through their parent), memory is the sum of VmRSS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from signal import SIGTERM

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- /proc reading


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None if it is gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return data[data.rfind(b")") + 2 :].decode().split()


def children_map() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children = children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process, reaped children included (0 if gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    user = int(fields[11]) + int(fields[13])
    system = int(fields[12]) + int(fields[14])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread alone (for the agent: its event loop)."""
    try:
        data = Path(f"/proc/{pid}/task/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _proc_kb(path: str, field: str) -> int:
    """A `Field:  N kB` line of a /proc file, in bytes (0 if the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS of one process in bytes (0 if it is gone or a kernel thread)."""
    return _proc_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process in bytes: its private pages, plus its share of
    the pages it shares (a library mapped by three processes counts a third in each), so
    the PSS of a process tree adds up to the memory it takes, where VmRSS counts each
    shared page once per process (0 if it is gone)."""
    return _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


def tree_cpu_times(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a whole process tree."""
    times = [cpu_times(pid) for pid in tree_pids(root)]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of a whole process tree."""
    return sum(tree_cpu_times(root))


class RssSampler:
    """Samples a process tree's resident memory every `interval` s in a thread; keeps the
    peak of its summed VmRSS (`peak`) and of its summed PSS (`peak_pss`)."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{root}", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> int:
        """Stop sampling (after one last sample); return the peak in bytes."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(5)
            self._sample()
        return self.peak

    def _sample(self) -> None:
        pids = tree_pids(self.root)
        self.peak = max(self.peak, sum(rss_bytes(pid) for pid in pids))
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(pid) for pid in pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)


# ---------------------------------------------------------------------- child processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `check` until it returns something true; raise TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment of a child: ours without RIG_* variables, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
    env.update(overrides)
    return env


class Child:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        """Start the process (its working directory is the repository)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send a signal if it is still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10, sig: int = SIGTERM) -> int | None:
        """`sig` (SIGTERM), then SIGKILL after `timeout` s; never raises."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)

    def wait_for_port(self, port: int, timeout: float = 30) -> None:
        """Wait until it listens on `port`; fail early if it exits."""

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return port_open(port)

        wait_until(ready, timeout, f"{self.name} to listen on {port}")
