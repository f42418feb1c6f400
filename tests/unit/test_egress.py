"""Destination URLs and reconnect backoff."""

import pytest

from agent.destination import Backoff, Destination
from agent.egress import EgressError, parse_target


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "app", "name", "tc_url"),
    [
        (
            "rtmp://a.rtmp.youtube.com/live2/abcd-efgh",
            "rtmp",
            "a.rtmp.youtube.com",
            1935,
            "live2",
            "abcd-efgh",
            "rtmp://a.rtmp.youtube.com/live2",
        ),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-1-2?s_bl=1",
            "rtmps",
            "live-api-s.facebook.com",
            443,
            "rtmp",
            "FB-1-2?s_bl=1",
            "rtmps://live-api-s.facebook.com/rtmp",
        ),
        (
            "rtmp://127.0.0.1:19351/app/inst/key",
            "rtmp",
            "127.0.0.1",
            19351,
            "app/inst",
            "key",
            "rtmp://127.0.0.1:19351/app/inst",
        ),
    ],
)
def test_parse_target(url, scheme, host, port, app, name, tc_url):
    target = parse_target(url)
    assert (target.scheme, target.host, target.port, target.app, target.stream_name) == (
        scheme,
        host,
        port,
        app,
        name,
    )
    assert target.tc_url == tc_url
    assert name.partition("?")[0] not in target.safe_name  # the key never reaches logs


@pytest.mark.parametrize(
    "url", ["http://host/app/key", "rtmp:///app/key", "rtmp://host/key", "rtmp://host/app/"]
)
def test_parse_target_rejects(url):
    with pytest.raises(EgressError):
        parse_target(url)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    backoff = Backoff(initial=1, maximum=30)
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.next_delay() <= 1.2


def test_destination_repr_hides_the_url():
    destination = Destination(id=3, service="YouTube", url="rtmp://h/live2/SECRETKEY")
    assert "SECRETKEY" not in repr(destination)
