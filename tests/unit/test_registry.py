"""The stream registry: one stream, one worker (agent/registry.py)."""

import pytest

from agent.registry import Holder, StreamRegistry, key_digest, packed_owner

A, B = key_digest("primary-key"), key_digest("backup-key")


def test_a_free_key_is_reserved_and_then_pending_for_everyone():
    registry = StreamRegistry()
    assert registry.reserve(1, A) is None
    # Being claimed: an active duplicate, whoever asks (the owner itself included).
    assert registry.reserve(2, A) == Holder(1, pending=True)
    assert registry.reserve(1, A) == Holder(1, pending=True)


def test_a_held_key_names_its_owner():
    registry = StreamRegistry()
    registry.reserve(1, A)
    assert registry.hold(1, A, "stream-1") is None
    assert registry.reserve(2, A) == Holder(1)
    assert registry.reserve(1, A) == Holder(1)
    assert registry.holder_of_stream("stream-1") == 1


def test_another_key_of_a_held_stream_goes_to_its_holder():
    registry = StreamRegistry()
    registry.reserve(1, A)
    registry.hold(1, A, "stream-1")
    # The backup key is free until rig says which stream it is ...
    assert registry.reserve(2, B) is None
    # ... then the stream's holder is named, and worker 2's reservation is given up.
    assert registry.hold(2, B, "stream-1") == Holder(1)
    assert registry.reserve(1, B) is None  # so the holder can take the key itself
    assert registry.hold(1, B, "stream-1") == Holder(1)  # it joins the holder's stream
    registry.drop(1, A)
    assert registry.holder_of_stream("stream-1") == 1  # still held through the backup key
    registry.drop(1, B)
    assert registry.holder_of_stream("stream-1") is None
    assert len(registry) == 0


def test_drop_frees_the_key_and_the_stream():
    registry = StreamRegistry()
    registry.reserve(1, A)
    registry.hold(1, A, "stream-1")
    registry.drop(2, A)  # not worker 2's: nothing happens
    assert registry.reserve(3, A) == Holder(1)
    registry.drop(1, A)
    assert registry.holder_of_stream("stream-1") is None
    assert registry.reserve(3, A) is None


def test_a_refused_claim_gives_the_reservation_back():
    registry = StreamRegistry()
    registry.reserve(1, A)
    registry.drop(1, A)  # rig refused: unknown key
    assert registry.reserve(2, A) is None


def test_hold_of_a_key_reserved_by_another_owner_names_it():
    registry = StreamRegistry()
    registry.reserve(1, A)
    assert registry.hold(2, A, "stream-1") == Holder(1, pending=True)
    assert registry.holder_of_stream("stream-1") is None


def test_a_dead_worker_is_forgotten():
    registry = StreamRegistry()
    registry.reserve(1, A)
    registry.hold(1, A, "stream-1")
    registry.reserve(1, B)  # pending
    registry.reserve(2, key_digest("other"))
    assert registry.forget(1) == 2
    assert registry.reserve(3, A) is None
    assert registry.reserve(3, B) is None
    assert registry.holder_of_stream("stream-1") is None
    assert registry.reserve(3, key_digest("other")) == Holder(2, pending=True)


def test_keys_are_digests():
    assert key_digest("k") == key_digest("k") != key_digest("k2")
    digest = key_digest("a-secret-stream-key")
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")


def test_streams_of_counts_held_streams_and_pending_claims():
    registry = StreamRegistry()
    assert registry.reserve(1, "a") is None
    assert registry.streams_of(1) == 1  # being claimed
    assert registry.hold(1, "a", "s1") is None
    assert registry.reserve(1, "b") is None
    assert registry.hold(1, "b", "s1") == Holder(1)  # the backup key joins the stream
    assert registry.streams_of(1) == 1
    assert registry.reserve(2, "c") is None
    assert (registry.streams_of(1), registry.streams_of(2), registry.streams_of(3)) == (1, 1, 0)
    assert registry.owner_of("c") == 2 and registry.owner_of("z") is None


@pytest.mark.parametrize(
    ("owners", "streams", "pack", "expected"),
    [
        ([1, 2], {}, 16, 1),  # the first worker while it has room
        ([2, 1], {1: 15, 2: 0}, 16, 1),
        ([1, 2], {1: 16, 2: 3}, 16, 2),  # full: the next one
        ([1, 2, 3], {1: 16, 2: 16, 3: 20}, 16, 1),  # all full: the fewest, lowest first
        ([1, 2], {1: 17, 2: 16}, 16, 2),
        ([2], {}, 16, 2),  # worker 1 is not ready (restarting)
        ([1, 2], {}, 0, None),  # off: streams stay where they arrive
        ([], {}, 16, None),
    ],
)
def test_packed_owner(owners, streams, pack, expected):
    assert packed_owner(owners, streams, pack) == expected
