"""Token buckets, one per key: the allowance behind rig's abuse limits (rig.ratelimit) and
the agent's (agent.limits). Its own module so that the agent does not import rig's web
and database layers to use it."""

import math
import time
from collections.abc import Callable

MAX_KEYS = 100_000  # buckets kept at most; full (idle) buckets are dropped first


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

    def give_back(self, key: str) -> None:
        """Return the token `take` spent (a right password costs nothing)."""
        if key in self._buckets:
            tokens, at = self._buckets[key]
            self._buckets[key] = (min(float(self.limit), tokens + 1.0), at)

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
