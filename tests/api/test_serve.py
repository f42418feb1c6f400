"""`rig serve` as a real process: concurrent start, embedded PostgreSQL, clean stop, logs."""

import asyncio
import secrets
import stat

import aiohttp
import asyncpg
import pytest

from rig.agents import create_agent
from rig.migrations import available_migrations

PASSWORD = "a password nobody logs"


async def call(session, method, url, expect_status, **kwargs):
    async with session.request(method, url, **kwargs) as resp:
        body = await resp.json()
        assert resp.status == expect_status, body
        return body


async def register_and_login(session, base_url, username):
    user = {"username": username, "password": PASSWORD, "email": f"{username}@example.org"}
    await call(session, "POST", f"{base_url}/accounts/", 200, json=user)
    body = await call(
        session,
        "POST",
        f"{base_url}/accounts/auth/local",
        200,
        json={"username": username, "password": PASSWORD},
    )
    return body["payload"]["token"]


def check_clean_log(log: str) -> None:
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


async def test_two_servers_starting_together_on_a_fresh_database(
    spawn_rig, rig_env, make_database, tmp_path
):
    url = make_database()
    env = rig_env(
        RIG_DATABASE_URL=url,
        RIG_JWT_SECRET=secrets.token_urlsafe(48),
        RIG_DATA_DIR=str(tmp_path / "data"),
    )
    first, second = spawn_rig(env), spawn_rig(env)
    await asyncio.gather(first.wait_ready(), second.wait_ready())

    async with aiohttp.ClientSession() as session:
        # One database and one signing key: a token from one server works on the other.
        token = await register_and_login(session, first.url, "alice")
        headers = {"Authorization": f"Bearer {token}"}
        created = await call(session, "POST", f"{second.url}/streams/", 200, headers=headers)
        listed = await call(session, "GET", f"{first.url}/streams/", 200, headers=headers)
        assert [s["id"] for s in listed["payload"]] == [created["payload"]["id"]]

    assert first.stop() == 0
    assert second.stop() == 0
    for rig in (first, second):
        check_clean_log(rig.log())
    # Both ran the migrations; exactly one of them applied the schema.
    assert [rig.log().count("applied migration 0001_initial") for rig in (first, second)] in (
        [1, 0],
        [0, 1],
    )
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in available_migrations()]
    finally:
        await conn.close()


