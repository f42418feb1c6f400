"""agent.heartbeat: health bounded for rig, claims packed into batches."""

import json

import pytest

from agent.heartbeat import (
    MAX_ARRAY_ITEMS,
    MAX_BATCH_BYTES,
    MAX_CLAIMS_PER_BATCH,
    _Claim,
    batches,
    bounded,
    encode,
    essential,
)
from agent.rig_client import thumbnail_wanted


def test_bounded_cleans_every_string_and_caps_arrays_and_numbers():
    health = {
        "ingestUrl": "rtmp://edge/live",
        "ingest": {"frameRate": float("nan"), "bitrate": float("inf"), "width": 1920},
        "destinations": [
            {"id": n, "lastError": "\r\nforged\x00" + "x" * 1000, "retryIn": None}
            for n in range(500)
        ],
        "deep": [[[[[[[[[["too deep"]]]]]]]]]],
    }
    out = bounded(health)
    assert out["ingest"] == {"frameRate": None, "bitrate": None, "width": 1920}
    assert len(out["destinations"]) == MAX_ARRAY_ITEMS
    error = out["destinations"][0]["lastError"]
    assert error == "forged" + "x" * 194
    assert out["deep"][0][0][0][0][0][0][0] is None
    json.loads(encode(out))  # valid JSON: NaN would not be
    assert health["ingest"]["width"] == 1920  # the original is left alone


def test_essential_keeps_what_renews_a_claim():
    entry = {
        "claimId": "c",
        "streamKey": "k",
        "health": {"ingestUrl": "rtmp://e/live", "ingestState": "live", "ingest": {"x": 1}},
    }
    assert essential(entry) == {
        "claimId": "c",
        "streamKey": "k",
        "health": {"ingestUrl": "rtmp://e/live", "ingestState": "live"},
    }
    entry["health"]["ingestState"] = "bogus"  # not a state: left out (means `live`)
    assert essential(entry)["health"] == {"ingestUrl": "rtmp://e/live"}


def claims(count: int, size: int) -> list[_Claim]:
    return [_Claim({"n": n}, b"x" * size) for n in range(count)]


def test_batches_hold_at_most_100_claims_and_1_mib_in_order():
    packed = batches(claims(250, 10))
    assert [len(b) for b in packed] == [100, 100, 50]
    assert [c.entry["n"] for b in packed for c in b] == list(range(250))
    packed = batches(claims(100, 40_000))
    assert all(sum(len(c.data) + 1 for c in b) <= MAX_BATCH_BYTES for b in packed)
    assert sum(len(b) for b in packed) == 100 and len(packed) == 4
    assert [len(b) for b in batches(claims(3, 2_000_000))] == [1, 1, 1]  # too big alone
    assert batches([]) == []
    assert MAX_CLAIMS_PER_BATCH == 100


@pytest.mark.parametrize(
    ("answer", "wanted"),
    [
        ({"thumbnailWanted": False}, False),
        ({"thumbnailWanted": True}, True),
        ({}, True),  # a rig from before pictures on demand: it wants them all
        ({"thumbnailWanted": None}, True),
    ],
)
def test_thumbnail_wanted_unless_rig_says_not(answer, wanted):
    assert thumbnail_wanted({"claimId": "c", "status": "live", **answer}) is wanted
