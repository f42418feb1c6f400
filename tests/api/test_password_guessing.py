"""Password guessing is slow, and a stranger cannot lock the owner out (issue 12,
items 12 and 13). Default limits, client addresses given by a trusted proxy."""

from dataclasses import replace

import pytest

from rig.app import create_app
from rig.settings import Settings

DEFAULTS = Settings()


@pytest.fixture
async def proxied(aiohttp_client, settings, db):
    """rig with its default limits behind a trusted proxy: X-Forwarded-For is the client.
    The window is long, so that no allowance refills while a slow machine runs the test."""
    limits = replace(settings, trusted_proxies="127.0.0.1", rate_limit_window=3600)
    return await aiohttp_client(create_app(limits))


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def log_in(client, username, password, address):
    return await client.post(
        "/accounts/auth/local",
        json={"username": username, "password": password},
        headers=from_address(address),
    )


async def test_a_stranger_cannot_lock_the_owner_out(proxied, api, expect_error, expect_ok):
    owner = await api.account("victim")
    # The stranger guesses until refused, and keeps trying.
    answers = []
    for _ in range(DEFAULTS.rate_limit_address_username + 5):
        resp = await log_in(proxied, "Victim", "wrong password", "203.0.113.66")
        answers.append(resp.status)
        await resp.release()
    assert answers.count(401) == DEFAULTS.rate_limit_address_username
    assert answers[-1] == 429
    # ... and with sign-ups of the same name.
    for _ in range(5):
        resp = await proxied.post(
            "/accounts/",
            json={"username": "VICTIM", "password": "long enough", "email": "x@example.org"},
            headers=from_address("203.0.113.67"),
        )
        await expect_error(resp, 1006, 409)
    # The owner logs in, from anywhere else, at once.
    resp = await log_in(proxied, "victim", owner.password, "198.51.100.10")
    await expect_ok(resp, "Authentication successful")


async def test_right_passwords_cost_nothing(proxied, api, expect_ok):
    owner = await api.account()
    for _ in range(DEFAULTS.rate_limit_address_username * 2):
        resp = await log_in(proxied, owner.username, owner.password, "198.51.100.10")
        await expect_ok(resp, "Authentication successful")


async def test_guessing_from_many_addresses_is_limited_but_the_owners_address_gets_in(
    aiohttp_client, settings, db, api, expect_error, expect_ok
):
    limits = replace(
        settings,
        trusted_proxies="127.0.0.1",
        rate_limit_username=6,
        rate_limit_address_username=2,
        rate_limit_window=3600,
    )
    client = await aiohttp_client(create_app(limits))
    owner = await api.account("victim")
    await expect_ok(
        await log_in(client, "victim", owner.password, "198.51.100.10"), "Authentication successful"
    )
    for i in range(6):  # a guesser spread over addresses, each under its own limit
        await expect_error(await log_in(client, "victim", "wrong", f"203.0.113.{i}"), 1003, 401)
    body = await expect_error(await log_in(client, "victim", "wrong", "203.0.113.99"), 1010, 429)
    assert body["details"]["reason"] == "too many wrong passwords for this account"
    # The owner's usual address is not held back; a new one waits like the guesser.
    resp = await log_in(client, "victim", owner.password, "198.51.100.10")
    await expect_ok(resp, "Authentication successful")
    await expect_error(await log_in(client, "victim", owner.password, "192.0.2.1"), 1010, 429)


async def test_old_password_guesses_are_limited_per_user(proxied, api, expect_error, expect_ok):
    owner = await api.account()
    attempts = DEFAULTS.rate_limit_address_username
    for i in range(attempts):  # a stolen token, from several addresses
        resp = await proxied.post(
            "/accounts/password",
            json={"oldPassword": f"guess {i}", "newPassword": "a new password"},
            headers={**owner.headers, **from_address(f"203.0.113.{i}")},
        )
        await expect_error(resp, 1003, 401)
    resp = await proxied.post(
        "/accounts/password",
        json={"oldPassword": owner.password, "newPassword": "a new password"},
        headers={**owner.headers, **from_address("203.0.113.200")},
    )
    body = await expect_error(resp, 1010, 429)
    assert int(resp.headers["Retry-After"]) >= 1
    assert body["details"]["reason"] == "too many wrong passwords for this account"
    # The password is unchanged: its owner still logs in with it.
    resp = await log_in(proxied, owner.username, owner.password, "198.51.100.10")
    await expect_ok(resp, "Authentication successful")


async def test_password_changes_are_limited_per_address(
    aiohttp_client, settings, db, api, expect_error
):
    client = await aiohttp_client(create_app(replace(settings, rate_limit_address=3)))
    owner = await api.account()
    for _ in range(3):
        resp = await client.post("/accounts/password", json={}, headers=owner.headers)
        await expect_error(resp, 1004, 400)
    resp = await client.post("/accounts/password", json={}, headers=owner.headers)
    body = await expect_error(resp, 1010, 429)
    assert body["details"]["reason"] == "too many requests from this address"
