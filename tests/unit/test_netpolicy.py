"""rig/netpolicy.py: which addresses rig and agents may connect to for a user."""

import socket

import pytest

from rig.netpolicy import (
    AddressNotAllowed,
    address_problem,
    allowed_addresses,
    host_problem,
    literal_address,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (an address refused, not bound)
    ("::", "unspecified"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),  # carrier-grade NAT
    ("fd00::1", "unique-local"),
    ("fc00::1", "unique-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("192.0.2.10", "reserved"),  # documentation
    ("198.18.0.1", "reserved"),  # benchmarking
    ("255.255.255.255", "reserved"),
    ("240.0.0.1", "reserved"),
    ("2001:db8::1", "reserved"),
]
PUBLIC = ["1.1.1.1", "8.8.8.8", "142.250.74.110", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_non_public_addresses(address, kind):
    assert address_problem(address) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert address_problem(address) is None


def test_literal_addresses():
    assert str(literal_address("[::1]")) == "::1"
    assert str(literal_address("127.0.0.1")) == "127.0.0.1"
    assert literal_address("example.com") is None
    assert literal_address("127.1") is None  # not an address to ipaddress: a name


def info(address: str, family: int = socket.AF_INET) -> tuple:
    return (family, socket.SOCK_STREAM, 6, "", (address, 1935))


def test_allowed_addresses_at_connect_time():
    mixed = [info("10.0.0.1"), info("8.8.8.8"), info("::1", socket.AF_INET6)]
    assert allowed_addresses(mixed, allow_private=False) == [info("8.8.8.8")]
    assert allowed_addresses(mixed, allow_private=True) == mixed
    with pytest.raises(AddressNotAllowed) as raised:
        allowed_addresses([info("169.254.169.254")], allow_private=False)
    assert isinstance(raised.value, OSError)
    assert "169.254" not in str(raised.value)


async def test_host_problem_at_validation_time():
    assert await host_problem("127.0.0.1", False) == "a loopback address"
    assert await host_problem("[::ffff:169.254.169.254]", False) == "a link-local address"
    assert await host_problem("localhost", False) == "a name with a loopback address"
    assert await host_problem("127.1", False) == "a name with a loopback address"
    assert await host_problem("8.8.8.8", False) is None
    assert await host_problem("127.0.0.1", True) is None
    assert await host_problem("localhost", True) is None
    # A name that does not resolve now: the connect-time check decides later.
    assert await host_problem("ingest.invalid", False) is None
