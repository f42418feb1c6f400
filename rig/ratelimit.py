"""Abuse limits on the routes that take a password or an API key.

Per client address, each route its own allowance: `POST /accounts/auth/local`,
`POST /accounts/`, `POST /accounts/password` and `POST /agents/auth`
(RIG_RATE_LIMIT_ADDRESS). Password guesses are limited on top, counting only the wrong
ones (a right one gives its allowance back):

- per username *and* address (RIG_RATE_LIMIT_ADDRESS_USERNAME), so one address cannot
  guess at one account quickly;
- per username from all addresses (RIG_RATE_LIMIT_USERNAME), set far above what a
  person mistypes in a window, so only a distributed guesser reaches it; and an
  address that logged in as that user before (in this process, within KNOWN_GOOD_SECONDS)
  is exempt from it: a stranger cannot lock the owner out from the owner's usual place;
- per user for the old password of `POST /accounts/password` (a stolen token must not
  be a free guessing oracle), at RIG_RATE_LIMIT_ADDRESS_USERNAME.

Stream keys looked up by an agent (`POST /agents/streams/{streamKey}/claim`,
`GET /agents/config/{streamKey}`) are limited the same way per agent, counting only the
unknown ones (RIG_RATE_LIMIT_AGENT_MISSES): wrong keys thrown at an agent cannot make
rig run a transaction for each, while a busy agent's known keys never wait.

Each allowance is a token bucket: `limit` requests at once, refilling evenly over
`window` seconds. A refused request is answered HTTP 429, errorCode 1010, with
`Retry-After`.

The counters live in the process: with several rig replicas each has its own, so the
effective limit is up to `replicas x limit`. The client address is the TCP peer, or,
when the peer is one of RIG_TRUSTED_PROXIES, the last address in X-Forwarded-For
that is not itself a trusted proxy.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from rig.errors import ApiError, Handler, route_of
from rig.networks import Network, in_networks, parse_networks
from rig.token_bucket import MAX_KEYS, TokenBucket

KNOWN_GOOD_SECONDS = 30 * 24 * 3600  # how long a successful log-in vouches for its address

# Routes whose unknown stream keys count against the agent's allowance.
KEY_LOOKUP_ROUTES = {
    ("POST", "/agents/streams/{streamKey}/claim"),
    ("GET", "/agents/config/{streamKey}"),
}

# Routes limited per client address, each its own allowance.
LIMITED_ROUTES = {
    ("POST", "/accounts/auth/local"),
    ("POST", "/accounts/"),
    ("POST", "/accounts/password"),
    ("POST", "/accounts/token"),
    ("POST", "/agents/auth"),
}


class TooManyRequests(ApiError):
    """errorCode 1010 (extension): slow down; `Retry-After` says for how long."""

    status, error_code, default_message = 429, 1010, "Too many requests"


def client_address(request: web.BaseRequest, trusted: list[Network]) -> str:
    """The caller's address: the peer, or what trusted proxies say in X-Forwarded-For."""
    peer = request.remote or ""
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not in_networks(hop, trusted):
            return hop
    return peer


class KnownGood:
    """(username, address) pairs that logged in successfully lately; bounded, oldest out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}

    def add(self, username: str, address: str) -> None:
        self._seen.pop((username, address), None)
        self._seen[(username, address)] = self._clock()  # re-inserted last: most recent
        while len(self._seen) > MAX_KEYS:
            del self._seen[next(iter(self._seen))]

    def __contains__(self, pair: tuple[str, str]) -> bool:
        seen = self._seen.get(pair)
        return seen is not None and self._clock() - seen < KNOWN_GOOD_SECONDS


@dataclass
class Guess:
    """A password guess in progress: the allowances it spent, given back if it was right."""

    spent: list[tuple[TokenBucket, str]]
    username: str | None = None
    address: str | None = None


@dataclass
class RateLimits:
    """The buckets of one rig process."""

    per_address: TokenBucket  # requests per route and client address
    # Wrong guesses at one username from one address, or at one user's old password.
    per_target: TokenBucket
    per_username: TokenBucket  # wrong guesses at one username from every address
    per_agent: TokenBucket  # unknown stream keys looked up by one agent
    trusted: list[Network]
    known_good: KnownGood = field(default_factory=KnownGood)

    @classmethod
    def create(
        cls,
        address_limit: int,
        address_username_limit: int,
        username_limit: int,
        agent_misses_limit: int,
        window: float,
        trusted_proxies: str,
    ) -> "RateLimits":
        return cls(
            TokenBucket(address_limit, window),
            TokenBucket(address_username_limit, window),
            TokenBucket(username_limit, window),
            TokenBucket(agent_misses_limit, window),
            parse_networks(trusted_proxies),
        )

    def check(self, request: web.Request) -> None:
        """Raise TooManyRequests when this request is over its address's allowance."""
        route = route_of(request)
        if (request.method, route) not in LIMITED_ROUTES:
            return
        address = client_address(request, self.trusted)
        wait = self.per_address.take(f"{route}|{address}")
        if wait:
            raise _refused(wait, "too many requests from this address")

    def login_guess(self, request: web.Request, username: str) -> Guess:
        """Spend the allowances of one log-in attempt (raise TooManyRequests if over)."""
        address = client_address(request, self.trusted)
        name = username.lower()
        guess = Guess([], name, address)
        self._spend(guess, self.per_target, f"login|{address}|{name}", "from this address")
        if (name, address) not in self.known_good:
            self._spend(guess, self.per_username, f"login|{name}", "")
        return guess

    def old_password_guess(self, user_id: str) -> Guess:
        """Spend the allowance of one old-password check of a password change."""
        guess = Guess([])
        self._spend(guess, self.per_target, f"password|{user_id}", "")
        return guess

    def key_lookup(self, agent_id: str) -> Guess:
        """Spend one of the agent's unknown-key lookups (given back if the key is known);
        TooManyRequests once they are spent. Call before any database work."""
        guess = Guess([])
        wait = self.per_agent.take(agent_id)
        if wait:
            raise _refused(wait, "too many unknown stream keys from this agent")
        guess.spent.append((self.per_agent, agent_id))
        return guess

    def guessed_right(self, guess: Guess) -> None:
        """The password was right: nothing spent, and a log-in's address is vouched for."""
        _give_back(guess.spent)
        if guess.username is not None and guess.address is not None:
            self.known_good.add(guess.username, guess.address)

    def _spend(self, guess: Guess, bucket: TokenBucket, key: str, where: str) -> None:
        wait = bucket.take(key)
        if wait:
            _give_back(guess.spent)  # a refused attempt costs nothing more
            raise _refused(wait, f"too many wrong passwords for this account {where}".strip())
        guess.spent.append((bucket, key))


def _give_back(spent: list[tuple[TokenBucket, str]]) -> None:
    for bucket, key in spent:
        bucket.give_back(key)


def _refused(wait: float, reason: str) -> TooManyRequests:
    seconds = max(1, math.ceil(wait))
    return TooManyRequests(
        "Too many requests, try again later",
        details={"reason": reason, "retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )


def rate_limit_middleware(limits: RateLimits) -> Callable:
    """A middleware applying `limits` (inside the envelope middleware)."""

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        limits.check(request)
        return await handler(request)

    return rate_limit
