"""What a stranger may cost the agent: per-address accounting, before a key is checked.

A connection is *unauthenticated* from its TCP accept until its publish is accepted (rig
said the key is good). Strangers get only what an honest publisher needs:

- `Admission`: connections at once, in all (RIG_AGENT_MAX_CONNECTIONS) and per address
  (RIG_AGENT_MAX_CONNECTIONS_PER_ADDRESS), and unauthenticated connections per address
  (RIG_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS): one address cannot fill the server, so a
  slowloris from one address leaves room for everyone else. It also keeps the bytes all
  unauthenticated connections buffer, together (RIG_AGENT_UNAUTHENTICATED_BUFFER_BYTES).
- `FailedPublishes`: a token bucket per address (rig's `rig.token_bucket.TokenBucket`, as
  for password guesses) that refused publishes spend (wrong key, wrong application): a
  burst, then a steady rate; beyond it a publish is refused without asking rig, so
  guessing keys costs rig nothing.
- `RefusedKeys`: keys rig said it does not know, for a few seconds (RIG_AGENT_REFUSED_KEY_TTL),
  by SHA-256 only: the same wrong key again is refused at once. Short, because a stream
  that was inactive may be switched on a moment later.
- `RefusalLog`: log lines about refused strangers, 20 per 10 s and one summary line
  for the rest (every refusal is counted for /metrics by `agent.metrics.AgentStats`).

An address is an IPv4 address or an IPv6 /64 (what one subscriber usually gets: counting
single IPv6 addresses would give one attacker 2^64 of them).

Everything takes the clock as an argument or a callable, so it is tested without sleeping.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from rig.token_bucket import TokenBucket

#: How many keys the negative cache keeps at most; past that the oldest are forgotten
#: (memory stays bounded whatever the attacker does).
MAX_TRACKED = 100_000


def address_of(host: str) -> str:
    """The unit limits count by: an IPv4 address (also when mapped into IPv6), or the
    /64 prefix of an IPv6 address. Anything else (a Unix socket) is taken as it is."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)).network_address}/64"
    return str(ip)


@dataclass(frozen=True)
class AdmissionLimits:
    """The connection limits (settings of the same names, RIG_AGENT_...)."""

    max_connections: int = 200
    max_connections_per_address: int = 64
    max_unauthenticated_per_address: int = 32
    unauthenticated_buffer_bytes: int = 32 * 1024 * 1024


class Admission:
    """Counts connections per address; says which new ones to refuse."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.connections = 0
        self.unauthenticated_bytes = 0
        self._per_address: collections.Counter[str] = collections.Counter()
        self._unauthenticated: collections.Counter[str] = collections.Counter()

    def admit(self, address: str) -> str | None:
        """Count a new (unauthenticated) connection from `address`, or say why not: one of
        `server_full`, `address_connections`, `address_unauthenticated`."""
        limits = self.limits
        if self.connections >= limits.max_connections:
            return "server_full"
        if self._per_address[address] >= limits.max_connections_per_address:
            return "address_connections"
        if self._unauthenticated[address] >= limits.max_unauthenticated_per_address:
            return "address_unauthenticated"
        self.connections += 1
        self._per_address[address] += 1
        self._unauthenticated[address] += 1
        return None

    def authenticated(self, address: str) -> None:
        """A connection of `address` had its publish accepted."""
        _decrement(self._unauthenticated, address)

    def left(self, address: str, *, authenticated: bool) -> None:
        """A connection of `address` closed."""
        self.connections -= 1
        _decrement(self._per_address, address)
        if not authenticated:
            _decrement(self._unauthenticated, address)

    def charge(self, delta: int) -> bool:
        """Unauthenticated connections buffer `delta` more bytes (or fewer); False once
        they buffer more than the limit all together."""
        self.unauthenticated_bytes += delta
        return self.unauthenticated_bytes <= self.limits.unauthenticated_buffer_bytes

    def unauthenticated_from(self, address: str) -> int:
        """Unauthenticated connections of `address` now."""
        return self._unauthenticated[address]


def _decrement(counter: collections.Counter[str], key: str) -> None:
    count = counter[key] - 1
    if count > 0:
        counter[key] = count
    else:
        del counter[key]


class FailedPublishes:
    """Refused publishes per address: a token bucket (rig's `TokenBucket`, as for password
    guesses) of `burst` tokens refilled at `per_minute` (above 0), which only a publish
    that fails spends. Checking costs nothing, so any number of good publishes from one
    address may be authorised at once (a studio, a benchmark); `burst` 0: no limit."""

    def __init__(
        self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bucket = TokenBucket(burst, burst * 60.0 / per_minute, clock)

    def wait(self, address: str) -> float:
        """0 if `address` may try a publish now, else the seconds until it may."""
        wait = self._bucket.take(address)
        if not wait:
            self._bucket.give_back(address)  # a look, not a spend
        return wait

    def failed(self, address: str) -> None:
        """A publish from `address` was refused: it costs a token."""
        self._bucket.take(address)


def key_digest(stream_key: str) -> bytes:
    """What the negative cache keeps of a key: its SHA-256, never the key."""
    return hashlib.sha256(stream_key.encode()).digest()


class RefusedKeys:
    """Keys rig refused as unknown or inactive, remembered for `ttl` seconds (hashed)."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max_tracked = max_tracked
        self._until: dict[bytes, float] = {}  # digest -> expiry, oldest first

    def add(self, stream_key: str) -> None:
        """rig just refused this key."""
        self.add_digest(key_digest(stream_key))

    def add_digest(self, digest: bytes) -> None:
        """rig just refused the key of this digest (another worker asked it)."""
        if self.ttl <= 0:
            return
        self._until.pop(digest, None)
        self._until[digest] = self._clock() + self.ttl
        self.prune()

    def __contains__(self, stream_key: str) -> bool:
        until = self._until.get(key_digest(stream_key))
        return until is not None and until > self._clock()

    def discard(self, stream_key: str) -> None:
        """The key is good after all (rig accepted it)."""
        self._until.pop(key_digest(stream_key), None)

    def prune(self) -> None:
        """Forget expired entries (they are oldest first), and the oldest past the cap."""
        now = self._clock()
        until = self._until
        while until:
            digest, expiry = next(iter(until.items()))
            if expiry > now and len(until) <= self._max_tracked:
                break
            del until[digest]

    def __len__(self) -> int:
        return len(self._until)


class RefusalLog:
    """Log lines about refusals, bounded: the first `per_interval` refusals of each
    `interval` are logged as they come, the rest are counted by kind and summed up in
    one line when the interval ends (`tick`). An attack then writes a few lines a
    second, not a line per connection; /metrics counts every refusal (AgentStats)."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        per_interval: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.interval = interval
        self.per_interval = per_interval
        self._clock = clock
        self._logged = 0
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._since = clock()

    def refused(self, kind: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Log `message % args` about a refusal of `kind`, unless `per_interval` lines
        were logged in the current interval already (then it is only counted)."""
        self.tick()
        if self._logged < self.per_interval:
            self._logged += 1
            self.log.log(level, message, *args)
        else:
            self._unlogged[kind] += 1

    def tick(self) -> None:
        """End the interval if it is over: one line for what was not logged in it."""
        now = self._clock()
        if now - self._since < self.interval:
            return
        if self._unlogged:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self._unlogged.items()))
            self.log.warning(
                "%d more refusal(s) not logged in the last %.0f s: %s (totals in /metrics)",
                sum(self._unlogged.values()),
                now - self._since,
                kinds,
            )
        self._logged = 0
        self._unlogged.clear()
        self._since = now
