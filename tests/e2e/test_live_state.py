"""Live state across agents, end to end: claims, kicks, hot destination changes, health,
webhooks, and rig restarting under a live stream."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .flvtools import assert_contiguous_run, assert_prefix, assert_whole_stream, parse_flv
from .harness import Rig, dest_keys, free_port, key_id, wait_until

pytestmark = pytest.mark.e2e

FAST = {"heartbeat_interval": 1}  # agents renew claims and pick up changes every second


class WebhookReceiver:
    """An HTTP server recording webhook POSTs; answers 500 to the first `failures`."""

    def __init__(self, failures: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                failing = len(receiver.requests) <= receiver.failures
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [headers["X-Rig-Event"] for headers, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def live_rig(e2e, claim_ttl: int = 15, **urls: str) -> Rig:
    """A rig whose claims expire after `claim_ttl` seconds."""
    rig = Rig(e2e._dir("rig"), e2e._make_database(), urls)
    rig.env["RIG_CLAIM_TTL"] = str(claim_ttl)
    e2e.rigs.append(rig)
    rig.start()
    return rig


def detail(api, stream) -> dict:
    return api.call("GET", f"/streams/{stream.id}")


def test_one_key_is_live_on_one_agent_with_health_and_webhooks(e2e, media):
    closed = free_port()  # Twitch refuses connections
    youtube = e2e.receiver("live2")
    rig = live_rig(e2e, YouTube=youtube.url, Twitch=f"rtmp://127.0.0.1:{closed}/app")
    first, second = e2e.agent(rig, **FAST), e2e.agent(rig, **FAST)
    api = e2e.api(rig)
    keys = dest_keys()
    stream = api.stream(keys)
    hooks = WebhookReceiver(failures=1)
    try:
        webhook = api.call("PUT", f"/streams/{stream.id}/webhook", {"callbackUrl": hooks.url})
        publish = e2e.publish(media, first, stream.key)
        first.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

        live = detail(api, stream)
        assert live["isStreaming"] is True
        assert live["provisionStatus"]["ingestUrl"] == f"rtmp://127.0.0.1:{first.port}/live"

        # The same key on another agent is refused (rig answers 1009) ...
        intruder = e2e.publish(media, second, stream.key)
        assert intruder.wait(20) != 0
        second.wait_for_log(rf"stream {key_id(stream.key)} .*live on another agent")

        # ... and the health of the live one shows the refusing destination.
        def health_reported() -> bool:
            stats = api.call("GET", f"/streams/{stream.id}/stats")
            states = {d["service"]: d["state"] for d in stats["destinations"]}
            return states == {"YouTube": "live", "Twitch": "backoff"}

        wait_until(health_reported, 10, "health in the stats")
        stats = api.call("GET", f"/streams/{stream.id}/stats")
        twitch = next(d for d in stats["destinations"] if d["service"] == "Twitch")
        assert twitch["lastError"].lower().endswith("connection refused")
        assert keys["Twitch"] not in twitch["lastError"]
        ingest = stats["ingest"]
        assert (ingest["videoCodec"], ingest["width"], ingest["height"]) == ("h264", 640, 360)
        assert ingest["bitrate"] > 0 and ingest["bytesIn"] > 0

        assert publish.wait(60) == 0, publish.stderr  # the first publisher was never hurt
        first.wait_closed(stream, ("YouTube",))
        assert_whole_stream(youtube.recording(keys["YouTube"]), media.flv, media.info)
        wait_until(lambda: not detail(api, stream)["isStreaming"], 5, "offline after the end")

        # Webhooks: live, destination.failed, offline; the first attempt got a 500 and was
        # retried with the same delivery id; every request is signed with the secret.
        wait_until(lambda: "stream.offline" in hooks.events(), 15, "stream.offline delivered")
        events = hooks.events()
        assert events[0] == "stream.live"
        assert events.count("stream.live") == 2  # the failed attempt and its retry
        assert "destination.failed" in events
        lives = [
            headers for headers, _ in hooks.requests if headers["X-Rig-Event"] == "stream.live"
        ]
        assert lives[0]["X-Rig-Delivery"] == lives[1]["X-Rig-Delivery"]
        for headers, body in hooks.requests:
            signed = headers["X-Rig-Timestamp"].encode() + b"." + body
            expected = hmac.new(webhook["secret"].encode(), signed, hashlib.sha256).hexdigest()
            assert headers["X-Rig-Signature"] == f"sha256={expected}"
            assert json.loads(body)["streamId"] == stream.id
    finally:
        hooks.close()


def test_a_killed_agent_frees_its_key_within_the_expiry(e2e, long_media, media):
    youtube = e2e.receiver("live2")
    rig = live_rig(e2e, claim_ttl=3, YouTube=youtube.url)
    crashing, standby = e2e.agent(rig, **FAST), e2e.agent(rig, **FAST)
    api = e2e.api(rig)
    stream = api.stream({"YouTube": dest_keys()["YouTube"]})
    e2e.publish(long_media, crashing, stream.key)
    crashing.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

    crashing.kill()  # SIGKILL (its workers too): no release, no goodbye
    killed_at = time.monotonic()
    assert detail(api, stream)["isStreaming"] is True  # the claim outlives the agent ...
    wait_until(lambda: not detail(api, stream)["isStreaming"], 8, "the claim to expire")
    assert time.monotonic() - killed_at <= 3 + 2  # ... until the expiry (+ sweep, polling)

    retry = e2e.publish(media, standby, stream.key)
    standby.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")
    assert retry.wait(60) == 0, retry.stderr


def test_rotating_the_key_kicks_the_publisher(e2e, long_media):
    stack = e2e.stack(**FAST)
    stream = stack.api.stream(dest_keys())
    publish = e2e.publish(long_media, stack.agent, stream.key)
    stack.agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

    rotated_at = time.monotonic()
    new_key = stack.api.call("POST", f"/streams/{stream.id}/changeKey")["key"]
    assert publish.wait(10) != 0, "the publisher with the old key was not kicked"
    assert time.monotonic() - rotated_at < 4  # within a heartbeat (1 s) and some slack
    stack.agent.wait_for_log(rf"stream {key_id(stream.key)}: rig revoked the claim")
    assert detail(stack.api, stream)["isStreaming"] is False
    assert new_key != stream.key

    again = e2e.publish(long_media, stack.agent, stream.key)  # the old key stays out
    assert again.wait(20) != 0


def test_destination_changes_apply_live_without_touching_the_rest(e2e, long_media):
    stack = e2e.stack(**FAST)
    keys = dest_keys()
    stream = stack.api.stream({"YouTube": keys["YouTube"]})
    publish = e2e.publish(long_media, stack.agent, stream.key)
    stack.agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

    time.sleep(3)
    twitch = stack.api.call(
        "POST",
        f"/streams/{stream.id}/destination",
        {"service": "Twitch", "streamKey": keys["Twitch"]},
    )
    path = f"/streams/{stream.id}/destination/{twitch['id']}"
    wait_until(lambda: len(stack.twitch.recordings(keys["Twitch"])) == 1, 10, "Twitch added")
    time.sleep(4)
    stack.api.call("PATCH", path, {"isActive": False})
    stopped = rf"stream {key_id(stream.key)} -> Twitch #{twitch['id']}: stream ended"
    stack.agent.wait_for_log(stopped, timeout=10)
    time.sleep(2)
    stack.api.call("PATCH", path, {"isActive": True})
    wait_until(lambda: len(stack.twitch.recordings(keys["Twitch"])) == 2, 10, "Twitch back")

    assert publish.wait(60) == 0, publish.stderr
    stack.agent.wait_closed(stream)
    # YouTube was never interrupted; Twitch got two runs, each starting on a keyframe.
    assert_whole_stream(stack.youtube.recording(keys["YouTube"]), long_media.flv, long_media.info)
    added, restarted = stack.twitch.recordings(keys["Twitch"])
    start, end = assert_contiguous_run(parse_flv(added), long_media.flv)
    assert 2000 <= start <= 6000 and end < 11000
    start, end = assert_contiguous_run(parse_flv(restarted), long_media.flv)
    assert start > 9000 and end >= 19000


def test_rig_restarting_does_not_interrupt_a_live_stream(e2e, long_media):
    stack = e2e.stack(**FAST)
    keys = dest_keys()
    stream = stack.api.stream(keys)
    publish = e2e.publish(long_media, stack.agent, stream.key)
    stack.agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

    time.sleep(3)
    stack.rig.process.stop()
    stack.agent.wait_for_log("heartbeat failed, streaming on from cached config")
    time.sleep(2)
    stack.rig.start()
    stack.agent.wait_for_log("heartbeat to rig works again")
    live = detail(stack.api, stream)
    assert live["isStreaming"] is True
    assert live["health"]["destinations"], live

    assert publish.wait(60) == 0, publish.stderr
    stack.agent.wait_closed(stream)
    for receiver, service in ((stack.youtube, "YouTube"), (stack.twitch, "Twitch")):
        recording = parse_flv(receiver.recording(keys[service]))
        assert_prefix(recording, long_media.flv)
        assert_whole_stream(receiver.recording(keys[service]), long_media.flv, long_media.info)
    wait_until(lambda: not detail(stack.api, stream)["isStreaming"], 5, "offline after the end")
