"""The conformance matrix's plumbing: publishers, destinations behind recording proxies.

One case is one publish through the agent:

    publisher --> proxy (records) --> agent --> proxy (records) --> nginx-rtmp
                                            \\-> proxy (records) --> FFmpeg 8 (PyAV) listener

The proxies are the independent witnesses (`tcp_proxy.py`): what the publisher sent
and what the agent sent each destination, read back by `rtmp_capture.py`. The
receivers are real, independent implementations that must accept what the agent
sends: nginx-rtmp records it to a file, the FFmpeg listener demuxes and decodes it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .crafted import CraftedPublisher
from .harness import Agent, Api, Process, Publish, Receiver, free_port, wait_until
from .pyav_receiver import LISTEN_TIMEOUT
from .rtmp_capture import (
    AUDIO,
    VIDEO,
    Capture,
    Message,
    fourcc,
    is_ex_audio,
    is_ex_video,
    is_sequence_header,
    read_capture,
)
from .tcp_proxy import RecordingProxy

HERE = Path(__file__).resolve().parent
SECONDS = 3  # of media per publish: short, so that the matrix stays fast

# --- What a publisher's stream is, read from the capture (to check that each case
# tests what it says it tests: a GStreamer that stopped sending audio first would
# otherwise silently turn the audio-first case into another video-first one).

LEGACY_VIDEO = {2: "h263", 4: "vp6", 7: "avc", 12: "hevc(legacy)"}
LEGACY_AUDIO = {2: "mp3", 10: "aac", 11: "speex"}


@dataclass(frozen=True)
class StreamFacts:
    """Codecs of each track in order of appearance, what came first, B-frames."""

    video: tuple[str, ...]
    audio: tuple[str, ...]
    audio_first: bool
    bframes: bool

    @classmethod
    def of(cls, sent: list[Message]) -> StreamFacts:
        video: list[str] = []
        audio: list[str] = []
        for m in sent:
            if m.type == VIDEO and m.payload and not _is_avc_end_of_sequence(m):
                name = fourcc(m) if is_ex_video(m) else LEGACY_VIDEO.get(m.payload[0] & 0x0F)
                if name and name not in video:
                    video.append(name)
            elif m.type == AUDIO and m.payload:
                name = fourcc(m) if is_ex_audio(m) else LEGACY_AUDIO.get(m.payload[0] >> 4)
                if name and name not in audio:
                    audio.append(name)
        # "Audio first": the first frame after the codec configuration is audio (what
        # made the old relay's demuxer open a video track with no picture size yet).
        frames = [
            m
            for m in sent
            if m.type in (AUDIO, VIDEO) and not is_sequence_header(m) and not _is_metadata(m)
        ]
        return cls(
            tuple(video),
            tuple(audio),
            bool(frames) and frames[0].type == AUDIO,
            any(_composition_offset(m) for m in sent),
        )


def _is_avc_end_of_sequence(m: Message) -> bool:
    """FFmpeg 8 also ends a multitrack H.264 track with a legacy AVC end of sequence."""
    return not is_ex_video(m) and m.payload[0] & 0x0F == 7 and m.payload[1:2] == b"\x02"


def _is_metadata(m: Message) -> bool:
    return is_ex_video(m) and m.payload[0] & 0x0F == 4


def _composition_offset(m: Message) -> int:
    """The composition time offset of a video frame (non-zero: B-frames reorder)."""
    p = m.payload
    if m.type != VIDEO or is_sequence_header(m) or len(p) < 5:
        return 0
    if not is_ex_video(m):
        return int.from_bytes(p[2:5], "big", signed=True) if p[0] & 0x0F == 7 and p[1] == 1 else 0
    # Enhanced: CodedFrames (1) carries a composition time after the FourCC; X (3) not.
    return int.from_bytes(p[5:8], "big", signed=True) if p[0] & 0x0F == 1 and len(p) >= 8 else 0


# --- Publishers

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
TEST_VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
TEST_AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "96k"]


def _gstreamer(sink: list[str]) -> list[str]:
    """GStreamer as OBS-like encoders push: x264 zerolatency + AAC through flvmux."""
    video_buffers, audio_buffers = SECONDS * 30, SECONDS * 48000 // 1024
    return [
        "gst-launch-1.0", "-q", "-e",
        "videotestsrc", "is-live=true", f"num-buffers={video_buffers}", "!",
        "video/x-raw,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=30", "!",
        "h264parse", "!", "queue", "!",
        "flvmux", "name=mux", "streamable=true", "!", *sink,
        "audiotestsrc", "is-live=true", f"num-buffers={audio_buffers}",
        "samplesperbuffer=1024", "!",
        "audio/x-raw,rate=48000,channels=2", "!", "voaacenc", "!", "aacparse", "!",
        "queue", "!", "mux.",
    ]  # fmt: skip


def ffmpeg(*inputs_and_codecs: str) -> Callable[[str], list[str]]:
    """Debian's ffmpeg 5.1 encoding the test sources live (`-re`) to an RTMP URL."""
    return lambda url: [*FFMPEG, *inputs_and_codecs, "-t", str(SECONDS), "-f", "flv", url]


