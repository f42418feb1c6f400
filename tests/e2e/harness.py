"""Real processes for the end-to-end tests: rig, rig-agent, nginx-rtmp, stunnel, ffmpeg.

Everything listens on 127.0.0.1 only, logs into the test's tmp dir and is stopped by
`Harness.close()` (the `e2e` fixture's teardown), whatever happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.rtmp import PublishRequested, ServerSession

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
REPO = Path(__file__).resolve().parents[2]


def key_id(stream_key: str) -> str:
    """The 8-hex-character name the agent logs for a stream key."""
    return hashlib.sha256(stream_key.encode()).hexdigest()[:8]


def dest_keys(n: int = 0) -> dict[str, str]:
    """Destination stream keys, unique so that leaks into logs can be searched for."""
    return {"YouTube": f"yt{n}-{secrets.token_hex(6)}", "Twitch": f"tw{n}-{secrets.token_hex(6)}"}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """Poll `check` until it returns something true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def clean_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: no RIG_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
    env.update(overrides)
    return env


class Process:
    """A child process whose stdout and stderr go to one log file."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; never raises."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def wait_for_port(self, port: int, timeout: float = 30) -> None:
        def ready() -> bool:
            if not self.running:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            return port_open(port)

        wait_until(ready, timeout, f"{self.name} to listen on {port}")


class Receiver:
    """An nginx-rtmp server standing in for YouTube/Twitch: records every publish."""

    def __init__(self, root: Path, app: str, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.dir = root
        self.records = root / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.conf = root / "nginx.conf"
        self.conf.write_text(
            f"""
load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application {app} {{
            live on;
            record all;
            record_path {self.records};
            record_unique on;
        }}
    }}
}}
"""
        )
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{self.app}"

    def start(self) -> None:
        self.starts += 1
        self.process = Process(
            f"nginx-{self.app}-{self.port}",
            ["nginx", "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
            self.dir / f"nginx-{self.starts}.out",
        )
        self.process.start()
        self.process.wait_for_port(self.port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def recordings(self, key: str | None = None) -> list[Path]:
        """Recorded files (of destination stream key `key`), oldest first."""
        files = [
            p
            for p in self.records.glob("*.flv")
            if key is None or re.fullmatch(re.escape(key) + r"-\d+\.flv", p.name)
        ]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def recording(self, key: str) -> Path:
        """The one recording of destination key `key`."""
        files = self.recordings(key)
        assert len(files) == 1, f"{self.app}: want one recording of {key}, have {files}"
        return files[0]

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


class WireRecorder:
    """wire_recorder.py as a process: records exactly what the agent sends (restartable)."""

    def __init__(self, root: Path, app: str) -> None:
        self.app = app
        self.port = free_port()
        self.dir = root
        self.records = root / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{self.app}"

    def start(self) -> None:
        self.starts += 1
        script = Path(__file__).with_name("wire_recorder.py")
        argv = [sys.executable, str(script), str(self.port), str(self.records), str(self.starts)]
        self.process = Process(f"wire-recorder-{self.port}", argv, self.dir / "recorder.log")
        self.process.start()
        self.process.wait_for_port(self.port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def recordings(self, key: str) -> list[Path]:
        """Recorded publishes of destination key `key`, in order."""
        pattern = re.escape(key) + r"-\d+-\d+\.flv"
        return sorted(p for p in self.records.glob("*.flv") if re.fullmatch(pattern, p.name))

    def log(self) -> str:
        return self.process.log() if self.process else ""


class Stunnel:
    """A TLS terminator (stunnel4) in front of a receiver: rtmps:// -> rtmp://."""

    def __init__(self, root: Path, target_port: int, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "stunnel.conf"
        self.conf.write_text(
            f"""foreground = yes
pid =
debug = info
output = {root}/stunnel.log

[rtmps]
accept = 127.0.0.1:{self.port}
connect = 127.0.0.1:{target_port}
cert = {cert}
key = {key}
"""
        )
        self.process = Process("stunnel", ["stunnel4", str(self.conf)], root / "stunnel.out")

    def start(self) -> None:
        self.process.start()
        self.process.wait_for_port(self.port)

    def log(self) -> str:
        path = self.dir / "stunnel.log"
        return path.read_text(errors="replace") if path.exists() else ""


class StuckReceiver:
    """An RTMP server that accepts a publish, reads a little media, then never reads again.

    Its receive buffer is tiny, so the agent's writes to it block and hit the write
    deadline instead of vanishing into socket buffers.
    """

    def __init__(self, read_after_publish: int = 64 * 1024) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.read_after_publish = read_after_publish
        self.publishes = 0
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, app: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}"

    def _serve(self) -> None:
        self.listener.settimeout(0.2)  # close() does not wake a blocked accept()
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        session = ServerSession()
        published_at = None
        received = 0
        conn.settimeout(10)
        try:
            while published_at is None or received - published_at < self.read_after_publish:
                data = conn.recv(4096)
                if not data:
                    return
                received += len(data)
                for event in session.receive_data(data):
                    if isinstance(event, PublishRequested):
                        session.accept_publish()
                        published_at = received
                        self.publishes += 1
                conn.sendall(session.data_to_send())
        except OSError:
            return
        # Stop reading; keep the connection open until the test ends.
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self.connections:
            conn.close()


