"""Streams and destinations (`/streams/...`), and their isolation between users."""

import base64
import re
import uuid
from dataclasses import replace

import pytest

from rig.app import create_app
from rig.appkeys import TOKENS

STREAM_KEY = re.compile(r"^[A-Za-z0-9_-]{22}$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STREAM_FIELDS = {
    *("id", "streamKey", "destinations", "provisionStatus", "isStreaming", "isActive"),
    *("backupStreamKey", "disconnectProtection", "ingestState"),  # extensions (issue 15)
    "name",  # extension (issue 13): null when unnamed
}
DESTINATION_FIELDS = {"id", "service", "streamKey", "rtmpUrl", "isActive"}
MALFORMED_IDS = ["not-a-uuid", "123", f"{uuid.uuid4()}x", "00000000-0000-0000-0000"]


def check_new_stream(stream):
    assert set(stream) == STREAM_FIELDS
    assert UUID4.match(stream["id"])
    assert STREAM_KEY.match(stream["streamKey"])
    assert len(base64.urlsafe_b64decode(stream["streamKey"] + "==")) == 16  # 128 bits
    assert stream["destinations"] is None
    assert stream["provisionStatus"] is None
    assert stream["isStreaming"] is False
    assert stream["isActive"] is True
    assert stream["backupStreamKey"] is None
    assert stream["disconnectProtection"] == {"enabled": True, "graceSeconds": 30}
    assert stream["ingestState"] == "offline"


async def test_create_stream(api, expect_ok):
    account = await api.account()
    resp = await api.client.post("/streams/", headers=account.headers)
    stream = await expect_ok(resp, "New stream created")
    check_new_stream(stream)
    row = await api.db.fetchrow(
        "SELECT user_id, stream_key FROM streams WHERE id = $1", uuid.UUID(stream["id"])
    )
    assert str(row["user_id"]) == account.id
    assert row["stream_key"] == stream["streamKey"]


async def test_stream_keys_and_ids_are_distinct(api):
    account = await api.account()
    streams = [await api.stream(account) for _ in range(25)]
    for stream in streams:
        check_new_stream(stream)
    assert len({s["streamKey"] for s in streams}) == 25
    assert len({s["id"] for s in streams}) == 25


async def test_list_streams(api, expect_ok):
    account = await api.account()
    resp = await api.client.get("/streams/", headers=account.headers)
    assert await expect_ok(resp, "Stream list for user") == []
    created = [await api.stream(account) for _ in range(3)]
    await api.destination(account, created[0]["id"])
    resp = await api.client.get("/streams/", headers=account.headers)
    listed = await expect_ok(resp, "Stream list for user")
    assert isinstance(listed, list)
    assert sorted(listed, key=lambda s: s["id"]) == sorted(created, key=lambda s: s["id"])
    for stream in listed:  # in the list, destinations are null even when there are some
        assert set(stream) == STREAM_FIELDS
        assert stream["destinations"] is None
        assert stream["provisionStatus"] is None


async def test_stream_detail_without_destinations(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.get(f"/streams/{stream['id']}", headers=account.headers)
    # The detail is the spec's stream object plus the `health` extension (null: offline).
    assert await expect_ok(resp, "Stream detail") == {**stream, "health": None}


async def test_add_destinations_with_default_service_urls(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        json={"service": "YouTube", "streamKey": "abcd-efgh-ijkl-mnop"},
        headers=account.headers,
    )
    youtube = await expect_ok(resp, "Stream destination added")
    assert set(youtube) == DESTINATION_FIELDS
    assert isinstance(youtube["id"], int)
    assert not isinstance(youtube["id"], bool)
    assert youtube["service"] == "YouTube"
    assert youtube["streamKey"] == "abcd-efgh-ijkl-mnop"
    assert youtube["rtmpUrl"] == "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop"
    assert youtube["isActive"] is True

    twitch = await api.destination(account, stream["id"], "Twitch", "live_1234_abcdef")
    assert set(twitch) == DESTINATION_FIELDS
    assert twitch["rtmpUrl"] == "rtmp://live.twitch.tv/app/live_1234_abcdef"
    assert twitch["isActive"] is True
    assert twitch["id"] != youtube["id"]

    detail = await api.detail(account, stream["id"])
    assert set(detail) == STREAM_FIELDS | {"health"}
    assert detail["id"] == stream["id"]
    assert detail["streamKey"] == stream["streamKey"]
    assert sorted(detail["destinations"], key=lambda d: d["id"]) == sorted(
        [youtube, twitch], key=lambda d: d["id"]
    )
    assert detail["isStreaming"] is False
    assert detail["isActive"] is True


async def test_service_url_overrides_are_reflected(aiohttp_client, settings, db, expect_ok):
    urls = {"YouTube": "rtmp://127.0.0.1:1/yt", "Twitch": "rtmp://127.0.0.1:1/tw"}
    client = await aiohttp_client(create_app(replace(settings, service_urls=urls)))
    user_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO users (id, username, email, password_hash) VALUES ($1, 'olga', 'o@x.io', 'x')",
        user_id,
    )
    token, _ = client.server.app[TOKENS].issue(str(user_id), "user", 3600, 0)
    headers = {"Authorization": f"Bearer {token}"}
    stream = await expect_ok(await client.post("/streams/", headers=headers), "New stream created")
    added = []
    for service, key in (("YouTube", "yt-key"), ("Twitch", "tw-key")):
        resp = await client.post(
            f"/streams/{stream['id']}/destination",
            json={"service": service, "streamKey": key},
            headers=headers,
        )
        added.append(await expect_ok(resp, "Stream destination added"))
    assert [d["rtmpUrl"] for d in added] == [
        "rtmp://127.0.0.1:1/yt/yt-key",
        "rtmp://127.0.0.1:1/tw/tw-key",
    ]
    detail = await expect_ok(
        await client.get(f"/streams/{stream['id']}", headers=headers), "Stream detail"
    )
    assert sorted(d["rtmpUrl"] for d in detail["destinations"]) == [
        "rtmp://127.0.0.1:1/tw/tw-key",
        "rtmp://127.0.0.1:1/yt/yt-key",
    ]


