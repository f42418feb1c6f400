"""API keys and access tokens on the real PostgreSQL: create, list, revoke; X-Api-Key on
user routes; scopes, one-stream keys, expiry, revocation at once, another user's key,
account routes refusing keys, lastUsedAt; the secret stored only as a hash."""

import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest

from rig.tokens import ISSUER


def by_key(secret: str) -> dict[str, str]:
    return {"X-Api-Key": secret}


async def test_create_answers_the_secret_once_and_stores_only_its_hash(api, expect_ok):
    account = await api.account()
    created = await api.api_key(account)
    secret = created["apiKey"]
    assert secret.startswith("rigkey_") and len(secret) >= 40
    assert set(created) == {
        "id",
        "name",
        "scope",
        "streamId",
        "createdAt",
        "expiresAt",
        "lastUsedAt",
        "apiKey",
    }
    assert created["name"] == "bot" and created["scope"] == "full"
    assert created["streamId"] is None and created["expiresAt"] is None
    assert created["lastUsedAt"] is None
    row = await api.db.fetchrow("SELECT * FROM api_keys WHERE id = $1::uuid", created["id"])
    assert row["key_hash"] == hashlib.sha256(secret.encode()).digest()
    for value in row.values():  # the secret itself is in no column
        assert secret not in str(value)
    listed = await expect_ok(
        await api.client.get("/accounts/apikeys", headers=account.headers), "API keys"
    )
    assert [key["id"] for key in listed] == [created["id"]]
    assert "apiKey" not in listed[0]
    assert listed[0] == {k: v for k, v in created.items() if k != "apiKey"}


async def test_list_is_newest_first_and_only_the_caller_s(api, expect_ok):
    alice, bob = await api.account(), await api.account()
    first = await api.api_key(alice, name="first")
    second = await api.api_key(alice, name="second")
    await api.api_key(bob, name="bob's")
    listed = await expect_ok(
        await api.client.get("/accounts/apikeys", headers=alice.headers), "API keys"
    )
    assert [k["id"] for k in listed] == [second["id"], first["id"]]


async def test_a_full_key_works_on_every_user_route(api, expect_ok):
    account = await api.account()
    secret = (await api.api_key(account))["apiKey"]
    resp = await api.client.post("/streams/", headers=by_key(secret))
    stream = await expect_ok(resp, "New stream created")
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        json={"service": "Twitch", "streamKey": "live_1"},
        headers=by_key(secret),
    )
    await expect_ok(resp, "Stream destination added")
    resp = await api.client.get("/streams/", headers=by_key(secret))
    assert [s["id"] for s in await expect_ok(resp, "Stream list for user")] == [stream["id"]]
    resp = await api.client.patch(
        f"/streams/{stream['id']}", json={"isActive": False}, headers=by_key(secret)
    )
    assert (await expect_ok(resp, "Stream updated"))["isActive"] is False
    resp = await api.client.delete(f"/streams/{stream['id']}", headers=by_key(secret))
    await expect_ok(resp, "Stream deleted")


async def test_a_read_key_reads_and_every_write_is_403(api, expect_ok, expect_error, case):
    account = await api.account()
    stream = await api.stream(account)
    dest = await api.destination(account, stream["id"])
    secret = (await api.api_key(account, scope="read"))["apiKey"]
    sid = stream["id"]
    for path, message in [
        ("/streams/", "Stream list for user"),
        (f"/streams/{sid}", "Stream detail"),
        (f"/streams/{sid}/stats", "Stream statistics"),
        (f"/streams/{sid}/webhook", "Stream webhook"),
    ]:
        with case(path):
            await expect_ok(await api.client.get(path, headers=by_key(secret)), message)
    writes = [
        ("POST", "/streams/", None),
        ("PATCH", f"/streams/{sid}", {"isActive": False}),
        ("DELETE", f"/streams/{sid}", None),
        ("POST", f"/streams/{sid}/destination", {"service": "Twitch", "streamKey": "k2"}),
        ("PATCH", f"/streams/{sid}/destination/{dest['id']}", {"isActive": False}),
        ("DELETE", f"/streams/{sid}/destination/{dest['id']}", None),
        ("POST", f"/streams/{sid}/changeKey", None),
        ("PUT", f"/streams/{sid}/webhook", {"callbackUrl": None}),
    ]
    token = (await api.access_token(secret))["token"]
    for headers in (by_key(secret), {"Authorization": f"Bearer {token}"}):
        for method, path, body in writes:
            with case((method, path, list(headers))):
                resp = await api.client.request(method, path, json=body, headers=headers)
                error = await expect_error(resp, 1003, 403)
                assert error["message"] == "This API key may only read"
    # Nothing changed.
    detail = await api.detail(account, sid)
    assert detail["isActive"] is True and detail["streamKey"] == stream["streamKey"]
    assert len(detail["destinations"]) == 1 and detail["destinations"][0]["isActive"]


