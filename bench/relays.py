"""The processes of a benchmark run: the recording receivers, rig, and the two relays.

- `Receivers`: one nginx-rtmp process standing in for YouTube, Twitch and any further
  destination; every application records what it gets (`record all`).
- `RigStack`: `rig serve` on its embedded PostgreSQL (a fresh data dir in /tmp), one
  agent key from `rig agents create`, a user and its streams and destinations made over
  the REST API, and `rig-agent` processes started on demand (our relay).
- `NginxRelay`: nginx-rtmp as the relay, one worker, `push` lines to the destinations.
- `Viewers` (`--watch`): someone looking at every stream's picture, as the dashboard
  does; without them the agent makes no pictures (they are made only while wanted).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Child, clean_env, free_port, port_open, wait_until

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def _nginx_conf(root: Path, rtmp_body: str, error_level: str = "warn") -> str:
    return f"""load_module {RTMP_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log {error_level};
events {{ worker_connections 4096; }}
rtmp {{
{rtmp_body}}}
"""


def _start_nginx(name: str, root: Path, conf: str, port: int) -> Child:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text(conf)
    child = Child(
        name,
        ["nginx", "-c", str(root / "nginx.conf"), "-p", str(root), "-e", str(root / "error.log")],
        root / "nginx.out",
    ).start()
    child.wait_for_port(port)
    return child


# ---------------------------------------------------------------------- receivers


class Receivers:
    """nginx-rtmp recording every publish: `blocks` maps a port to its applications."""

    def __init__(self, root: Path, blocks: dict[int, list[str]]) -> None:
        self.root = root
        self.blocks = blocks
        self.child: Child | None = None

    def record_dir(self, port: int, app: str) -> Path:
        """Where application `app` on `port` records."""
        return self.root / "records" / f"{port}-{app}"

    def start(self) -> Receivers:
        """Write the configuration and start nginx."""
        servers = []
        for port, apps in self.blocks.items():
            lines = [f"    server {{\n        listen 127.0.0.1:{port};\n        chunk_size 4096;"]
            for app in apps:
                record_dir = self.record_dir(port, app)
                record_dir.mkdir(parents=True, exist_ok=True)
                lines.append(
                    f"        application {app} {{ live on; record all;"
                    f" record_path {record_dir}; record_unique on; }}"
                )
            lines.append("    }\n")
            servers.append("\n".join(lines))
        conf = _nginx_conf(self.root, "".join(servers))
        self.child = _start_nginx("receivers", self.root, conf, next(iter(self.blocks)))
        for port in self.blocks:
            wait_until(lambda p=port: port_open(p), 10, f"receiver port {port}")
        return self

    def recordings(self, port: int, app: str, name: str) -> list[Path]:
        """The files recorded for stream `name` (oldest first; a reconnect adds one)."""
        files = [
            p
            for p in self.record_dir(port, app).glob(f"{name}-*.flv")
            if p.name[len(name) + 1 : -4].isdigit()
        ]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def total_bytes(self) -> int:
        """Bytes recorded so far, all files."""
        return sum(p.stat().st_size for p in (self.root / "records").rglob("*.flv"))

    def stop(self) -> None:
        """Stop nginx (recordings are written as they arrive, nothing is lost)."""
        if self.child is not None:
            self.child.stop()

    def remove_recordings(self) -> None:
        """Free the disk space."""
        shutil.rmtree(self.root / "records", ignore_errors=True)


# ---------------------------------------------------------------------- nginx as the relay


class NginxRelay:
    """nginx-rtmp relaying with `push`: application `live` for the workload, `lat` for the
    latency publisher. nginx pushes each stream under its own name."""

    name = "nginx"

    def __init__(self) -> None:
        self.port = 0
        self.child: Child | None = None

    def start(self, root: Path, live_pushes: list[str], lat_pushes: list[str]) -> Child:
        """A fresh nginx process with these push targets (rtmp://host:port/app URLs)."""
        self.port = free_port()

        def app(name: str, pushes: list[str]) -> str:
            lines = "".join(f"            push {url};\n" for url in pushes)
            return f"        application {name} {{\n            live on;\n{lines}        }}\n"

        body = (
            f"    server {{\n        listen 127.0.0.1:{self.port};\n        chunk_size 4096;\n"
            + app("live", live_pushes)
            + app("lat", lat_pushes)
            + "    }\n"
        )
        self.child = _start_nginx("nginx-relay", root, _nginx_conf(root, body), self.port)
        return self.child

    def stop(self) -> None:
        """Stop the relay."""
        if self.child is not None:
            self.child.stop()
            self.child = None


# ---------------------------------------------------------------------- rig and our relay


@dataclass
class StreamInfo:
    """A stream created over the API: its id, ingest key and destination keys (by index)."""

    id: str
    key: str
    destinations: list[tuple[str, str]] = field(default_factory=list)  # (service, key)


class Api:
    """rig's REST API over urllib."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.token = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; returns the envelope's payload, raises on an error answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (rig on loopback)
            self.base + path, data=data, method=method
        )
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (loopback)
                return json.loads(resp.read())["payload"]
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            exc.close()
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {text}") from None

    def login_new_user(self) -> None:
        """Create an account and keep its token."""
        name = f"bench{secrets.token_hex(4)}"
        password = "correct horse battery"
        self.call(
            "POST",
            "/accounts/",
            {"username": name, "password": password, "email": f"{name}@example.org"},
        )
        auth = self.call("POST", "/accounts/auth/local", {"username": name, "password": password})
        self.token = auth["token"]

    def stream(self, destinations: list[tuple[str, str]]) -> StreamInfo:
        """A new stream with these (service, destination key) destinations."""
        payload = self.call("POST", "/streams/")
        info = StreamInfo(payload["id"], payload["streamKey"])
        # The relay workload runs without disconnect protection, as nginx-rtmp relays:
        # stopping 32 publishers at once on two cores, a few close with a reset before
        # their unpublish reached the agent (ffmpeg closing with unread data discards
        # what it had not sent), and protection would hold those streams with the slate
        # for the grace instead of ending them. Holding is measured by --holding.
        self.call("PATCH", f"/streams/{info.id}", {"disconnectProtection": {"enabled": False}})
        for service, key in destinations:
            self.call(
                "POST", f"/streams/{info.id}/destination", {"service": service, "streamKey": key}
            )
            info.destinations.append((service, key))
        return info


class Viewers:
    """A dashboard open on every stream: each stream's picture asked for every `interval`
    seconds (`GET /streams/{id}/thumbnail`, one thread per stream), so rig wants them and
    the agent makes them (docs/agent-protocol.md#thumbnail-upload). `pictures` counts the
    JPEGs received."""

    def __init__(self, api: Api, stream_ids: list[str], interval: float = 10.0) -> None:
        self._api, self._ids, self._interval = api, stream_ids, interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.pictures = 0

    def __enter__(self) -> Viewers:
        for stream_id in self._ids:
            thread = threading.Thread(target=self._look, args=(stream_id,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)  # a GET waits at most 10 s for a picture

    def _look(self, stream_id: str) -> None:
        request = urllib.request.Request(  # noqa: S310 (rig on loopback)
            f"{self._api.base}/streams/{stream_id}/thumbnail",
            headers={"Authorization": f"Bearer {self._api.token}"},
        )
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
                    resp.read()
                with self._lock:
                    self.pictures += 1
            except urllib.error.HTTPError as exc:
                exc.close()  # 1000: no picture (yet)
            except OSError:
                pass  # rig stopping: the run is ending
            self._stop.wait(self._interval)


class RigStack:
    """rig serve (embedded PostgreSQL), an agent key, a user; rig-agent on demand."""

    name = "ours"

    def __init__(
        self, root: Path, service_urls: dict[str, str], agent_env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.agent_env = agent_env or {}
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="rig-bench-"))
        self.env = clean_env(
            RIG_DATA_DIR=str(self.data_dir),
            RIG_HOST="127.0.0.1",
            RIG_PORT=str(self.port),
            RIG_LOG_LEVEL="WARNING",
        )
        for service, url in service_urls.items():
            self.env[f"RIG_SERVICE_URL_{service.upper()}"] = url
        self.rig = Child("rig", [sys.executable, "-m", "rig", "serve"], root / "rig.log", self.env)
        self.api = Api(self.url)
        self.agent_key = ""
        self.agent: Child | None = None
        self.agent_path = "unknown"  # compiled or not (agent/fastpath.py), from its log
        self.agent_port = 0
        self.agent_http_port = 0

    @property
    def url(self) -> str:
        """rig's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start rig, wait until it answers, create the agent key and a user."""
        self.rig.start()

        def ready() -> bool:
            if not self.rig.running:
                raise RuntimeError(f"rig exited early:\n{self.rig.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/streams/", timeout=2):  # noqa: S310
                    return True
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code == 401
            except OSError:
                return False

        wait_until(ready, 120, "rig to serve", interval=0.1)
        out = subprocess.run(
            [sys.executable, "-m", "rig", "agents", "create", f"bench-{secrets.token_hex(3)}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rig agents create failed: {out.stdout}{out.stderr}")
        self.agent_key = out.stdout.strip().splitlines()[-1]
        self.api.login_new_user()

    def agent_token(self) -> str:
        """A fresh agent token (what the agent itself uses for /agents/config)."""
        return Api(self.url).call("POST", "/agents/auth", {"apiKey": self.agent_key})["token"]

    def start_agent(self, log_path: Path) -> Child:
        """A fresh rig-agent process with default settings but for its addresses (free
        ports of its own, so the benchmark runs beside anything else) and `agent_env`."""
        self.agent_port, self.agent_http_port = free_port(), free_port()
        env = clean_env(
            RIG_URL=self.url,
            RIG_AGENT_KEY=self.agent_key,
            RIG_AGENT_NAME="bench",
            RIG_AGENT_RTMP_LISTEN=f"127.0.0.1:{self.agent_port}",
            RIG_AGENT_HTTP_LISTEN=f"127.0.0.1:{self.agent_http_port}",
            # Every publisher of the benchmark connects from 127.0.0.1, dozens at once:
            # the per-address abuse limits (a stranger's connections, publishes waiting
            # for rig, refused publishes) would refuse the workload itself.
            RIG_AGENT_MAX_CONNECTIONS="100000",
            RIG_AGENT_MAX_CONNECTIONS_PER_ADDRESS="100000",
            RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS="100000",
            RIG_AGENT_FAILED_PUBLISH_BURST="0",
        )
        env.update(self.agent_env)
        self.agent = Child("rig-agent", [sys.executable, "-m", "agent"], log_path, env).start()
        self.agent.wait_for_port(self.agent_port)
        # Its HTTP listener comes up once every worker listens: after the RTMP port.
        self.agent.wait_for_port(self.agent_http_port)
        said = re.search(r"per-message path: ([^\n\"]+)", log_path.read_text(errors="replace"))
        self.agent_path = said.group(1).strip() if said else "unknown"
        return self.agent

    def thumbnail_figures(self) -> tuple[float, float]:
        """(thumbnails made, CPU seconds they took) so far, from the agent's /metrics."""
        url = f"http://127.0.0.1:{self.agent_http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        made = re.search(r'^rig_agent_thumbnails_total\{result="made"\} (\S+)$', text, re.M)
        cpu = re.search(r"^rig_agent_thumbnail_cpu_seconds_total (\S+)$", text, re.M)
        return float(made.group(1)) if made else 0.0, float(cpu.group(1)) if cpu else 0.0

    def stop_agent(self) -> None:
        """SIGTERM the agent (it drains its destinations first)."""
        if self.agent is not None:
            self.agent.stop(timeout=15)
            self.agent = None

    def stop(self) -> None:
        """Stop the agent and rig (its embedded PostgreSQL stops with it), remove the data."""
        self.stop_agent()
        self.rig.stop(timeout=20)
        shutil.rmtree(self.data_dir, ignore_errors=True)
