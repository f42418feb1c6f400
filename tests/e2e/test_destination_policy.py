"""The agent checks the address it connects a Custom destination to (issue 12, item 8):
a destination that rig accepted (its setting allowed private addresses, or DNS
answered differently then) still never reaches a private address when the agent's own
setting says public only."""

from __future__ import annotations

import re

import pytest

from .harness import dest_keys, key_id, wait_until

pytestmark = pytest.mark.e2e


def test_the_agent_refuses_a_custom_destination_on_a_private_address(e2e, media):
    custom = e2e.receiver("live")
    youtube = e2e.receiver("live2")
    rig = e2e.rig(YouTube=youtube.url)  # the harness allows private addresses at rig
    agent = e2e.agent(rig, allow_private_destinations="no")
    api = e2e.api(rig)
    keys = dest_keys()
    stream = api.stream({"YouTube": keys["YouTube"]})
    dest = api.call(
        "POST",
        f"/streams/{stream.id}/destination",
        {"service": "Custom", "streamKey": "custom-key", "rtmpUrl": custom.url},
    )
    publish = e2e.publish(media, agent, stream.key)
    agent.wait_for_log(rf"publish of stream {key_id(stream.key)} from .* accepted")
    # A literal loopback address: failed at once, with the reason and the setting (a
    # name would be retried: tests/agent/test_stream_relay.py).
    words = (
        "the destination's address is not public (loopback): this agent does not connect"
        " to such addresses (RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS)"
    )
    agent.wait_for_log(rf"Custom #{dest['id']}: {re.escape(words)}; giving up")

    def reported_error() -> str | None:
        stats = api.call("GET", f"/streams/{stream.id}/stats")
        (reported,) = [d for d in stats["destinations"] if d["id"] == dest["id"]]
        return reported["lastError"]

    last_error = wait_until(reported_error, 15, "the heartbeat to report the refusal")
    assert last_error == words
    assert publish.wait(60) == 0, publish.stderr
    # The operator's own service (RIG_SERVICE_URL_YOUTUBE on 127.0.0.1) is trusted.
    agent.wait_closed(stream, ("YouTube",))
    assert youtube.recordings(keys["YouTube"])
    assert custom.recordings() == []