class Rig:
    """`python -m rig serve` on a fresh database, with the services pointed at us."""

    def __init__(self, root: Path, database_url: str, service_urls: dict[str, str]) -> None:
        self.port = free_port()
        self.database_url = database_url
        root.mkdir(parents=True, exist_ok=True)
        self.env = clean_env(
            RIG_DATABASE_URL=database_url,
            RIG_JWT_SECRET=secrets.token_urlsafe(48),
            RIG_DATA_DIR=str(root),
            RIG_PORT=str(self.port),
            RIG_HOST="127.0.0.1",
            # The receivers of these tests listen on 127.0.0.1 (rig/netpolicy.py).
            RIG_ALLOW_PRIVATE_DESTINATIONS="yes",
        )
        for service, url in service_urls.items():
            self.env[f"RIG_SERVICE_URL_{service.upper()}"] = url
        self.process = Process(
            "rig", [sys.executable, "-m", "rig", "serve"], root / "rig.log", self.env
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_agent_key(self, name: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "rig", "agents", "create", name],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, f"rig agents create failed: {out.stdout}{out.stderr}"
        return out.stdout.strip().splitlines()[-1]

    def start(self) -> None:
        self.process.start()

        def ready() -> bool:
            if not self.process.running:
                raise AssertionError(f"rig exited early:\n{self.process.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/streams/", timeout=2):  # noqa: S310
                    return True
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code == 401
            except OSError:
                return False

        wait_until(ready, 60, "rig to serve", interval=0.1)


class Agent:
    """`python -m agent` (rig-agent) relaying for one rig."""

    def __init__(
        self, root: Path, rig: Rig, key: str, port: int | None = None, **settings: object
    ) -> None:
        self.port = port or free_port()
        self.env = clean_env(
            RIG_URL=rig.url,
            RIG_AGENT_KEY=key,
            RIG_AGENT_NAME="e2e",
            RIG_AGENT_RTMP_LISTEN=f"127.0.0.1:{self.port}",
            RIG_AGENT_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            RIG_AGENT_RETRY_INITIAL="0.2",
            RIG_AGENT_RETRY_MAX="1",
            RIG_AGENT_CONNECT_TIMEOUT="3",
            RIG_AGENT_WRITE_TIMEOUT="2",
            RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS="yes",  # receivers on 127.0.0.1
        )
        for name, value in settings.items():
            self.env[f"RIG_AGENT_{name.upper()}"] = str(value)
        self.process = Process(
            "rig-agent", [sys.executable, "-m", "agent"], root / f"agent-{self.port}.log", self.env
        )

    def start(self) -> None:
        self.process.start()
        self.process.wait_for_port(self.port)

    def url(self, stream_key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream_key}"

    def log(self) -> str:
        return self.process.log()

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 20) -> None:
        try:
            wait_until(lambda: self.count(pattern) >= count, timeout, f"{count} x {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; agent log:\n{self.log()[-4000:]}") from None

    def destination_pattern(self, stream: StreamInfo, service: str) -> str:
        """How the agent names one destination of one stream in its log."""
        return rf"stream {key_id(stream.key)} -> {service} #{stream.destinations[service]['id']}:"

    def wait_closed(
        self, stream: StreamInfo, services: tuple[str, ...] | None = None, timeout: float = 20
    ) -> None:
        """Wait until the destinations of the stream (all, or those of `services`) drained
        and closed cleanly."""
        for service in services or tuple(stream.destinations):
            pattern = self.destination_pattern(stream, service)
            self.wait_for_log(pattern + " stream ended, destination closed", timeout=timeout)

    def processes(self) -> list[int]:
        """The agent's process and all its descendants (rig-agent --workers N: the
        zygote and the workers it forked)."""
        pids, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            with contextlib.suppress(FileNotFoundError):
                todo.extend(map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()))
        return pids

    def kill(self) -> None:
        """A crash of the whole agent: every process of it stops at once (frozen first,
        so no worker notices the others going), then SIGKILL."""
        pids = self.processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(30)

    def memory_kb(self) -> int:
        """The memory the agent takes from the machine (kB): the proportional set size
        (PSS) of its processes, summed. Not VmRSS: a forked worker counts a page it
        shares with the zygote once it first touches it, so the sum of VmRSS grows when
        a worker relays for the first time though nothing new was allocated."""
        total = 0
        for process in self.processes():
            try:
                rollup = Path(f"/proc/{process}/smaps_rollup").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue  # a worker that just ended
            match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
            assert match, rollup
            total += int(match.group(1))
        return total


