"""Abuse limits on the routes that take a password or an API key.

`POST /accounts/auth/local`, `POST /accounts/` and `POST /agents/auth` are limited per
client address (each route its own allowance) and, for the first two, per username
(login and sign-up share it). Each allowance is a token bucket: `limit` requests at
once, refilling evenly over `window` seconds. A refused request is answered HTTP 429,
errorCode 1010, with `Retry-After`.

The counters live in the process: with several rig replicas each has its own, so the
effective limit is up to `replicas x limit`. The client address is the TCP peer, or,
when the peer is one of RIG_TRUSTED_PROXIES, the last address in X-Forwarded-For
that is not itself a trusted proxy.
"""

import ipaddress
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from rig.errors import ApiError, Handler, route_of

MAX_KEYS = 100_000  # buckets kept at most; full (idle) buckets are dropped first

# (method, route pattern) -> whether the body's username is limited too
LIMITED_ROUTES: dict[tuple[str, str], bool] = {
    ("POST", "/accounts/auth/local"): True,
    ("POST", "/accounts/"): True,
    ("POST", "/agents/auth"): False,
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TooManyRequests(ApiError):
    """errorCode 1010 (extension): slow down; `Retry-After` says for how long."""

    status, error_code, default_message = 429, 1010, "Too many requests"


class TokenBucket:
    """Many token buckets, one per key: `limit` tokens, refilled over `window` seconds."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limit = limit
        self.rate = limit / window if window > 0 else math.inf  # tokens per second
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Spend one token of `key`: 0.0 if allowed, else seconds until one is back."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)  # re-inserted last: most recent
            self._trim(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _trim(self, now: float) -> None:
        if len(self._buckets) <= self._max_keys:
            return
        # Buckets that have refilled are the same as absent ones: drop those first,
        # then the least recently used.
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.limit:
                del self._buckets[key]
        while len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]


def parse_networks(text: str) -> list[Network]:
    """`10.0.0.0/8, 192.0.2.7` -> networks (raises ValueError on a bad entry)."""
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: web.BaseRequest, trusted: list[Network]) -> str:
    """The caller's address: the peer, or what trusted proxies say in X-Forwarded-For."""
    peer = request.remote or ""
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted):
            return hop
    return peer


@dataclass
class RateLimits:
    """The buckets of one rig process."""

    per_address: TokenBucket
    per_username: TokenBucket
    trusted: list[Network]

    @classmethod
    def create(
        cls, address_limit: int, username_limit: int, window: float, trusted_proxies: str
    ) -> "RateLimits":
        return cls(
            TokenBucket(address_limit, window),
            TokenBucket(username_limit, window),
            parse_networks(trusted_proxies),
        )

    async def check(self, request: web.Request) -> None:
        """Raise TooManyRequests when this request is over a limit."""
        route = route_of(request)
        by_username = LIMITED_ROUTES.get((request.method, route))
        if by_username is None:
            return
        address = client_address(request, self.trusted)
        wait = self.per_address.take(f"{route}|{address}")
        if wait:
            raise _refused(wait, "too many requests from this address")
        if not by_username or self.per_username.limit <= 0:
            return
        username = await _username_of(request)
        if username is not None:
            wait = self.per_username.take(username.lower())
            if wait:
                raise _refused(wait, "too many attempts for this username")


def _refused(wait: float, reason: str) -> TooManyRequests:
    seconds = max(1, math.ceil(wait))
    return TooManyRequests(
        "Too many requests, try again later",
        details={"reason": reason, "retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )


async def _username_of(request: web.Request) -> str | None:
    """The body's `username`, if it is a JSON object with one (the handler checks the rest).

    aiohttp keeps the body once read, so the handler reads the same bytes again.
    """
    if request.content_type != "application/json":
        return None
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    username = body.get("username") if isinstance(body, dict) else None
    return username if isinstance(username, str) and username else None


def rate_limit_middleware(limits: RateLimits) -> Callable:
    """A middleware applying `limits` (inside the envelope middleware)."""

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        await limits.check(request)
        return await handler(request)

    return rate_limit


def networks_setting(text: str) -> str:
    """RIG_TRUSTED_PROXIES as an option type: validated, kept as given."""
    parse_networks(text)
    return text