def gstreamer(sink: str, *properties: str) -> Callable[[str], list[str]]:
    """GStreamer's `sink` (`location=` given the URL, then `properties`)."""
    return lambda url: _gstreamer([sink, " ".join((f"location={url}", *properties))])


def pyav(video: str, audio: str) -> Callable[[str], list[str]]:
    """pyav_publisher.py: FFmpeg 8 encoders, comma-separated for multitrack."""
    script = str(HERE / "pyav_publisher.py")
    return lambda url: [sys.executable, script, url, str(SECONDS), video, audio]


@dataclass(frozen=True)
class Publisher:
    """A real encoder publishing SECONDS of test pattern to an RTMP URL, and what its
    stream must be (checked on the capture of what it sent)."""

    id: str
    argv: Callable[[str], list[str]]
    video: tuple[str, ...]
    audio: tuple[str, ...]
    audio_first: bool | None = None
    bframes: bool | None = None

    def check(self, facts: StreamFacts) -> None:
        """The capture shows the stream this publisher is meant to send."""
        assert facts.video == self.video, f"{self.id}: video codecs {facts.video}"
        assert facts.audio == self.audio, f"{self.id}: audio codecs {facts.audio}"
        if self.audio_first is not None:
            assert facts.audio_first == self.audio_first, f"{self.id}: audio first? {facts}"
        if self.bframes is not None:
            assert facts.bframes == self.bframes, f"{self.id}: B-frames? {facts}"


ZEROLATENCY = ("-tune", "zerolatency")
PUBLISHERS = [
    Publisher(
        "ffmpeg-h264-bframes-aac",
        ffmpeg(*TEST_VIDEO, *TEST_AUDIO, *X264, "-bf", "2", *AAC),
        ("avc",), ("aac",), audio_first=False, bframes=True,
    ),
    Publisher(
        "ffmpeg-zerolatency",
        ffmpeg(*TEST_VIDEO, *TEST_AUDIO, *X264, *ZEROLATENCY, *AAC),
        ("avc",), ("aac",), audio_first=True, bframes=False,
    ),
    Publisher("ffmpeg-audio-only", ffmpeg(*TEST_AUDIO, *AAC), (), ("aac",), audio_first=True),
    Publisher("ffmpeg-video-only", ffmpeg(*TEST_VIDEO, *X264), ("avc",), (), bframes=True),
    # flvmux sends whichever encoder delivers first: mostly audio, sometimes video. It
    # also sends onMetaData again whenever its tags change (up to 8 times in 3 s).
    Publisher("gst-rtmp2sink", gstreamer("rtmp2sink"), ("avc",), ("aac",), bframes=False),
    Publisher(
        "gst-rtmpsink", gstreamer("rtmpsink", "live=1"),  # librtmp's URL options
        ("avc",), ("aac",), bframes=False,
    ),
    Publisher("pyav-hevc-aac", pyav("libx265", "aac"), ("hvc1",), ("aac",), audio_first=False),
    Publisher(
        "pyav-av1-opus", pyav("libsvtav1", "libopus"), ("av01",), ("Opus",), audio_first=True,
    ),
    Publisher(
        "pyav-vp9-opus", pyav("libvpx-vp9", "libopus"), ("vp09",), ("Opus",), audio_first=True,
    ),
    Publisher(
        "pyav-multitrack-hevc+h264-aac+opus",
        pyav("libx265,libx264", "aac,libopus"),
        ("hvc1", "avc1"), ("aac", "Opus"),
    ),
]  # fmt: skip


# --- Destinations


@dataclass
class Destination:
    """One Custom destination of the case's stream, behind a recording proxy."""

    name: str
    key: str
    proxy: RecordingProxy
    receiver: Process | None = None
    flv: Path | None = None  # what the FFmpeg receiver wrote

    @property
    def rtmp_url(self) -> str:
        return self.proxy.url("app")

    def captures(self) -> list[Capture]:
        """What the agent sent, one capture per connection it made."""
        return [read_capture(path) for path in self.proxy.upstreams()]

    def only_capture(self) -> Capture:
        """The one connection the agent made (more would mean it lost the first)."""
        captures = self.captures()
        assert len(captures) == 1, f"{self.name}: the agent connected {len(captures)} times"
        assert not captures[0].truncated, f"{self.name}: the agent's stream ends inside a chunk"
        return captures[0]

    def received(self, timeout: float = 60) -> Path:
        """The FLV the FFmpeg receiver wrote, once the stream has ended."""
        assert self.receiver is not None and self.flv is not None
        wait_until(lambda: not self.receiver.running, timeout, f"{self.name} receiver to end")
        assert self.flv.exists(), f"{self.name}: nothing received:\n{self.receiver.log()}"
        return self.flv