async def test_a_one_stream_key_sees_that_stream_only(api, expect_ok, expect_error, case):
    account = await api.account()
    mine, other = await api.stream(account), await api.stream(account)
    secret = (await api.api_key(account, streamId=mine["id"]))["apiKey"]
    headers = by_key(secret)
    listed = await expect_ok(
        await api.client.get("/streams/", headers=headers), "Stream list for user"
    )
    assert [s["id"] for s in listed] == [mine["id"]]
    await expect_ok(
        await api.client.get(f"/streams/{mine['id']}", headers=headers), "Stream detail"
    )
    for method, path in [
        ("GET", f"/streams/{other['id']}"),
        ("GET", f"/streams/{other['id']}/stats"),
        ("POST", f"/streams/{other['id']}/changeKey"),
        ("DELETE", f"/streams/{other['id']}"),
    ]:
        with case((method, path)):
            resp = await api.client.request(method, path, headers=headers)
            await expect_error(resp, 1000, 404)
    error = await expect_error(await api.client.post("/streams/", headers=headers), 1003, 403)
    assert error["details"] == {"reason": "stream-restricted key"}
    # It may change its own stream.
    resp = await api.client.post(f"/streams/{mine['id']}/changeKey", headers=headers)
    await expect_ok(resp, "New stream key")
    # A deleted stream takes its keys along: they never widen to every stream.
    await api.client.delete(f"/streams/{mine['id']}", headers=account.headers)
    await expect_error(await api.client.get("/streams/", headers=headers), 1003, 401)


async def test_a_key_for_someone_else_s_stream_is_not_found(api, expect_error):
    alice, bob = await api.account(), await api.account()
    bobs = await api.stream(bob)
    resp = await api.client.post(
        "/accounts/apikeys", json={"name": "x", "streamId": bobs["id"]}, headers=alice.headers
    )
    error = await expect_error(resp, 1000, 404)
    assert error["details"] == {"field": "streamId"}
    assert await api.db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_another_user_s_key_reaches_only_its_own_user(api, expect_ok, expect_error):
    alice, bob = await api.account(), await api.account()
    alices_stream = await api.stream(alice)
    alices_key = await api.api_key(alice)
    bobs_secret = (await api.api_key(bob))["apiKey"]
    resp = await api.client.get(f"/streams/{alices_stream['id']}", headers=by_key(bobs_secret))
    await expect_error(resp, 1000, 404)
    resp = await api.client.get("/streams/", headers=by_key(bobs_secret))
    assert await expect_ok(resp, "Stream list for user") == []
    resp = await api.client.delete(f"/accounts/apikeys/{alices_key['id']}", headers=bob.headers)
    await expect_error(resp, 1000, 404)
    resp = await api.client.get("/streams/", headers=by_key(alices_key["apiKey"]))
    assert len(await expect_ok(resp, "Stream list for user")) == 1


async def test_revoking_stops_the_key_and_its_tokens_at_once(api, expect_ok, expect_error):
    account = await api.account()
    created = await api.api_key(account)
    secret = created["apiKey"]
    tokens = [(await api.access_token(secret))["token"] for _ in range(2)]
    bearers = [{"Authorization": f"Bearer {token}"} for token in tokens]
    for headers in [by_key(secret), *bearers]:
        await expect_ok(await api.client.get("/streams/", headers=headers), "Stream list for user")
    resp = await api.client.delete(f"/accounts/apikeys/{created['id']}", headers=account.headers)
    assert await expect_ok(resp, "API key revoked") == {"id": created["id"]}
    for headers in [by_key(secret), *bearers]:
        await expect_error(await api.client.get("/streams/", headers=headers), 1003, 401)
    resp = await api.client.post("/accounts/token", json={"apiKey": secret})
    await expect_error(resp, 1003, 401)
    resp = await api.client.delete(f"/accounts/apikeys/{created['id']}", headers=account.headers)
    await expect_error(resp, 1000, 404)
    # The user's own login is untouched.
    await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )


async def test_an_expired_key_and_its_tokens_stop_working(api, expect_ok, expect_error):
    account = await api.account()
    soon = datetime.now(UTC) + timedelta(hours=1)
    created = await api.api_key(account, expiresAt=soon.isoformat())
    assert abs(datetime.fromisoformat(created["expiresAt"]) - soon) < timedelta(seconds=1)
    secret = created["apiKey"]
    exchanged = await api.access_token(secret)
    # The token ends with its key: within the key's hour, not 24 h.
    token_end = datetime.fromisoformat(exchanged["expiresAt"])
    assert token_end <= soon + timedelta(seconds=1)
    bearer = {"Authorization": f"Bearer {exchanged['token']}"}
    await expect_ok(await api.client.get("/streams/", headers=bearer), "Stream list for user")
    await api.db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1::uuid",
        created["id"],
    )
    for headers in (by_key(secret), bearer):
        await expect_error(await api.client.get("/streams/", headers=headers), 1003, 401)
    await expect_error(await api.client.post("/accounts/token", json={"apiKey": secret}), 1003, 401)


async def test_token_lasts_at_most_24_hours_and_names_the_key(api):
    import jwt

    account = await api.account()
    created = await api.api_key(account, scope="read")
    before = time.time()
    exchanged = await api.access_token(created["apiKey"])
    claims = jwt.decode(exchanged["token"], options={"verify_signature": False})
    assert claims["iss"] == ISSUER and claims["typ"] == "user"
    assert claims["key"] == created["id"] and "gen" not in claims
    assert claims["exp"] - claims["iat"] <= 24 * 3600
    assert claims["exp"] >= before + 24 * 3600 - 5
    assert datetime.fromisoformat(exchanged["expiresAt"]).timestamp() == claims["exp"]
    assert created["apiKey"] not in exchanged["token"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/accounts/password", {"oldPassword": "x" * 8, "newPassword": "y" * 8}),
        ("POST", "/accounts/apikeys", {"name": "more"}),
        ("GET", "/accounts/apikeys", None),
        ("DELETE", "/accounts/apikeys/{id}", None),
    ],
)
async def test_account_routes_refuse_api_keys_and_their_tokens(
    api, expect_error, method, path, body
):
    account = await api.account()
    created = await api.api_key(account)
    token = (await api.access_token(created["apiKey"]))["token"]
    path = path.format(id=created["id"])
    for headers in (by_key(created["apiKey"]), {"Authorization": f"Bearer {token}"}):
        resp = await api.client.request(method, path, json=body, headers=headers)
        error = await expect_error(resp, 1003, 403)
        assert error["details"] == {"reason": "API key"}
    assert await api.db.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_changing_the_password_keeps_keys_and_their_tokens(api, expect_ok, expect_error):
    account = await api.account(via_api=True)
    created = await api.api_key(account)
    bearer = {"Authorization": f"Bearer {(await api.access_token(created['apiKey']))['token']}"}
    resp = await api.client.post(
        "/accounts/password",
        json={"oldPassword": account.password, "newPassword": "a brand new password"},
        headers=account.headers,
    )
    await expect_ok(resp, "User password changed")
    await expect_error(await api.client.get("/streams/", headers=account.headers), 1003, 401)
    for headers in (by_key(created["apiKey"]), bearer):
        await expect_ok(await api.client.get("/streams/", headers=headers), "Stream list for user")


