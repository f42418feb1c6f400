"""Accounts: create, log in, change password (`/accounts/...`)."""

import asyncio
import re
import time

import pytest

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PASSWORD = "correct horse battery"


def new_user(username="alice", password=PASSWORD, email=None):
    return {"username": username, "password": password, "email": email or f"{username}@x.io"}


async def user_count(db) -> int:
    return await db.fetchval("SELECT count(*) FROM users")


# ------------------------------------------------------------------ create


async def test_create_account(client, db, expect_ok):
    resp = await client.post("/accounts/", json=new_user("alice", email="alice@example.org"))
    payload = await expect_ok(resp, "User created")
    assert set(payload) == {"userID", "username", "email"}
    assert UUID4.match(payload["userID"])
    assert payload["username"] == "alice"
    assert payload["email"] == "alice@example.org"
    row = await db.fetchrow("SELECT id, username, email, password_hash FROM users")
    assert str(row["id"]) == payload["userID"]
    assert (row["username"], row["email"]) == ("alice", "alice@example.org")
    assert PASSWORD not in row["password_hash"]
    assert row["password_hash"].startswith("$argon2id$")


async def test_shortest_allowed_username_and_password(client, expect_ok):
    resp = await client.post("/accounts/", json=new_user("abc", password="8 chars!"))
    payload = await expect_ok(resp, "User created")
    assert payload["username"] == "abc"
    resp = await client.post(
        "/accounts/auth/local", json={"username": "abc", "password": "8 chars!"}
    )
    await expect_ok(resp, "Authentication successful")


async def test_user_ids_are_distinct(client, expect_ok):
    ids = set()
    for name in ("ann", "bob", "cat"):
        ids.add(
            (await expect_ok(await client.post("/accounts/", json=new_user(name)), "User created"))[
                "userID"
            ]
        )
    assert len(ids) == 3


@pytest.mark.parametrize("username", ["ab", "", "   ", "a"])
async def test_invalid_username_is_1005(client, db, expect_error, username):
    resp = await client.post("/accounts/", json=new_user(username, email="ok@example.org"))
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "username"
    assert await user_count(db) == 0


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "a@b", "@example.org", "alice@", "a b@example.org", "a@@example.org", ""],
)
async def test_invalid_email_is_1005(client, db, expect_error, email):
    resp = await client.post("/accounts/", json={**new_user("alice"), "email": email})
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "email"
    assert await user_count(db) == 0


@pytest.mark.parametrize("password", ["", "1234567", "short"])
async def test_short_password_is_1005(client, db, expect_error, password):
    resp = await client.post("/accounts/", json=new_user("alice", password=password))
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "password"
    assert await user_count(db) == 0


async def test_duplicate_username_is_1006(client, db, expect_ok, expect_error):
    await expect_ok(
        await client.post("/accounts/", json=new_user("alice", email="1@x.io")), "User created"
    )
    resp = await client.post("/accounts/", json=new_user("alice", email="2@x.io"))
    error = await expect_error(resp, 1006, (409, 400))
    assert error["details"]["field"] == "username"
    assert await user_count(db) == 1


async def test_duplicate_username_differing_in_case_is_1006(client, db, expect_ok, expect_error):
    await expect_ok(
        await client.post("/accounts/", json=new_user("alice", email="1@x.io")), "User created"
    )
    for name in ("Alice", "ALICE", "aLiCe"):
        resp = await client.post("/accounts/", json=new_user(name, email=f"{name}2@y.io"))
        error = await expect_error(resp, 1006, (409, 400))
        assert error["details"]["field"] == "username"
    assert await user_count(db) == 1


async def test_duplicate_email_is_1006(client, db, expect_ok, expect_error):
    await expect_ok(
        await client.post("/accounts/", json=new_user("alice", email="same@x.io")), "User created"
    )
    resp = await client.post("/accounts/", json=new_user("bobby", email="same@x.io"))
    error = await expect_error(resp, 1006, (409, 400))
    assert error["details"]["field"] == "email"
    assert await user_count(db) == 1


async def test_concurrent_creation_of_one_username_creates_exactly_one(client, db):
    responses = await asyncio.gather(
        *(client.post("/accounts/", json=new_user("racer", email=f"r{i}@x.io")) for i in range(10))
    )
    bodies = [await resp.json() for resp in responses]
    statuses = sorted(resp.status for resp in responses)
    assert statuses.count(200) == 1, bodies
    assert [b["errorCode"] for b in bodies if "errorCode" in b] == [1006] * 9, bodies
    assert all(resp.status in (409, 400) for resp in responses if resp.status != 200)
    assert await user_count(db) == 1


