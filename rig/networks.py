"""Address ranges in settings (RIG_TRUSTED_PROXIES): parsed, validated, matched."""

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """`10.0.0.0/8, 192.0.2.7` -> networks (raises ValueError on a bad entry)."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """Whether `address` is in one of `networks` (False for what is not an address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def networks_setting(text: str) -> str:
    """RIG_TRUSTED_PROXIES as an option type: validated, kept as given."""
    parse_networks(text)
    return text
