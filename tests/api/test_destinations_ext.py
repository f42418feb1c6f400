"""Extensions to streams and destinations: update, delete, Custom/Facebook/Kick services."""

import uuid

DESTINATION_FIELDS = {"id", "service", "streamKey", "rtmpUrl", "isActive"}


async def add(api, account, stream_id, body):
    return await api.client.post(
        f"/streams/{stream_id}/destination", json=body, headers=account.headers
    )


async def patch(api, account, stream_id, destination_id, body):
    return await api.client.patch(
        f"/streams/{stream_id}/destination/{destination_id}", json=body, headers=account.headers
    )


async def config(api, make_agent, stream_key, expect_ok):
    agent = await make_agent()
    resp = await api.client.get(f"/agents/config/{stream_key}", headers=agent.headers)
    return await expect_ok(resp, "Stream Config")


# ---------------------------------------------------------------- services


async def test_facebook_and_kick_default_urls(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    facebook = await api.destination(account, stream["id"], "Facebook", "FB-1234-abcd")
    kick = await api.destination(account, stream["id"], "Kick", "sk_us-west-2_abc")
    assert facebook == {
        "id": facebook["id"],
        "service": "Facebook",
        "streamKey": "FB-1234-abcd",
        "rtmpUrl": "rtmps://live-api-s.facebook.com:443/rtmp/FB-1234-abcd",
        "isActive": True,
    }
    assert kick["rtmpUrl"] == (
        "rtmps://fa723fc1b171.global-contribute.live-video.net/app/sk_us-west-2_abc"
    )
    assert (await api.detail(account, stream["id"]))["destinations"] == [facebook, kick]


CUSTOM_SERVERS = [
    ("rtmp://ingest.example.com/live", "rtmp://ingest.example.com/live"),
    ("rtmp://ingest.example.com/live/", "rtmp://ingest.example.com/live"),
    ("rtmps://ingest.example.com:443/app/inst", "rtmps://ingest.example.com:443/app/inst"),
    ("rtmp://10.0.0.5:1935/live", "rtmp://10.0.0.5:1935/live"),
    ("rtmp://[::1]:1935/live", "rtmp://[::1]:1935/live"),
    ("rtmp://h/" + "a" * 503, "rtmp://h/" + "a" * 503),  # 512 characters
]


async def test_custom_destination(api, make_agent, expect_ok, case):
    account = await api.account()
    for server, stored in CUSTOM_SERVERS:
        with case(server):
            stream = await api.stream(account)
            body = {"service": "Custom", "streamKey": "my-key", "rtmpUrl": server}
            resp = await add(api, account, stream["id"], body)
            custom = await expect_ok(resp, "Stream destination added")
            assert set(custom) == DESTINATION_FIELDS
            assert custom["service"] == "Custom"
            assert custom["streamKey"] == "my-key"
            assert custom["rtmpUrl"] == stored + "/my-key"
            assert custom["isActive"] is True
            assert (await api.detail(account, stream["id"]))["destinations"] == [custom]
            # The agent's config carries the full URL too.
            assert await config(api, make_agent, stream["streamKey"], expect_ok) == [custom]


async def test_custom_destination_needs_rtmp_url(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    for extra in ({}, {"rtmpUrl": None}):
        with case(extra):
            body = {"service": "Custom", "streamKey": "k", **extra}
            error = await expect_error(await add(api, account, stream["id"], body), 1004, 400)
            assert error["details"] == {"field": "rtmpUrl"}
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0


BAD_SERVER_URLS = [
    "http://ingest.example.com/live",
    "ingest.example.com/live",
    "rtmp:///live",
    "rtmp://ingest.example.com",
    "rtmp://ingest.example.com/",
    "rtmp://ingest example.com/live",
    "rtmp://ingest.example.com/live now",
    "rtmp://ingest.example.com/li\tve",
    "rtmp://ingest.example.com/live\x7f",
    "rtmp://user:pass@ingest.example.com/live",
    "rtmp://user@ingest.example.com/live",
    "rtmp://ingest.example.com:99999/live",
    "rtmp://ingest.example.com/live?key=1",
    "rtmp://ingest.example.com/live#x",
    "rtmp://h/" + "a" * 504,  # 513 characters
    "",
    5,
    ["rtmp://ingest.example.com/live"],
]


async def test_invalid_custom_rtmp_url_is_1005(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    for server in BAD_SERVER_URLS:
        with case(server):
            body = {"service": "Custom", "streamKey": "k", "rtmpUrl": server}
            error = await expect_error(await add(api, account, stream["id"], body), 1005, 400)
            assert error["details"]["field"] == "rtmpUrl"
            # Worded for people, not pydantic's "String should match pattern '^rtmps?://'".
            assert "pattern" not in error["message"] and "String should" not in error["message"]
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0


async def test_custom_duplicate_is_1006(api, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    body = {"service": "Custom", "streamKey": "k", "rtmpUrl": "rtmp://a.example/live"}
    await expect_ok(await add(api, account, stream["id"], body), "Stream destination added")
    await expect_error(await add(api, account, stream["id"], body), 1006, (409, 400))
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 1


# ---------------------------------------------------------------- PATCH destination


async def test_update_destination_key_and_active(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "old-key")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw-key")

    resp = await patch(api, account, stream["id"], youtube["id"], {"streamKey": "new-key"})
    updated = await expect_ok(resp, "Stream destination updated")
    assert updated == {
        **youtube,
        "streamKey": "new-key",
        "rtmpUrl": "rtmp://a.rtmp.youtube.com/live2/new-key",
    }

    resp = await patch(api, account, stream["id"], twitch["id"], {"isActive": False})
    paused = await expect_ok(resp, "Stream destination updated")
    assert paused == {**twitch, "isActive": False}
    assert (await api.detail(account, stream["id"]))["destinations"] == [updated, paused]
    assert await config(api, make_agent, stream["streamKey"], expect_ok) == [updated, paused]

    # Both at once, and back on.
    resp = await patch(
        api, account, stream["id"], twitch["id"], {"isActive": True, "streamKey": "tw-2"}
    )
    resumed = await expect_ok(resp, "Stream destination updated")
    assert resumed == {
        **twitch,
        "streamKey": "tw-2",
        "rtmpUrl": "rtmp://live.twitch.tv/app/tw-2",
        "isActive": True,
    }
    assert (await api.detail(account, stream["id"]))["destinations"] == [updated, resumed]


async def test_update_custom_rtmp_url(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    resp = await add(
        api,
        account,
        stream["id"],
        {"service": "Custom", "streamKey": "ck", "rtmpUrl": "rtmp://a.example/live"},
    )
    custom = await expect_ok(resp, "Stream destination added")
    resp = await patch(
        api, account, stream["id"], custom["id"], {"rtmpUrl": "rtmps://b.example:4443/app/"}
    )
    moved = await expect_ok(resp, "Stream destination updated")
    assert moved == {**custom, "rtmpUrl": "rtmps://b.example:4443/app/ck"}
    assert await config(api, make_agent, stream["streamKey"], expect_ok) == [moved]
    resp = await patch(api, account, stream["id"], custom["id"], {"rtmpUrl": "http://b/app"})
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "rtmpUrl"
    assert (await api.detail(account, stream["id"]))["destinations"] == [moved]


async def test_rtmp_url_of_a_builtin_service_is_1005(api, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    resp = await patch(
        api,
        account,
        stream["id"],
        youtube["id"],
        {"rtmpUrl": "rtmp://elsewhere.example/live", "streamKey": "changed"},
    )
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "rtmpUrl"
    assert (await api.detail(account, stream["id"]))["destinations"] == [youtube]


async def test_update_with_nothing_is_1004(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    nothing = [{}, {"streamKey": None}, {"isActive": None, "rtmpUrl": None}, {"service": "Twitch"}]
    for body in nothing:
        with case(body):
            resp = await patch(api, account, stream["id"], youtube["id"], body)
            error = await expect_error(resp, 1004, 400)
            assert error["message"] == "Nothing to update: give streamKey, isActive or rtmpUrl"
    assert (await api.detail(account, stream["id"]))["destinations"] == [youtube]


INVALID_UPDATES = [
    ({"streamKey": ""}, "streamKey"),
    ({"streamKey": "two words"}, "streamKey"),
    ({"streamKey": "x" * 513}, "streamKey"),
    ({"streamKey": 5}, "streamKey"),
    ({"isActive": "false"}, "isActive"),
    ({"isActive": 0}, "isActive"),
    ({"isActive": True, "streamKey": "bad\x00"}, "streamKey"),
]


async def test_invalid_update_is_1005(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    for body, field in INVALID_UPDATES:
        with case(body):
            resp = await patch(api, account, stream["id"], youtube["id"], body)
            error = await expect_error(resp, 1005, 400)
            assert error["details"]["field"] == field
    assert (await api.detail(account, stream["id"]))["destinations"] == [youtube]


async def test_update_to_a_duplicate_is_1007(api, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    first = await api.destination(account, stream["id"], "YouTube", "key-a")
    second = await api.destination(account, stream["id"], "YouTube", "key-b")
    twitch = await api.destination(account, stream["id"], "Twitch", "key-a")
    resp = await patch(api, account, stream["id"], second["id"], {"streamKey": "key-a"})
    error = await expect_error(resp, 1007, (409, 400))
    assert error["details"] == {"field": "streamKey", "reason": "duplicate destination"}
    assert (await api.detail(account, stream["id"]))["destinations"] == [first, second, twitch]


async def test_unknown_or_foreign_destination_is_1000(api, expect_error):
    alice, bob = await api.account(), await api.account()
    stream, sibling = await api.stream(alice), await api.stream(alice)
    mine = await api.destination(alice, stream["id"], "YouTube", "yt")
    elsewhere = await api.destination(alice, sibling["id"], "Twitch", "tw")
    bob_stream = await api.stream(bob)
    cases = [
        (alice, stream["id"], elsewhere["id"]),  # a destination of another stream
        (alice, stream["id"], 999_999_999),
        (alice, stream["id"], "abc"),
        (alice, stream["id"], "1.5"),
        (alice, stream["id"], "99999999999999999999"),  # beyond bigint
        (alice, str(uuid.uuid4()), mine["id"]),
        (alice, "not-a-uuid", mine["id"]),
        (bob, stream["id"], mine["id"]),  # someone else's stream
        (bob, bob_stream["id"], mine["id"]),  # someone else's destination
    ]
    for account, stream_id, destination_id in cases:
        path = f"/streams/{stream_id}/destination/{destination_id}"
        resp = await api.client.patch(path, json={"isActive": False}, headers=account.headers)
        await expect_error(resp, 1000, 404)
        resp = await api.client.delete(path, headers=account.headers)
        await expect_error(resp, 1000, 404)
    assert (await api.detail(alice, stream["id"]))["destinations"] == [mine]
    assert (await api.detail(alice, sibling["id"]))["destinations"] == [elsewhere]


# ---------------------------------------------------------------- DELETE destination


async def test_delete_destination(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw")
    path = f"/streams/{stream['id']}/destination/{youtube['id']}"
    resp = await api.client.delete(path, headers=account.headers)
    assert await expect_ok(resp, "Stream destination deleted") == {"id": youtube["id"]}
    assert (await api.detail(account, stream["id"]))["destinations"] == [twitch]
    assert await config(api, make_agent, stream["streamKey"], expect_ok) == [twitch]
    await expect_error(await api.client.delete(path, headers=account.headers), 1000, 404)
    resp = await api.client.delete(
        f"/streams/{stream['id']}/destination/{twitch['id']}", headers=account.headers
    )
    await expect_ok(resp, "Stream destination deleted")
    assert (await api.detail(account, stream["id"]))["destinations"] is None
    assert await config(api, make_agent, stream["streamKey"], expect_ok) == []
    # The same destination can be added again.
    again = await api.destination(account, stream["id"], "YouTube", "yt")
    assert again["id"] != youtube["id"]


async def test_live_agent_sees_destination_changes_at_heartbeat(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    twitch = await api.destination(account, stream["id"], "Twitch", "tw")
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    assert claim["destinations"] == [youtube, twitch]
    resp = await patch(api, account, stream["id"], youtube["id"], {"isActive": False})
    paused = await expect_ok(resp, "Stream destination updated")
    resp = await api.client.delete(
        f"/streams/{stream['id']}/destination/{twitch['id']}", headers=account.headers
    )
    await expect_ok(resp, "Stream destination deleted")
    answers = await agent.beat([{"claimId": claim["claimId"], "streamKey": stream["streamKey"]}])
    assert answers == [
        {
            "claimId": claim["claimId"],
            "status": "live",
            "destinations": [paused],
            "disconnectProtection": {"enabled": True, "graceSeconds": 30},
            "thumbnailWanted": False,
        }
    ]


# ---------------------------------------------------------------- PATCH / DELETE stream


async def test_deactivate_and_reactivate_stream(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream = await api.stream(account)
    youtube = await api.destination(account, stream["id"], "YouTube", "yt")
    agent = await make_agent()

    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": False}, headers=account.headers
    )
    # The answer is the stream with its destinations, as the detail shows it.
    updated = await expect_ok(resp, "Stream updated")
    assert updated == {**stream, "isActive": False, "destinations": [youtube]}
    detail = await api.detail(account, stream["id"])
    assert detail["isActive"] is False
    assert detail["destinations"] == [youtube]
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=agent.headers)
    await expect_error(resp, 1000, 404)
    await expect_error(await agent.claim(stream["streamKey"]), 1000, 404)

    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": True}, headers=account.headers
    )
    assert await expect_ok(resp, "Stream updated") == {**stream, "destinations": [youtube]}
    assert await config(api, make_agent, stream["streamKey"], expect_ok) == [youtube]
    await agent.claimed(stream["streamKey"])


async def test_deactivating_a_live_stream_ends_it(api, make_agent, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    await agent.claimed(stream["streamKey"])
    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": False}, headers=account.headers
    )
    updated = await expect_ok(resp, "Stream updated")
    assert (updated["isActive"], updated["isStreaming"], updated["provisionStatus"]) == (
        False,
        False,
        None,
    )
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 0


async def test_invalid_stream_update(api, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    bodies = [
        ({}, 1004),
        ({"isActive": None}, 1004),
        ({"active": False}, 1004),
        ({"isActive": "false"}, 1005),
        ({"isActive": 0}, 1005),
        ({"isActive": [True]}, 1005),
    ]
    for body, code in bodies:
        with case(body):
            resp = await api.client.patch(
                f"/streams/{stream['id']}", json=body, headers=account.headers
            )
            error = await expect_error(resp, code, 400)
            assert error["details"]["field"] == "isActive"
    assert (await api.detail(account, stream["id"]))["isActive"] is True


async def test_delete_stream(api, make_agent, expect_ok, expect_error):
    account = await api.account()
    stream, kept = await api.stream(account), await api.stream(account)
    await api.destination(account, stream["id"], "YouTube", "yt")
    agent = await make_agent()
    await agent.claimed(stream["streamKey"])
    resp = await api.client.delete(f"/streams/{stream['id']}", headers=account.headers)
    assert await expect_ok(resp, "Stream deleted") == {"streamID": stream["id"]}
    for method in ("GET", "DELETE", "PATCH"):
        resp = await api.client.request(
            method, f"/streams/{stream['id']}", json={"isActive": True}, headers=account.headers
        )
        await expect_error(resp, 1000, 404)
    resp = await api.client.get(f"/agents/config/{stream['streamKey']}", headers=agent.headers)
    await expect_error(resp, 1000, 404)
    assert await api.db.fetchval("SELECT count(*) FROM destinations") == 0
    assert await api.db.fetchval("SELECT count(*) FROM stream_claims") == 0
    listed = await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )
    assert [s["id"] for s in listed] == [kept["id"]]


async def test_foreign_stream_cannot_be_updated_or_deleted(api, expect_error):
    alice, bob = await api.account(), await api.account()
    stream = await api.stream(alice)
    for account, stream_id in ((bob, stream["id"]), (alice, "not-a-uuid"), (alice, uuid.uuid4())):
        resp = await api.client.patch(
            f"/streams/{stream_id}", json={"isActive": False}, headers=account.headers
        )
        await expect_error(resp, 1000, 404)
        resp = await api.client.delete(f"/streams/{stream_id}", headers=account.headers)
        await expect_error(resp, 1000, 404)
    detail = await api.detail(alice, stream["id"])
    assert detail["isActive"] is True


async def test_custom_destinations_may_share_a_key_on_different_servers(api, expect_ok):
    account = await api.account()
    stream = await api.stream(account)
    urls = []
    for server in ("rtmp://primary.example.net/live", "rtmp://backup.example.net/live"):
        resp = await api.client.post(
            f"/streams/{stream['id']}/destination",
            json={"service": "Custom", "rtmpUrl": server, "streamKey": "same-key"},
            headers=account.headers,
        )
        urls.append((await expect_ok(resp, "Stream destination added"))["rtmpUrl"])
    assert urls == [
        "rtmp://primary.example.net/live/same-key",
        "rtmp://backup.example.net/live/same-key",
    ]
