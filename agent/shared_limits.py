"""The agent's limits on wrong keys, the same whichever worker a connection reaches.

A single agent keeps a budget of refused publishes per address and a short cache of keys
rig refused (`agent.limits`). With workers, each keeps its own copy and tells the others,
through the supervisor, what it learns: a publish from an address refused (a token of
the address's budget), a key rig refused (by its SHA-256 only). Each copy is a few
milliseconds behind the others at most, so a guesser gets the agent's budget, not a
budget per worker, and a key refused on one worker is refused at once on all. The
events go one way (worker -> supervisor -> the other workers) and are applied without
being sent on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from agent.limits import FailedPublishes, RefusedKeys, key_digest

Share = Callable[[dict[str, Any]], None]


class SharedFailedPublishes:
    """A worker's budget of refused publishes, kept in step with the other workers'."""

    def __init__(self, local: FailedPublishes, share: Share) -> None:
        self.local = local
        self._share = share

    def wait(self, address: str) -> float:
        return self.local.wait(address)

    def failed(self, address: str) -> None:
        self.local.failed(address)
        self._share({"what": "failed", "address": address})


class SharedRefusedKeys:
    """A worker's cache of refused keys, kept in step with the other workers'."""

    def __init__(self, local: RefusedKeys, share: Share) -> None:
        self.local = local
        self._share = share

    def add(self, stream_key: str) -> None:
        self.local.add(stream_key)
        self._share({"what": "refused", "digest": key_digest(stream_key).hex()})

    def __contains__(self, stream_key: str) -> bool:
        return stream_key in self.local

    def discard(self, stream_key: str) -> None:
        self.local.discard(stream_key)

    def prune(self) -> None:
        self.local.prune()

    def __len__(self) -> int:
        return len(self.local)


def apply(event: dict[str, Any], failed: FailedPublishes, refused: RefusedKeys) -> None:
    """What another worker shared, applied to this worker's copies (not shared again)."""
    what = event.get("what")
    address = event.get("address")
    if what == "failed" and isinstance(address, str):
        failed.failed(address)
    elif what == "refused" and isinstance(event.get("digest"), str):
        with contextlib.suppress(ValueError):
            refused.add_digest(bytes.fromhex(event["digest"]))
