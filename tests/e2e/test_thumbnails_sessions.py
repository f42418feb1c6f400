"""The agent's side of issue 13 with real processes: ffmpeg publishes a 16:9 H.264/AAC
48 kHz test pattern with a keyframe every 10 s to a real agent, which relays it through
recording TCP proxies (the independent witness of the bytes each receiver got) to
nginx-rtmp standing in for YouTube and Twitch.

While live: rig serves the agent's thumbnail (a JPEG that decodes, 320x180, a new
picture as the stream goes on), the stats show the PyAV probe's facts and rig's
diagnostics (a 10 s keyframe interval warned for both services). Twitch's nginx is
killed and restarted mid-stream. After the publish: the session has its end reason,
agent, ingest facts and, per destination, the bytes the receiver got, live seconds and
the reconnect; rig restarts and the session reads back the same. A stream without video
has no thumbnail (1000)."""

from __future__ import annotations

import io
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from .conftest import Media, make_media
from .harness import Api, dest_keys, key_id, wait_until
from .tcp_proxy import RecordingProxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gop10_media(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Media:
    """32 s of 640x360 30 fps H.264, a keyframe every 10 s exactly, 48 kHz AAC."""
    options = ("-g", "300", "-keyint_min", "300", "-sc_threshold", "0")
    return make_media(tmp_path_factory.mktemp("media") / "gop10.flv", 32, options)


@pytest.fixture(scope="module")
def audio_only(e2e_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 48 kHz AAC, no video."""
    path = tmp_path_factory.mktemp("media") / "audio.flv"
    out = subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
            "-c:a", "aac", "-f", "flv", str(path),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return path


def thumbnail(api: Api, stream_id: str) -> tuple[int, bytes | dict]:
    """GET /streams/{id}/thumbnail: (HTTP status, the JPEG or the error envelope)."""
    request = urllib.request.Request(  # noqa: S310
        f"{api.base}/streams/{stream_id}/thumbnail",
        headers={"Authorization": f"Bearer {api.token}"},
    )
    try:
        # rig waits up to 10 s for a picture nobody had asked for before.
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            assert resp.headers["Content-Type"] == "image/jpeg"
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        exc.close()
        return exc.code, body


def decoded(jpeg: bytes) -> Image.Image:
    assert jpeg[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(jpeg), formats=["JPEG"])
    image.load()  # the whole picture decodes, not just its header
    return image


def sent_through(proxy: RecordingProxy) -> int:
    """Bytes the agent sent through the proxy to the receiver, every connection."""
    return sum(path.stat().st_size for path in proxy.upstreams() if path.exists())


def test_thumbnails_stats_and_the_session_of_a_real_publish(e2e, gop10_media, tmp_path):
    youtube, twitch = e2e.receiver("live2"), e2e.receiver("app")
    proxies = {
        "YouTube": RecordingProxy(tmp_path / "proxy-yt", "yt", youtube.port),
        "Twitch": RecordingProxy(tmp_path / "proxy-tw", "tw", twitch.port),
    }
    try:
        rig = e2e.rig(YouTube=proxies["YouTube"].url("live2"), Twitch=proxies["Twitch"].url("app"))
        agent = e2e.agent(rig, heartbeat_interval=1)
        api = e2e.api(rig)
        keys = dest_keys()
        stream = api.stream(keys)
        publish = e2e.publish(gop10_media, agent, stream.key)
        agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")
        agent_name = api.call("GET", f"/streams/{stream.id}")["provisionStatus"]["agent"]  # type: ignore[index]

        # The first picture: the first keyframe, 16:9 at 320x180.
        first = wait_until(
            lambda: (got := thumbnail(api, stream.id))[0] == 200 and got[1],
            15,
            "the first thumbnail",
            interval=0.5,
        )
        assert decoded(first).size == (320, 180)

        # The probe's facts and rig's diagnostics, from the agent's heartbeats.
        def stats() -> dict:
            return api.call("GET", f"/streams/{stream.id}/stats")  # type: ignore[return-value]

        wait_until(
            lambda: (stats()["ingest"] or {}).get("keyframeInterval"), 25, "a keyframe interval"
        )
        facts = stats()
        ingest = facts["ingest"]
        assert (ingest["videoCodec"], ingest["audioCodec"]) == ("h264", "aac")
        assert (ingest["width"], ingest["height"]) == (640, 360)
        assert ingest["audioSampleRate"] == 48_000  # PyAV's word, not the FLV header's 44 kHz
        assert ingest["audioChannels"] == 1
        assert ingest["profile"] == "High" and ingest["pixelFormat"] == "yuv420p"
        assert ingest["frameRate"] == pytest.approx(30, abs=1.5)
        assert ingest["keyframeInterval"] == pytest.approx(10, abs=0.2)
        warned = {
            (d["service"], d["severity"])
            for d in facts["diagnostics"]
            if d["code"] == "keyframe-interval"
        }
        assert warned == {("YouTube", "warning"), ("Twitch", "warning")}, facts["diagnostics"]

        # Twitch's server dies and comes back mid-stream; the agent reconnects.
        twitch.kill()
        time.sleep(1)
        twitch.start()
        tw = stream.destinations["Twitch"]["id"]

        def twitch_state() -> dict:
            return next(d for d in stats()["destinations"] if d["id"] == tw)

        wait_until(
            lambda: twitch_state()["state"] == "live" and twitch_state()["reconnects"] >= 1,
            20,
            "Twitch live again",
            interval=0.3,
        )

        # A new picture once a new keyframe came (every 10 s).
        wait_until(
            lambda: (got := thumbnail(api, stream.id))[0] == 200 and got[1] != first,
            25,
            "a new thumbnail",
            interval=1,
        )
        status, later = thumbnail(api, stream.id)
        assert status == 200 and isinstance(later, bytes)
        assert decoded(later).size == (320, 180)
        assert decoded(later).tobytes() != decoded(first).tobytes()

        assert publish.wait(90) == 0, publish.stderr
        agent.wait_closed(stream)

        def session() -> dict:
            sessions = api.call("GET", f"/streams/{stream.id}/sessions")
            assert isinstance(sessions, list) and len(sessions) == 1, sessions
            return sessions[0]

        wait_until(lambda: session()["endedAt"] is not None, 15, "the session to end")
        ended = session()
        assert ended["endReason"] == "ended"
        assert ended["agent"] == agent_name
        ingest = ended["ingest"]
        assert (ingest["videoCodec"], ingest["audioCodec"]) == ("h264", "aac")
        assert (ingest["width"], ingest["height"], ingest["audioSampleRate"]) == (640, 360, 48_000)
        assert ingest["keyframeInterval"] == pytest.approx(10, abs=0.2)
        assert ingest["frameRate"] == pytest.approx(30, abs=1.5)
        media_bits = gop10_media.path.stat().st_size * 8
        assert ingest["bytesIn"] >= gop10_media.path.stat().st_size * 0.95
        assert ingest["averageBitrate"] == pytest.approx(media_bits / 32, rel=0.35)
        assert any(d["code"] == "keyframe-interval" for d in ended["diagnostics"])
        duration = 32
        by_service = {d["service"]: d for d in ended["destinations"]}
        assert set(by_service) == {"YouTube", "Twitch"}
        for service, report in by_service.items():
            witnessed = sent_through(proxies[service])
            # What the receiver got, within what was in flight when Twitch's died.
            assert report["bytesSent"] == pytest.approx(witnessed, abs=256 * 1024), service
            assert report["bytesSent"] >= witnessed
        yt, tw_report = by_service["YouTube"], by_service["Twitch"]
        assert yt["bytesSent"] == sent_through(proxies["YouTube"])  # nothing in flight lost
        assert yt["reconnects"] == 0
        assert duration - 3 <= yt["liveSeconds"] <= duration + 8
        assert tw_report["reconnects"] >= 1
        # Live again when the publish ended, but the session keeps what went wrong.
        assert yt["lastError"] is None
        assert tw_report["lastError"], tw_report
        assert keys["Twitch"] not in tw_report["lastError"]
        assert tw_report["liveSeconds"] < yt["liveSeconds"]  # the time it was down

        # rig restarts: the same session from PostgreSQL.
        rig.process.stop()
        rig.start()
        assert session() == ended
    finally:
        for proxy in proxies.values():
            proxy.close()


def test_a_stream_without_video_has_no_thumbnail(e2e, audio_only):
    stack = e2e.stack(heartbeat_interval=1)
    stream = stack.api.stream(dest_keys())
    media = Media(audio_only, None, {})  # type: ignore[arg-type]
    publish = e2e.publish(media, stack.agent, stream.key)
    wait_until(
        lambda: (stack.api.call("GET", f"/streams/{stream.id}/stats")["ingest"] or {}).get(
            "audioSampleRate"
        ),
        15,
        "the audio's facts",
    )
    time.sleep(2)  # two thumbnail rounds of the agent
    status, body = thumbnail(stack.api, stream.id)
    assert status == 404 and isinstance(body, dict) and body["errorCode"] == 1000
    assert "no video" in body["message"]  # said at once, from the agent's heartbeat
    assert publish.wait(60) == 0, publish.stderr
