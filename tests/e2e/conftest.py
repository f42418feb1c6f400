"""Fixtures of the end-to-end tests: media files, and a harness of real processes.

`e2e` starts what a test asks for (nginx-rtmp receivers, rig, rig-agent, stunnel,
ffmpeg publishers), all on 127.0.0.1, and stops every one of them afterwards. When a
test fails, the tail of every process's log is attached to its report.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .flvtools import FlvFile, parse_flv, probe
from .harness import (
    RTMP_MODULE,
    Agent,
    Api,
    Process,
    Publish,
    Receiver,
    Rig,
    StreamInfo,
    StuckReceiver,
    Stunnel,
    WireRecorder,
    start_publish,
)

TOOLS = ("ffmpeg", "ffprobe", "nginx", "stunnel4", "openssl", "gst-launch-1.0", "gst-inspect-1.0")
# What the GStreamer publishers of the conformance matrix use (scripts/test installs them).
GSTREAMER_ELEMENTS = (
    "videotestsrc", "audiotestsrc", "x264enc", "h264parse", "voaacenc", "aacparse",
    "flvmux", "rtmp2sink", "rtmpsink",
)  # fmt: skip


@dataclass(frozen=True)
class Media:
    """A fixture file, its tags and ffprobe's view of it."""

    path: Path
    flv: FlvFile
    info: dict

    @property
    def duration(self) -> float:
        return float(self.info["format"]["duration"])


def make_media(
    path: Path,
    seconds: int,
    video_options: tuple[str, ...] = (),
    source: str = "testsrc2=size=640x360:rate=30",
) -> Media:
    """H.264 (keyframe every 2 s, B-frames) + AAC in FLV, made by ffmpeg from the lavfi
    video `source`."""
    out = subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", source,
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
            *video_options,
            "-c:a", "aac", "-b:a", "128k",
            "-f", "flv", str(path),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"ffmpeg could not make the media fixture: {out.stderr}"
    return Media(path, parse_flv(path), probe(path))


@pytest.fixture(scope="session")
def e2e_tools() -> None:
    """The external programs the end-to-end tests drive (scripts/test installs them)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not RTMP_MODULE.exists():
        missing.append(f"{RTMP_MODULE} (libnginx-mod-rtmp)")
    if shutil.which("gst-inspect-1.0"):
        missing += [
            f"GStreamer element {element}"
            for element in GSTREAMER_ELEMENTS
            if subprocess.run(["gst-inspect-1.0", "--exists", element], check=False).returncode
        ]
    if missing:
        pytest.fail(
            "end-to-end tests need: " + ", ".join(missing) + " (run scripts/test, which"
            " installs ffmpeg, nginx, libnginx-mod-rtmp, stunnel4 and GStreamer)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def media(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """8 s of 640x360 30 fps H.264 + 48 kHz AAC."""
    return make_media(tmp_path_factory.mktemp("media") / "short.flv", 8)


@pytest.fixture(scope="session")
def long_media(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """20 s of the same."""
    return make_media(tmp_path_factory.mktemp("media") / "long.flv", 20)


@pytest.fixture(scope="session")
def heavy_media(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """8 s at a constant 12 Mbit/s: 12 MB, more than loopback socket buffers hold (4 MB)."""
    cbr = ("-b:v", "12M", "-minrate", "12M", "-maxrate", "12M", "-bufsize", "2M")
    options = (*cbr, "-x264-params", "nal-hrd=cbr")
    return make_media(tmp_path_factory.mktemp("media") / "heavy.flv", 8, options)


@pytest.fixture(scope="session")
def tls_cert(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key)."""
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    out = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return cert, key


@dataclass
class Stack:
    """Two receivers (YouTube-like `live2`, Twitch-like `app`), rig, an agent, a user."""

    youtube: Receiver
    twitch: Receiver
    rig: Rig
    agent: Agent
    api: Api


