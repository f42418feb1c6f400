"""Which worker holds which stream: one stream, one worker.

An agent's worker processes share one identity towards rig, and rig gives an agent that
already holds a stream the same claim back
(docs/agent-protocol.md#disconnect-protection-claim-rules): rig cannot tell a second
publisher of a live key from the first. This registry does, inside the agent. It maps
every stream key being published (by its SHA-256: no secret is kept here) and every
stream id rig's claims named to the worker (the *owner*) that holds it, so that each
stream is relayed by exactly one worker and every publisher of it goes there.

Two steps per publish, because a key says which stream it is only once rig answered (a
backup key names the same stream as its primary key):

1. `reserve(owner, key)` before the claim: the key is free (reserved now), or held by an
   owner (that worker decides: refuse an active duplicate, replace a hung connection),
   or still being claimed by one (an active duplicate by definition: refused);
2. `hold(owner, key, stream_id)` once rig granted the claim: the stream is new here, or
   another owner relays it already (the publish goes there).

Sans-I/O and synchronous. The supervisor of a multi-worker agent keeps one for all its
workers (owner = worker index); a single-process agent keeps one for itself (owner 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def key_digest(stream_key: str) -> str:
    """The name of a stream key in the registry and between processes: its SHA-256."""
    return hashlib.sha256(stream_key.encode()).hexdigest()


@dataclass(frozen=True)
class Holder:
    """Who holds a key or a stream: a worker, and whether its claim is still pending."""

    owner: int
    pending: bool = False


@dataclass
class _Key:
    owner: int
    stream_id: str | None = None  # None while the claim is pending


@dataclass
class _Stream:
    owner: int
    keys: set[str] = field(default_factory=set)


def packed_owner(owners: list[int], streams_of: dict[int, int], pack: int) -> int | None:
    """Where a new stream goes when streams are packed (`RIG_AGENT_PACK_STREAMS`): the
    lowest-numbered owner relaying fewer than `pack` streams, else the one relaying the
    fewest. None without owners, or with `pack` 0 (each stays where it arrived)."""
    if pack <= 0 or not owners:
        return None
    ordered = sorted(owners)
    for owner in ordered:
        if streams_of.get(owner, 0) < pack:
            return owner
    return min(ordered, key=lambda owner: streams_of.get(owner, 0))


class StreamRegistry:
    """Stream keys and stream ids, each with the one owner that holds it."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._streams: dict[str, _Stream] = {}

    def reserve(self, owner: int, key: str) -> Holder | None:
        """Reserve `key` for a publish of `owner` (None), or say who has it."""
        entry = self._keys.get(key)
        if entry is None:
            self._keys[key] = _Key(owner)
            return None
        return Holder(entry.owner, pending=entry.stream_id is None)

    def hold(self, owner: int, key: str, stream_id: str) -> Holder | None:
        """rig granted `owner`'s claim of `key`, for stream `stream_id`: record it (None),
        or say which owner relays that stream already. If that is another owner, the
        reservation of `key` is given up (the publish goes to the holder, who reserves
        the key for itself); if it is `owner`, the key joins the stream."""
        stream = self._streams.get(stream_id)
        entry = self._keys.get(key)
        if stream is not None and stream.owner != owner:
            if entry is not None and entry.owner == owner:
                del self._keys[key]
            return Holder(stream.owner)
        if entry is not None and entry.owner != owner:
            # Not ours (reserve() was skipped, or the owner forgot it): the key's holder
            # keeps it; this publish goes there.
            return Holder(entry.owner, pending=entry.stream_id is None)
        self._keys[key] = _Key(owner, stream_id)
        if stream is None:
            self._streams[stream_id] = _Stream(owner, {key})
            return None
        stream.keys.add(key)
        return Holder(owner)

    def drop(self, owner: int, key: str) -> None:
        """`owner`'s publish of `key` ended, was refused, or went to another owner."""
        entry = self._keys.get(key)
        if entry is None or entry.owner != owner:
            return
        del self._keys[key]
        if entry.stream_id is None:
            return
        stream = self._streams.get(entry.stream_id)
        if stream is not None and stream.owner == owner:
            stream.keys.discard(key)
            if not stream.keys:
                del self._streams[entry.stream_id]

    def forget(self, owner: int) -> int:
        """`owner` is gone (a worker died): everything it held is free. Returns how many
        keys it held."""
        keys = [k for k, entry in self._keys.items() if entry.owner == owner]
        for key in keys:
            del self._keys[key]
        for stream_id in [s for s, stream in self._streams.items() if stream.owner == owner]:
            del self._streams[stream_id]
        return len(keys)

    def owner_of(self, key: str) -> int | None:
        """Who holds or is claiming `key`, if anyone."""
        entry = self._keys.get(key)
        return None if entry is None else entry.owner

    def streams_of(self, owner: int) -> int:
        """How many streams `owner` relays or is claiming (a stream claimed and not yet
        held counts once, by its key)."""
        held = sum(1 for stream in self._streams.values() if stream.owner == owner)
        return held + sum(
            1 for entry in self._keys.values() if entry.owner == owner and entry.stream_id is None
        )

    def holder_of_stream(self, stream_id: str) -> int | None:
        """The owner relaying `stream_id`, if any."""
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.owner

    def __len__(self) -> int:
        return len(self._keys)