def port_listening(port: int) -> bool:
    """True once something listens on 127.0.0.1:port, without connecting to it (an
    FFmpeg listener takes the first connection as its one publisher)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


@dataclass
class StreamOnAgent:
    id: str
    key: str


@dataclass
class Case:
    """One publish through the module's agent, with its own destinations and proxies."""

    root: Path
    agent: Agent
    api: Api
    nginx: Receiver
    proxies: list[RecordingProxy] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    publishes: list[Publish] = field(default_factory=list)
    crafted: list[CraftedPublisher] = field(default_factory=list)

    def proxy(self, name: str, target_port: int) -> RecordingProxy:
        proxy = RecordingProxy(self.root / "wire", name, target_port)
        self.proxies.append(proxy)
        return proxy

    def nginx_destination(self, name: str = "nginx") -> Destination:
        key = f"{name}-{secrets.token_hex(4)}"
        return Destination(name, key, self.proxy(name, self.nginx.port))

    def ffmpeg_destination(self, name: str = "ffmpeg") -> Destination:
        """An FFmpeg 8 listener (pyav_receiver.py) behind a proxy."""
        port = free_port()
        key = f"{name}-{secrets.token_hex(4)}"
        flv = self.root / f"{name}-received.flv"
        url = f"rtmp://127.0.0.1:{port}/app/{key}"
        argv = [sys.executable, str(HERE / "pyav_receiver.py"), url, str(flv)]
        receiver = Process(name, argv, self.root / f"{name}.log")
        receiver.start()
        self.processes.append(receiver)

        def listening() -> bool:
            assert receiver.running, f"{name} exited early:\n{receiver.log()}"
            return port_listening(port)

        wait_until(listening, LISTEN_TIMEOUT / 2, f"{name} to listen")
        return Destination(name, key, self.proxy(name, port), receiver, flv)

    def stream(
        self, destinations: list[Destination], protection: dict | None = None
    ) -> StreamOnAgent:
        """A new stream whose destinations are these (Custom, through their proxies);
        `protection` its disconnectProtection, if not rig's default."""
        payload = self.api.call("POST", "/streams/")
        assert isinstance(payload, dict)
        if protection is not None:
            body = {"disconnectProtection": protection}
            self.api.call("PATCH", f"/streams/{payload['id']}", body)
        for dest in destinations:
            body = {"service": "Custom", "rtmpUrl": dest.rtmp_url, "streamKey": dest.key}
            self.api.call("POST", f"/streams/{payload['id']}/destination", body)
        return StreamOnAgent(payload["id"], payload["streamKey"])

    def publish(self, argv: list[str], name: str = "publisher", **env: str) -> Publish:
        """Start a publisher process (its stderr goes to the case's directory)."""
        err = self.root / f"{name}-{len(self.publishes)}.err"
        with err.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                env={**_base_env(), **env},
            )
        publish = Publish(process, err, time.monotonic())
        self.publishes.append(publish)
        return publish

    def ingest(self) -> RecordingProxy:
        """A proxy in front of the agent: the recording of what publishers send."""
        return self.proxy("ingest", self.agent.port)

    def wait_delivered(self, destinations: list[Destination], timeout: float = 15) -> None:
        """Wait until the agent has closed its connection to every destination (it has
        sent all it will send), and the FFmpeg receivers have written what they received."""
        for dest in destinations:
            wait_until(
                lambda d=dest: d.proxy.connections > 0 and d.proxy.active == 0,
                timeout,
                f"the agent to finish sending to {dest.name}",
            )
            if dest.receiver is not None:
                wait_until(lambda d=dest: not d.receiver.running, timeout, f"{dest.name} to end")

    def close(self) -> None:
        for crafted in self.crafted:
            crafted.kill()
        for publish in self.publishes:
            if publish.process.poll() is None:
                publish.process.kill()
            publish.process.wait(timeout=30)
        for process in self.processes:
            process.stop(timeout=5)
        for proxy in self.proxies:
            proxy.close()

    def logs(self) -> str:
        parts = [f"----- {p.name} -----\n{p.log()[-3000:]}" for p in self.processes]
        publishers = [*self.publishes, *self.crafted]
        parts += [
            f"----- publisher #{n} -----\n{p.stderr[-3000:]}" for n, p in enumerate(publishers)
        ]
        return "\n".join(parts)


def _base_env() -> dict[str, str]:
    # SVT-AV1 prints its whole configuration at info level.
    return {**os.environ, "SVT_LOG": "1"}
