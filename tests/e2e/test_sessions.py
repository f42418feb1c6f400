"""Sessions across a real publish: ffmpeg pushes to the agent, nginx-rtmp receivers stand
in for YouTube and Twitch, and afterwards rig's session says what each one got; the
numbers are still there after rig restarts."""

import pytest

from .harness import dest_keys, key_id, wait_until

pytestmark = pytest.mark.e2e


def test_a_real_publish_leaves_its_session(e2e, media):
    stack = e2e.stack(heartbeat_interval=1)
    api = stack.api
    keys = dest_keys()
    stream = api.stream(keys)
    publish = e2e.publish(media, stack.agent, stream.key)
    stack.agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")

    def current() -> dict:
        (session,) = api.call("GET", f"/streams/{stream.id}/sessions")
        return session

    wait_until(lambda: current()["ingest"]["videoCodec"] is not None, 15, "the ingest's facts")
    live = current()
    assert live["endedAt"] is None and live["endReason"] is None
    agent_name = api.call("GET", f"/streams/{stream.id}")["provisionStatus"]["agent"]
    assert publish.wait(60) == 0, publish.stderr
    wait_until(lambda: current()["endedAt"] is not None, 15, "the session to end")

    session = current()
    assert session["id"] == live["id"]
    assert session["endReason"] == "ended"
    assert session["agent"] == agent_name
    ingest = session["ingest"]
    assert (ingest["videoCodec"], ingest["audioCodec"]) == ("h264", "aac")
    assert (ingest["width"], ingest["height"]) == (640, 360)
    assert ingest["audioSampleRate"] == 48_000
    assert ingest["bytesIn"] > 0 and ingest["averageBitrate"] > 0
    sent = {d["service"]: d for d in session["destinations"]}
    assert set(sent) == {"YouTube", "Twitch"}
    for service, receiver in (("YouTube", stack.youtube), ("Twitch", stack.twitch)):
        recorded = receiver.recording(keys[service]).stat().st_size
        assert sent[service]["bytesSent"] > recorded // 2, (service, sent[service], recorded)
        assert sent[service]["lastError"] is None

    # rig restarts: the session is read back from PostgreSQL as it was.
    stack.rig.process.stop()
    stack.rig.start()
    assert api.call("GET", f"/streams/{stream.id}/sessions") == [session]
