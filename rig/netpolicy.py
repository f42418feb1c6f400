"""Which network addresses rig and its agents may connect to on a user's behalf.

A webhook's callbackUrl and a Custom destination's rtmpUrl are chosen by users, and rig
(webhooks) or an agent (RTMP) connects there. Pointed at the operator's own network,
that is server-side request forgery: the cloud metadata service (169.254.169.254), a
database on the loopback address, a private service, answered with what it says. So by
default only public unicast addresses are allowed; RIG_ALLOW_PRIVATE_DESTINATIONS allows
the rest (a self-hosted setup whose receivers are on its own network; the tests).

The policy is checked twice: when the URL is saved (a literal address, or a name's
current addresses: a clear error for the user), and when connecting, on the very
address connected to (DNS may answer differently by then). The connect-time check is
the one that counts. Operator-configured service URLs (RIG_SERVICE_URL_*) are trusted
and never checked.

Pure functions of addresses: used by rig (rig/webhooks.py, rig/streams.py) and the
agent (agent/egress.py) alike.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT = 2.0  # seconds a validation-time lookup may take

# Named ranges first (clear words for the user), then anything else not globally
# routable (documentation, benchmarking, reserved ranges, ...).
_KINDS: list[tuple[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]] = [
    ("unspecified", [ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128")]),
    ("loopback", [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]),
    (
        "link-local",
        [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")],
    ),
    (
        "private",
        [
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("172.16.0.0/12"),
            ipaddress.ip_network("192.168.0.0/16"),
            ipaddress.ip_network("100.64.0.0/10"),  # shared address space (carrier NAT)
        ],
    ),
    ("unique-local", [ipaddress.ip_network("fc00::/7")]),
    ("multicast", [ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8")]),
]


class AddressNotAllowed(OSError):
    """A connection refused by this policy (an OSError, so socket code handles it as a
    failed connection). The message never names the address: a name's resolution
    says something about the operator's network."""

    def __init__(self) -> None:
        super().__init__("the destination's address is not public")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped ::ffff:a.b.c.d, 6to4,
    Teredo, NAT64 64:ff9b::/96), which is where a connection would really go."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: str | IPAddress) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...), or None
    when it is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    inner = embedded_ipv4(ip)
    if inner is not None:
        return address_problem(inner)
    for kind, networks in _KINDS:
        if any(ip in network for network in networks if network.version == ip.version):
            return kind
    if not ip.is_global:
        return "reserved"
    return None


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one (`[::1]` included), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def allowed_addresses(infos: Iterable[tuple], allow_private: bool) -> list[tuple]:
    """The getaddrinfo() results a connection may use; AddressNotAllowed if none."""
    infos = list(infos)
    if allow_private:
        return infos
    allowed = [info for info in infos if address_problem(info[4][0]) is None]
    if not allowed:
        raise AddressNotAllowed()
    return allowed


async def host_problem(host: str, allow_private: bool) -> str | None:
    """Why a user may not save a URL with this host (None: they may).

    A literal address is judged as it is; a name by the addresses it has now. A name
    that does not resolve now is accepted: the connect-time check decides then.
    """
    if allow_private:
        return None
    literal = literal_address(host)
    if literal is not None:
        problem = address_problem(literal)
        return f"a {problem} address" if problem else None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return None
    for info in infos:
        problem = address_problem(info[4][0])
        if problem:
            return f"a name with a {problem} address"
    return None
