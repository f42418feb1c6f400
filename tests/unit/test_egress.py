"""Destination server URLs and keys, and reconnect backoff."""

import asyncio
import re
import socket

import pytest

from agent.destination import Backoff, Destination
from agent.egress import EgressError, open_publish, parse_target
from agent.rig_client import server_url_of


@pytest.mark.parametrize(
    ("server", "key", "scheme", "host", "port", "app", "tc_url"),
    [
        (
            "rtmp://a.rtmp.youtube.com/live2",
            "abcd-efgh",
            "rtmp",
            "a.rtmp.youtube.com",
            1935,
            "live2",
            "rtmp://a.rtmp.youtube.com/live2",
        ),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp",
            "FB-1-2?s_bl=1",
            "rtmps",
            "live-api-s.facebook.com",
            443,
            "rtmp",
            "rtmps://live-api-s.facebook.com/rtmp",
        ),
        (
            "rtmp://127.0.0.1:19351/app/inst",
            "key",
            "rtmp",
            "127.0.0.1",
            19351,
            "app/inst",
            "rtmp://127.0.0.1:19351/app/inst",
        ),
        # Keys are opaque: every character arrives as given, none moves into the app.
        (
            "rtmp://h/app",
            "head/tail#frag?query=value%41&extra",
            "rtmp",
            "h",
            1935,
            "app",
            "rtmp://h/app",
        ),
    ],
)
def test_parse_target(server, key, scheme, host, port, app, tc_url):
    target = parse_target(server, key)
    assert (target.scheme, target.host, target.port, target.app, target.stream_name) == (
        scheme,
        host,
        port,
        app,
        key,
    )
    assert target.tc_url == tc_url
    for part in re.findall(r"[a-z]{4,}", key):  # the key never reaches logs
        assert part not in target.safe_name
        assert part not in repr(target)


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ("http://host/app", "key"),
        ("rtmp:///app", "key"),
        ("rtmp://host", "key"),
        ("rtmp://host/", "key"),
        ("rtmp://host/app#x", "key"),
        ("rtmp://host:99999/app", "key"),
        ("rtmp://host/app", ""),
        ("", "key"),
    ],
)
def test_parse_target_rejects(server, key):
    with pytest.raises(EgressError):
        parse_target(server, key)


@pytest.mark.parametrize(
    ("rtmp_url", "key", "server"),
    [
        ("rtmp://a.rtmp.youtube.com/live2/abcd", "abcd", "rtmp://a.rtmp.youtube.com/live2"),
        ("rtmp://h/app/head/tail#x?y%41", "head/tail#x?y%41", "rtmp://h/app"),
        ("rtmp://h/app/other", "key", ""),  # not its key: no guess
        ("rtmp://h/app/key", "", ""),
    ],
)
def test_server_url_is_the_url_without_the_key_at_its_end(rtmp_url, key, server):
    assert server_url_of(rtmp_url, key) == server


def test_backoff_doubles_up_to_the_cap_with_jitter():
    backoff = Backoff(initial=1, maximum=30)
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.next_delay() <= 1.2


def test_destination_repr_hides_the_key():
    destination = Destination(3, "YouTube", "rtmp://h/live2", "SECRETKEY")
    assert "SECRETKEY" not in repr(destination)


def test_a_host_that_does_not_resolve_is_said_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed name lookup raises socket.gaierror, whose errno is a negative EAI code:
    os.strerror(-2) is "Unknown error -2", which tells a streamer nothing."""

    async def no_such_host(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def attempt() -> str:
        monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", no_such_host)
        target = parse_target("rtmp://a.rtmp.example.com/live2", "key-1234")
        with pytest.raises(EgressError) as caught:
            await open_publish(target, chunk_size=4096, timeout=5, write_timeout=5)
        return str(caught.value)

    error = asyncio.run(attempt())
    assert "Unknown error" not in error
    assert "cannot resolve a.rtmp.example.com" in error
    assert "key-1234" not in error


@pytest.mark.parametrize(
    ("server", "shown"),
    [
        ("rtmp://a.rtmp.youtube.com/live2", "rtmp://a.rtmp.youtube.com:1935/live2"),
        ("rtmps://live-api-s.facebook.com:443/rtmp/", "rtmps://live-api-s.facebook.com:443/rtmp"),
        # The server and the key pasted together, OBS's commonest mistake: the key is in
        # the path, and what is logged and shown as lastError must not carry it.
        ("rtmp://127.0.0.1:59929/app/PATHSECRET123", "rtmp://127.0.0.1:59929/app/…"),
        ("rtmp://h/app/inst/PATHSECRET123", "rtmp://h:1935/app/…"),
        ("rtmp://h/app?token=PATHSECRET123", "rtmp://h:1935/app?…"),
    ],
)
def test_the_name_logged_for_a_destination_shows_no_more_than_its_application(server, shown):
    target = parse_target(server, "key-1234")
    assert target.safe_name == shown
    assert "PATHSECRET123" not in target.safe_name
    assert "key-1234" not in target.safe_name
