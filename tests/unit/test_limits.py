"""agent.limits: per-address accounting, the failed-publish throttle, the negative
cache of refused keys and the bounded refusal log; the clock is passed in."""

import logging

import pytest

from agent.limits import (
    Admission,
    AdmissionLimits,
    FailedPublishes,
    RefusalLog,
    RefusedKeys,
    address_of,
    key_digest,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.2", "127.0.0.2"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"),
        ("/run/socket", "/run/socket"),
    ],
)
def test_addresses_are_counted_by_ipv4_address_or_ipv6_64(host, address):
    assert address_of(host) == address


def test_one_address_cannot_fill_the_server():
    admission = Admission(AdmissionLimits(10, 4, 2, 1000))
    assert [admission.admit("a") for _ in range(3)] == [None, None, "address_unauthenticated"]
    admission.authenticated("a")  # one publish accepted: a stranger's slot is free again
    assert admission.admit("a") is None
    admission.authenticated("a")
    assert admission.admit("a") is None
    assert admission.admit("a") == "address_connections"  # 4 connections from "a"
    assert [admission.admit(b) for b in "bcdefg"] == [None] * 6
    assert admission.admit("h") == "server_full"  # 10 in all
    admission.left("b", authenticated=False)
    assert admission.admit("h") is None
    assert admission.unauthenticated_from("a") == 2
    admission.left("a", authenticated=False)
    assert admission.unauthenticated_from("a") == 1


def test_strangers_share_one_buffer_budget():
    admission = Admission(AdmissionLimits(unauthenticated_buffer_bytes=1000))
    assert admission.charge(600)
    assert not admission.charge(500)
    assert admission.charge(-500)  # the connection that went over was closed
    assert admission.unauthenticated_bytes == 600


def test_failed_publishes_burst_then_a_steady_rate():
    clock = Clock()
    throttle = FailedPublishes(burst=3, per_minute=6, clock=clock)  # one every 10 s
    assert [throttle.wait("a") for _ in range(100)] == [0] * 100  # looking costs nothing
    for _ in range(3):
        throttle.failed("a")
    assert throttle.wait("a") == pytest.approx(10)
    assert throttle.wait("b") == 0  # another address is not affected
    clock.now += 4
    assert throttle.wait("a") == pytest.approx(6)
    clock.now += 6
    assert throttle.wait("a") == 0
    throttle.failed("a")
    assert throttle.wait("a") == pytest.approx(10)
    off = FailedPublishes(burst=0, per_minute=1)
    off.failed("a")
    assert off.wait("a") == 0  # burst 0: no limit


def test_refused_keys_are_remembered_briefly_and_hashed():
    clock = Clock()
    refused = RefusedKeys(ttl=5, clock=clock, max_tracked=10)
    refused.add("wrong-key")
    assert "wrong-key" in refused
    assert "other" not in refused
    assert key_digest("wrong-key") in refused._until and "wrong-key" not in refused._until
    clock.now += 5.1
    assert "wrong-key" not in refused
    refused.add("k1")
    refused.discard("k1")
    assert "k1" not in refused
    for n in range(50):
        refused.add(f"key{n}")
    assert len(refused) <= 10 and "key49" in refused
    assert RefusedKeys(ttl=0).add("x") is None  # 0: off
    off = RefusedKeys(ttl=0)
    off.add("x")
    assert "x" not in off


def test_refusal_log_is_bounded_and_sums_up_the_rest(caplog):
    clock = Clock()
    refusals = RefusalLog(
        logging.getLogger("test.refusals"), interval=10, per_interval=3, clock=clock
    )
    with caplog.at_level(logging.WARNING, "test.refusals"):
        for n in range(1000):
            refusals.refused(
                "address_unauthenticated" if n % 2 else "handshake_timeout", "no %d", n
            )
        assert [r.getMessage() for r in caplog.records] == ["no 0", "no 1", "no 2"]
        clock.now += 10
        refusals.tick()
        assert caplog.records[-1].getMessage() == (
            "997 more refusal(s) not logged in the last 10 s: address_unauthenticated 499,"
            " handshake_timeout 498 (totals in /metrics)"
        )
        refusals.refused("x", "next interval")
        assert caplog.records[-1].getMessage() == "next interval"
        clock.now += 30
        refusals.tick()  # nothing unlogged: no summary
        assert len(caplog.records) == 5