class Api:
    """rig's REST API over HTTP (urllib): a user, streams, destinations."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.token = ""

    def call(self, method: str, path: str, body: dict | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                envelope = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            exc.close()
            raise AssertionError(f"{method} {path}: HTTP {exc.code} {text}") from None
        return envelope["payload"]

    def login_new_user(self) -> None:
        name = f"e2e{secrets.token_hex(4)}"
        password = "correct horse battery"
        self.call(
            "POST",
            "/accounts/",
            {"username": name, "password": password, "email": f"{name}@example.org"},
        )
        payload = self.call(
            "POST", "/accounts/auth/local", {"username": name, "password": password}
        )
        self.token = payload["token"]  # type: ignore[index]

    def stream(self, destinations: dict[str, str], protection: dict | None = None) -> StreamInfo:
        """A new stream with destinations {service: destination key}; `protection` its
        disconnectProtection, if not rig's default (on, 30 s)."""
        payload = self.call("POST", "/streams/")
        assert isinstance(payload, dict)
        info = StreamInfo(payload["id"], payload["streamKey"])
        if protection is not None:
            self.call("PATCH", f"/streams/{info.id}", {"disconnectProtection": protection})
        for service, key in destinations.items():
            dest = self.call(
                "POST", f"/streams/{info.id}/destination", {"service": service, "streamKey": key}
            )
            assert isinstance(dest, dict)
            info.destinations[service] = dest
        return info


@dataclass
class StreamInfo:
    id: str
    key: str
    destinations: dict[str, dict] = field(default_factory=dict)


@dataclass
class Publish:
    """One `ffmpeg -re ... -f flv rtmp://agent/live/KEY` run."""

    process: subprocess.Popen
    stderr_path: Path
    started: float
    ended: float | None = None

    def wait(self, timeout: float = 60) -> int:
        rc = self.process.wait(timeout=timeout)
        if self.ended is None:
            self.ended = time.monotonic()
        return rc

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def wall_time(self) -> float:
        assert self.ended is not None
        return self.ended - self.started

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_publish(media: Path, url: str, log_path: Path) -> Publish:
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                "-re", "-i", str(media), "-c", "copy", "-f", "flv", url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
    return Publish(proc, log_path, time.monotonic())