async def test_concurrent_creation_of_one_email_creates_exactly_one(client, db):
    responses = await asyncio.gather(
        *(client.post("/accounts/", json=new_user(f"racer{i}", email="r@x.io")) for i in range(10))
    )
    bodies = [await resp.json() for resp in responses]
    assert [resp.status for resp in responses].count(200) == 1, bodies
    assert [b["errorCode"] for b in bodies if "errorCode" in b] == [1006] * 9, bodies
    assert await user_count(db) == 1


# ------------------------------------------------------------------ log in


async def test_login(client, expect_ok):
    created = await expect_ok(
        await client.post("/accounts/", json=new_user("alice")), "User created"
    )
    resp = await client.post(
        "/accounts/auth/local", json={"username": "alice", "password": PASSWORD}
    )
    payload = await expect_ok(resp, "Authentication successful")
    assert set(payload) == {"username", "token"}
    assert payload["username"] == created["username"]
    assert len(payload["token"].split(".")) == 3
    resp = await client.get("/streams/", headers={"Authorization": f"Bearer {payload['token']}"})
    assert await expect_ok(resp, "Stream list for user") == []


async def test_wrong_password_and_unknown_user_answer_identically(api, expect_error):
    account = await api.account()
    wrong_password = await api.client.post(
        "/accounts/auth/local", json={"username": account.username, "password": "not the password"}
    )
    unknown_user = await api.client.post(
        "/accounts/auth/local", json={"username": "nobody-here", "password": "not the password"}
    )
    first = await expect_error(wrong_password, 1003, 401)
    second = await expect_error(unknown_user, 1003, 401)
    assert first == second
    assert wrong_password.status == unknown_user.status
    assert account.username not in first["message"]


async def test_unknown_user_costs_as_much_as_a_wrong_password(api):
    """No user enumeration by timing: an unknown user still pays for a password hash."""
    account = await api.account()

    async def fastest(username: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            resp = await api.client.post(
                "/accounts/auth/local", json={"username": username, "password": "wrong password"}
            )
            assert resp.status == 401
            times.append(time.perf_counter() - start)
        return min(times)

    known, unknown = await fastest(account.username), await fastest("nobody-here")
    # A skipped hash would make the unknown user ~100x faster; allow ordinary jitter.
    assert unknown > 0.3 * known, (known, unknown)


# ------------------------------------------------------------------ change password


async def change(client, token, old, new):
    return await client.post(
        "/accounts/password",
        json={"oldPassword": old, "newPassword": new},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_change_password_revokes_earlier_tokens(api, expect_ok, expect_error):
    account = await api.account()
    other_session = await api.login(account.username)
    bystander = await api.account()
    resp = await change(api.client, account.token, PASSWORD, "a brand new password")
    assert await expect_ok(resp, "User password changed") == {"username": account.username}

    for token in (account.token, other_session):
        resp = await api.client.get("/streams/", headers={"Authorization": f"Bearer {token}"})
        await expect_error(resp, 1003, 401)
        resp = await api.client.post("/streams/", headers={"Authorization": f"Bearer {token}"})
        await expect_error(resp, 1003, 401)
    resp = await change(api.client, account.token, "a brand new password", "yet another one")
    await expect_error(resp, 1003, 401)

    resp = await api.client.post(
        "/accounts/auth/local", json={"username": account.username, "password": PASSWORD}
    )
    await expect_error(resp, 1003, 401)
    new_token = await api.login(account.username, "a brand new password")
    resp = await api.client.get("/streams/", headers={"Authorization": f"Bearer {new_token}"})
    await expect_ok(resp, "Stream list for user")
    # Someone else's tokens are untouched.
    resp = await api.client.get("/streams/", headers=bystander.headers)
    await expect_ok(resp, "Stream list for user")


async def test_change_password_with_wrong_old_password_is_1003(api, expect_ok, expect_error):
    account = await api.account()
    resp = await change(api.client, account.token, "not my password", "a brand new password")
    await expect_error(resp, 1003, 401)
    # Nothing changed: the token and the old password still work, the new one does not.
    await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )
    await api.login(account.username, PASSWORD)
    resp = await api.client.post(
        "/accounts/auth/local",
        json={"username": account.username, "password": "a brand new password"},
    )
    await expect_error(resp, 1003, 401)


@pytest.mark.parametrize("new_password", ["", "1234567"])
async def test_change_to_short_password_is_1005(api, expect_ok, expect_error, new_password):
    account = await api.account()
    resp = await change(api.client, account.token, PASSWORD, new_password)
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == "newPassword"
    await expect_ok(
        await api.client.get("/streams/", headers=account.headers), "Stream list for user"
    )
    await api.login(account.username, PASSWORD)


async def test_change_password_needs_a_token(client, expect_error):
    resp = await client.post(
        "/accounts/password", json={"oldPassword": PASSWORD, "newPassword": "a brand new password"}
    )
    await expect_error(resp, 1003, 401)
