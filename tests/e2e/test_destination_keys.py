"""Destination keys are opaque (issue 12, item 7): real rig, agent and receivers.

A key may hold `/`, `#`, `?` and `%`: it arrives at the destination exactly as the user
typed it (the wire recorder prints the stream name it received; so does nginx-rtmp's
log), and no part of it is in the agent's log or in `lastError`, also for a
destination that cannot be reached. Once that destination is reachable, it goes live and
its `lastError` is cleared (the session keeps the last failure as history).
"""

from __future__ import annotations

import ast
import re
import secrets

import pytest

from .harness import Receiver, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_keys_arrive_exactly_and_are_never_shown(e2e, long_media):
    media = long_media
    recorder = e2e.wire_recorder("app")
    nginx = e2e.receiver("live2")
    unreachable = free_port()
    rig = e2e.rig(
        YouTube=nginx.url, Kick=recorder.url, Twitch=f"rtmp://127.0.0.1:{unreachable}/app"
    )
    agent = e2e.agent(rig)
    api = e2e.api(rig)
    tok = secrets.token_hex(4)
    keys = {
        "Kick": f"head{tok}/tail{tok}#frag{tok}?query{tok}=1%41&x",
        "YouTube": f"hash{tok}#pct{tok}%41%2F",  # nginx cuts a name at `?` and `/` is a path
        "Twitch": f"lead{tok}/rest{tok}",
    }
    stream = api.stream(keys)
    publish = e2e.publish(media, agent, stream.key)

    def twitch_error() -> str | None:
        stats = api.call("GET", f"/streams/{stream.id}/stats")
        return next(d for d in stats["destinations"] if d["service"] == "Twitch")["lastError"]

    error = wait_until(twitch_error, 20, "Twitch's lastError")
    assert f"rtmp://127.0.0.1:{unreachable}/app" in error, error
    # Twitch comes up: live, and no error shown any more.
    (e2e.root / "late-twitch").mkdir()
    twitch = Receiver(e2e.root / "late-twitch", "app", unreachable)
    e2e.receivers.append(twitch)
    twitch.start()
    wait_until(lambda: twitch_error() is None, 20, "Twitch's lastError cleared")
    assert publish.wait(60) == 0, publish.stderr
    agent.wait_closed(stream)

    published = [
        tuple(ast.literal_eval(part) for part in re.findall(r"'(?:[^'\\]|\\.)*'", line))
        for line in recorder.log().splitlines()
        if line.startswith("publish ")
    ]
    assert published == [("app", keys["Kick"])]
    # nginx-rtmp logs the name it was given (`args` is what followed a `?`).
    assert f"publish: name='{keys['YouTube']}' args=''" in nginx.log()
    assert f"publish: name='{keys['Twitch']}' args=''" in twitch.log()

    parts = re.findall(rf"[a-z]+{tok}", "".join(keys.values()))
    assert len(parts) == 8
    log = agent.log()
    leaked = [part for part in parts if part in log or part in error]
    assert not leaked, f"key parts in the agent's log or lastError: {leaked}"
    assert f"Kick #{stream.destinations['Kick']['id']}: live on rtmp://127.0.0.1:" in log