@pytest.mark.parametrize("service", ["youtube", "TWITCH", "Mixer", "", "YouTube "])
async def test_unknown_service_is_1005(api, expect_error, service):
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        json={"service": service, "streamKey": "abc"},
        headers=account.headers,
    )
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "service"
    assert (await api.detail(account, stream["id"]))["destinations"] is None


@pytest.mark.parametrize("key", ["", "two words", "tab\there", "x" * 513])
async def test_invalid_destination_key_is_1005(api, expect_error, key):
    account = await api.account()
    stream = await api.stream(account)
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        json={"service": "Twitch", "streamKey": key},
        headers=account.headers,
    )
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "streamKey"
    assert (await api.detail(account, stream["id"]))["destinations"] is None


async def test_change_key(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    destination = await api.destination(account, stream["id"], "Twitch", "live_abc")
    resp = await api.client.post(f"/streams/{stream['id']}/changeKey", headers=account.headers)
    payload = await expect_ok(resp, "New stream key")
    assert set(payload) == {"key", "streamID"}
    assert payload["streamID"] == stream["id"]
    assert STREAM_KEY.match(payload["key"])
    assert payload["key"] != stream["streamKey"]
    detail = await api.detail(account, stream["id"])
    assert detail["streamKey"] == payload["key"]
    assert detail["destinations"] == [destination]  # destination keys are untouched
    listed = await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )
    assert [s["streamKey"] for s in listed] == [payload["key"]]


@pytest.mark.parametrize("stream_id", [*MALFORMED_IDS, "UNKNOWN"])
async def test_malformed_or_unknown_stream_id_is_1000(api, expect_error, stream_id):
    account = await api.account()
    await api.stream(account)
    if stream_id == "UNKNOWN":
        stream_id = str(uuid.uuid4())
    resp = await api.client.get(f"/streams/{stream_id}", headers=account.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.post(
        f"/streams/{stream_id}/destination",
        json={"service": "YouTube", "streamKey": "abc"},
        headers=account.headers,
    )
    await expect_error(resp, 1000, 404)
    resp = await api.client.post(f"/streams/{stream_id}/changeKey", headers=account.headers)
    await expect_error(resp, 1000, 404)
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0


async def test_other_users_streams_do_not_exist_for_you(api, expect_ok, expect_error):
    alice, bob = await api.account(), await api.account()
    stream = await api.stream(alice)
    destination = await api.destination(alice, stream["id"], "YouTube", "alice-yt")
    missing = f"/streams/{uuid.uuid4()}"

    async def both(method, suffix, **kwargs):
        """Bob's answer for Alice's stream and for a stream that does not exist."""
        foreign = await api.client.request(
            method, f"/streams/{stream['id']}{suffix}", headers=bob.headers, **kwargs
        )
        absent = await api.client.request(
            method, f"{missing}{suffix}", headers=bob.headers, **kwargs
        )
        return (
            await expect_error(foreign, 1000, 404),
            await expect_error(absent, 1000, 404),
        )

    foreign, absent = await both("GET", "")
    assert foreign == absent
    foreign, absent = await both(
        "POST", "/destination", json={"service": "Twitch", "streamKey": "bob-tw"}
    )
    assert foreign == absent
    foreign, absent = await both("POST", "/changeKey")
    assert foreign == absent

    # Alice's stream is untouched, and Bob's list does not show it.
    detail = await api.detail(alice, stream["id"])
    assert detail["streamKey"] == stream["streamKey"]
    assert detail["destinations"] == [destination]
    assert (
        await expect_ok(
            await api.client.get("/streams/", headers=bob.headers), "Stream list for user"
        )
        == []
    )
    bob_stream = await api.stream(bob)
    bob_list = await expect_ok(
        await api.client.get("/streams/", headers=bob.headers), "Stream list for user"
    )
    assert [s["id"] for s in bob_list] == [bob_stream["id"]]
    alice_list = await expect_ok(
        await api.client.get("/streams/", headers=alice.headers), "Stream list for user"
    )
    assert [s["id"] for s in alice_list] == [stream["id"]]