async def test_last_used_at_records_use(api, expect_ok):
    account = await api.account()
    created = await api.api_key(account)
    other = await api.api_key(account, name="unused")
    await expect_ok(
        await api.client.get("/streams/", headers=by_key(created["apiKey"])),
        "Stream list for user",
    )
    listed = {
        key["id"]: key
        for key in await expect_ok(
            await api.client.get("/accounts/apikeys", headers=account.headers), "API keys"
        )
    }
    used = datetime.fromisoformat(listed[created["id"]]["lastUsedAt"])
    assert datetime.fromisoformat(created["createdAt"]) <= used <= datetime.now(UTC)
    assert listed[other["id"]]["lastUsedAt"] is None
    # A token exchange is a use too.
    await api.db.execute("UPDATE api_keys SET last_used_at = NULL")
    await api.access_token(other["apiKey"])
    assert await api.db.fetchval(
        "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = $1::uuid", other["id"]
    )


INVALID_KEYS = [
    ({}, 1004, "name"),
    ({"name": None}, 1004, "name"),
    ({"name": ""}, 1005, "name"),
    ({"name": "x" * 65}, 1005, "name"),
    ({"name": 5}, 1005, "name"),
    ({"name": "n\x00"}, 1005, "name"),
    ({"name": "n", "scope": "write"}, 1005, "scope"),
    ({"name": "n", "scope": "READ"}, 1005, "scope"),
    ({"name": "n", "streamId": "abc"}, 1005, "streamId"),
    ({"name": "n", "streamId": 5}, 1005, "streamId"),
    ({"name": "n", "expiresAt": "2030-01-01T00:00:00"}, 1005, "expiresAt"),  # no zone
    ({"name": "n", "expiresAt": "tomorrow"}, 1005, "expiresAt"),
    ({"name": "n", "expiresAt": "2001-01-01T00:00:00Z"}, 1005, "expiresAt"),  # past
    # In UTC, after the year 9999 (PostgreSQL and Python stop there): a 500 before.
    ({"name": "n", "expiresAt": "9999-12-31T23:59:59-14:00"}, 1005, "expiresAt"),
    ({"name": "n", "expiresAt": "0001-01-01T00:00:00+14:00"}, 1005, "expiresAt"),
]


async def test_invalid_key_requests_are_refused(api, expect_error, case):
    account = await api.account()
    for body, code, field in INVALID_KEYS:
        with case(body):
            resp = await api.client.post("/accounts/apikeys", json=body, headers=account.headers)
            error = await expect_error(resp, code, 400)
            assert error["details"]["field"] == field
    assert await api.db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_bad_secrets_are_401(api, expect_error, case):
    account = await api.account()
    secret = (await api.api_key(account))["apiKey"]
    for bad in ["", " ", secret[:-1], secret + "x", "rigagent_" + secret[7:], "\ud800"]:
        with case(bad):
            resp = await api.client.get(
                "/streams/",
                headers={"X-Api-Key": bad.encode("utf-8", "surrogatepass").decode("latin-1")},
            )
            await expect_error(resp, 1003, 401)
    for bad in [secret[:-1], "x"]:
        with case(bad):
            resp = await api.client.post("/accounts/token", json={"apiKey": bad})
            await expect_error(resp, 1003, (400, 401))
    # A lone surrogate is not text at all: refused as the body is read (issue 12, item 9).
    resp = await api.client.post("/accounts/token", json={"apiKey": "\ud800"})
    await expect_error(resp, 1005, 400)


async def test_keys_have_a_cap_per_user(api, expect_error, monkeypatch):
    from rig import apikeys

    monkeypatch.setattr(apikeys, "KEYS_PER_USER", 2)
    account = await api.account()
    await api.api_key(account)
    await api.api_key(account)
    resp = await api.client.post("/accounts/apikeys", json={"name": "3"}, headers=account.headers)
    error = await expect_error(resp, 1006, 409)
    assert error["details"]["reason"] == "too many API keys"


async def test_the_secret_never_reaches_the_database_server_log(api, postgres_server):
    account = await api.account()
    secret = (await api.api_key(account))["apiKey"]
    await api.client.get("/streams/", headers=by_key(secret))
    await api.client.post("/accounts/token", json={"apiKey": secret})
    await api.client.get("/streams/", headers=by_key(secret + "wrong"))
    log = (postgres_server.pgdata / "log").read_text(errors="replace")
    assert "database system is ready" in log  # the right file: the check below can fail
    assert secret not in log