async def test_serve_with_embedded_postgres_and_generated_secret(spawn_rig, rig_env, tmp_path):
    data_dir = tmp_path / "data"
    env = rig_env(RIG_DATA_DIR=str(data_dir))
    rig = spawn_rig(env)
    await rig.wait_ready(timeout=120)
    secret_file = data_dir / "jwt_secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text()
    assert len(secret.strip()) >= 32
    assert (data_dir / "postgres").is_dir()
    async with aiohttp.ClientSession() as session:
        token = await register_and_login(session, rig.url, "alice")
        headers = {"Authorization": f"Bearer {token}"}
        await call(session, "POST", f"{rig.url}/streams/", 200, headers=headers)
    assert rig.stop() == 0
    log = rig.log()
    check_clean_log(log)
    assert "embedded PostgreSQL" in log, log
    assert str(data_dir.resolve()) in log, log
    assert secret not in log
    assert "generated" in log

    # A second start reuses the database and the secret: the old token still works.
    again = spawn_rig(env)
    await again.wait_ready(timeout=120)
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    async with aiohttp.ClientSession() as session:
        body = await call(session, "GET", f"{again.url}/streams/", 200, headers=headers)
        assert len(body["payload"]) == 1
    assert again.stop() == 0
    check_clean_log(again.log())
    assert "generated" not in again.log()
    assert sorted(p.name for p in data_dir.iterdir()) == ["jwt_secret", "postgres"]


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
async def test_logs_never_contain_keys_passwords_or_tokens(
    spawn_rig, rig_env, make_database, tmp_path, log_level
):
    url = make_database()
    jwt_secret = secrets.token_urlsafe(48)
    env = rig_env(
        RIG_DATABASE_URL=url,
        RIG_JWT_SECRET=jwt_secret,
        RIG_DATA_DIR=str(tmp_path / "data"),
        RIG_LOG_LEVEL=log_level,
    )
    rig = spawn_rig(env)
    await rig.wait_ready()
    secrets_seen = [jwt_secret, PASSWORD, "wrong password 123"]

    conn = await asyncpg.connect(url)
    try:
        _agent_id, api_key = await create_agent(conn, "edge-1")
    finally:
        await conn.close()
    secrets_seen.append(api_key)

    async with aiohttp.ClientSession() as session:
        base = rig.url
        token = await register_and_login(session, base, "alice")
        await call(
            session,
            "POST",
            f"{base}/accounts/auth/local",
            401,
            json={"username": "alice", "password": "wrong password 123"},
        )
        headers = {"Authorization": f"Bearer {token}"}
        stream = (await call(session, "POST", f"{base}/streams/", 200, headers=headers))["payload"]
        dest = {"service": "YouTube", "streamKey": "dest-secret-key-42"}
        await call(
            session,
            "POST",
            f"{base}/streams/{stream['id']}/destination",
            200,
            headers=headers,
            json=dest,
        )
        body = await call(session, "POST", f"{base}/agents/auth", 200, json={"apiKey": api_key})
        agent_token = body["payload"]["token"]
        agent = {"Authorization": f"Bearer {agent_token}"}
        key = stream["streamKey"]
        await call(session, "GET", f"{base}/agents/config/{key}", 200, headers=agent)
        await call(session, "GET", f"{base}/agents/config/{key}x", 404, headers=agent)
        await call(session, "GET", f"{base}/agents/config/{key}", 403, headers=headers)
        await call(session, "GET", f"{base}/streams/{key}/nothing", 404, headers=headers)
        await call(session, "GET", f"{base}/streams/{key}", 404, headers=headers)
        rotated = await call(
            session, "POST", f"{base}/streams/{stream['id']}/changeKey", 200, headers=headers
        )
        new_key = rotated["payload"]["key"]
        await call(session, "GET", f"{base}/agents/config/{new_key}", 200, headers=agent)
        await call(session, "GET", f"{base}/agents/config/{key}", 404, headers=agent)
        # An API key: created, sent as X-Api-Key, exchanged for a token, sent wrong.
        created = await call(
            session,
            "POST",
            f"{base}/accounts/apikeys",
            200,
            headers=headers,
            json={"name": "bot"},
        )
        user_key = created["payload"]["apiKey"]
        by_key = {"X-Api-Key": user_key}
        await call(session, "GET", f"{base}/streams/", 200, headers=by_key)
        await call(session, "GET", f"{base}/streams/", 401, headers={"X-Api-Key": user_key + "x"})
        exchanged = await call(
            session, "POST", f"{base}/accounts/token", 200, json={"apiKey": user_key}
        )
        key_token = exchanged["payload"]["token"]
        await call(
            session,
            "GET",
            f"{base}/streams/",
            200,
            headers={"Authorization": f"Bearer {key_token}"},
        )
        await call(session, "POST", f"{base}/accounts/token", 401, json={"apiKey": "rigkey_x"})
        new_password = {"oldPassword": PASSWORD, "newPassword": "another secret pass"}
        await call(
            session, "POST", f"{base}/accounts/password", 200, headers=headers, json=new_password
        )
        await call(session, "GET", f"{base}/streams/", 401, headers=headers)
        await call(session, "GET", f"{base}/streams/", 200, headers=by_key)  # keys live on
    secrets_seen += [token, agent_token, key, new_key, "dest-secret-key-42", "another secret pass"]
    secrets_seen += [user_key, key_token]

    assert rig.stop() == 0
    log = rig.log()
    check_clean_log(log)
    # The log did capture the session (so the checks below are meaningful) ...
    assert "/agents/config/{streamKey}" in log, log
    assert "/accounts/auth/local" in log, log
    # ... and holds none of its secrets, whole or split into JWT segments.
    for secret in secrets_seen:
        assert secret not in log, secret
    for jwt_token in (token, agent_token, key_token):
        for segment in jwt_token.split("."):
            assert segment not in log, segment