class Harness:
    """Starts processes for one test; `close()` stops them all."""

    def __init__(self, root: Path, make_database: Callable[[], str]) -> None:
        self.root = root
        self._make_database = make_database
        self.receivers: list[Receiver] = []
        self.rigs: list[Rig] = []
        self.agents: list[Agent] = []
        self.tunnels: list[Stunnel] = []
        self.stuck: list[StuckReceiver] = []
        self.recorders: list[WireRecorder] = []
        self.publishes: list[Publish] = []
        self._n = 0

    def _dir(self, name: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def receiver(self, app: str) -> Receiver:
        receiver = Receiver(self._dir(f"nginx-{app}"), app)
        self.receivers.append(receiver)
        receiver.start()
        return receiver

    def wire_recorder(self, app: str) -> WireRecorder:
        recorder = WireRecorder(self._dir(f"recorder-{app}"), app)
        self.recorders.append(recorder)
        recorder.start()
        return recorder

    def stunnel(self, target: Receiver, cert: tuple[Path, Path]) -> Stunnel:
        tunnel = Stunnel(self._dir("stunnel"), target.port, *cert)
        self.tunnels.append(tunnel)
        tunnel.start()
        return tunnel

    def stuck_receiver(self) -> StuckReceiver:
        stuck = StuckReceiver()
        self.stuck.append(stuck)
        return stuck

    def rig(self, env: dict[str, str] | None = None, **service_urls: str) -> Rig:
        rig = Rig(self._dir("rig"), self._make_database(), service_urls)
        rig.env.update(env or {})
        self.rigs.append(rig)
        rig.start()
        return rig

    def agent(self, rig: Rig, port: int | None = None, **settings: object) -> Agent:
        key = rig.create_agent_key(f"agent-{self._n}")
        agent = Agent(self._dir("agent"), rig, key, port, **settings)
        self.agents.append(agent)
        agent.start()
        return agent

    def api(self, rig: Rig) -> Api:
        api = Api(rig.url)
        api.login_new_user()
        return api

    def stack(
        self, youtube: str | None = None, twitch: str | None = None, **agent_settings: object
    ) -> Stack:
        """Receivers for both services (unless URLs are given), rig, an agent, a user."""
        yt = self.receiver("live2")
        tw = self.receiver("app")
        rig = self.rig(YouTube=youtube or yt.url, Twitch=twitch or tw.url)
        agent = self.agent(rig, **agent_settings)
        return Stack(yt, tw, rig, agent, self.api(rig))

    def publish(self, media: Media, agent: Agent, stream_key: str) -> Publish:
        n = len(self.publishes)
        publish = start_publish(media.path, agent.url(stream_key), self.root / f"ffmpeg-{n}.err")
        self.publishes.append(publish)
        return publish

    def close(self) -> None:
        for publish in self.publishes:
            if publish.process.poll() is None:
                publish.process.kill()
            publish.process.wait(timeout=30)
        for agent in self.agents:
            agent.process.stop()
        for tunnel in self.tunnels:
            tunnel.process.stop()
        for receiver in [*self.receivers, *self.recorders]:
            receiver.stop()
        for rig in self.rigs:
            rig.process.stop()
        for stuck in self.stuck:
            stuck.close()

    def logs(self) -> str:
        """The tail of every log, for a failed test's report."""
        parts = []
        processes: list[tuple[str, Process | None, str]] = []
        processes += [(f"rig :{r.port}", r.process, "") for r in self.rigs]
        processes += [(f"agent :{a.port}", a.process, "") for a in self.agents]
        processes += [(f"stunnel :{t.port}", t.process, t.log()) for t in self.tunnels]
        processes += [(f"nginx {r.app} :{r.port}", r.process, r.log()) for r in self.receivers]
        processes += [(f"recorder :{r.port}", r.process, "") for r in self.recorders]
        for name, process, extra in processes:
            text = (process.log() if process else "") + extra
            parts.append(f"----- {name} -----\n{text[-6000:]}")
        for n, publish in enumerate(self.publishes):
            parts.append(f"----- ffmpeg #{n} (rc {publish.returncode}) -----\n{publish.stderr}")
        return "\n".join(parts)


HARNESS = pytest.StashKey[Harness]()


@pytest.fixture
def e2e(
    e2e_tools: None,
    tmp_path: Path,
    make_database: Callable[[], str],
    request: pytest.FixtureRequest,
) -> Iterator[Harness]:
    """A harness of real processes for one test."""
    harness = Harness(tmp_path, make_database)
    request.node.stash[HARNESS] = harness
    try:
        yield harness
    finally:
        harness.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    harness = item.stash.get(HARNESS, None)
    if harness is not None and report.failed and call.when in ("setup", "call"):
        report.sections.append(("process logs", harness.logs()))
    return report


__all__ = ["Harness", "Media", "Stack", "StreamInfo"]
