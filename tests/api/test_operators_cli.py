"""Operator commands: `rig agents list|revoke`, `rig users list`, `rig streams list`."""

import json
import re
import secrets

import pytest

from rig.app import create_app
from rig.settings import Settings


@pytest.fixture
def cli_env(rig_env, make_database, tmp_path):
    url = make_database()
    env = rig_env(RIG_DATABASE_URL=url, RIG_DATA_DIR=str(tmp_path / "data"))
    return url, env


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["agents", "--help"], ["create", "list", "revoke"]),
        (["agents", "list", "--help"], ["--json", "RIG_DATABASE_URL"]),
        (["agents", "revoke", "--help"], ["agent", "name or id"]),
        (["users", "--help"], ["list"]),
        (["users", "list", "--help"], ["--json"]),
        (["streams", "list", "--help"], ["--user", "--json"]),
    ],
)
def test_help(run_rig, rig_env, tmp_path, args, expected):
    result = run_rig(*args, env=rig_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for word in expected:
        assert word in result.stdout


def test_listing_an_unmigrated_database_says_what_to_do(run_rig, cli_env, tmp_path):
    _url, env = cli_env
    result = run_rig("users", "list", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "rig migrate" in result.stderr
    assert "Traceback" not in result.stderr


async def test_operator_commands(run_rig, cli_env, tmp_path, aiohttp_client, expect_ok):
    url, env = cli_env
    created = run_rig("agents", "create", "edge-1", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip().splitlines()[-1]
    assert run_rig("agents", "create", "edge-2", env=env, cwd=tmp_path).returncode == 0

    # Some users, streams and destinations through the API.
    app = create_app(
        Settings(database_url=url, data_dir=tmp_path, jwt_secret=secrets.token_urlsafe(48))
    )
    client = await aiohttp_client(app)
    password = "operator test password"
    stream_keys, tokens = [], []
    for name in ("alice", "bob"):
        user = {"username": name, "password": password, "email": f"{name}@example.org"}
        await expect_ok(await client.post("/accounts/", json=user), "User created")
        resp = await client.post("/accounts/auth/local", json=user)
        token = (await expect_ok(resp, "Authentication successful"))["token"]
        tokens.append(token)
        headers = {"Authorization": f"Bearer {token}"}
        stream = await expect_ok(
            await client.post("/streams/", headers=headers), "New stream created"
        )
        stream_keys.append(stream["streamKey"])
        resp = await client.post(
            f"/streams/{stream['id']}/destination",
            json={"service": "Twitch", "streamKey": f"live_{name}_destkey"},
            headers=headers,
        )
        await expect_ok(resp, "Stream destination added")
    # alice's stream goes live on edge-1.
    resp = await client.post("/agents/auth", json={"apiKey": api_key})
    agent_token = (await expect_ok(resp, "Agent authenticated"))["token"]
    resp = await client.post(
        f"/agents/streams/{stream_keys[0]}/claim",
        json={"ingestUrl": "rtmp://edge-1.example/live"},
        headers={"Authorization": f"Bearer {agent_token}"},
    )
    await expect_ok(resp, "Stream claimed")

    secrets_seen = [api_key, agent_token, password, *stream_keys, *tokens]
    secrets_seen += ["live_alice_destkey", "live_bob_destkey", "whsec_"]

    def run(*args: str) -> str:
        result = run_rig(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        for secret in secrets_seen:
            assert secret not in result.stdout + result.stderr, (args, secret)
        return result.stdout

    agents = run("agents", "list")
    lines = agents.strip().splitlines()
    assert re.match(r"^NAME\s+ID\s+CREATED\s+REVOKED\s+LIVE$", lines[0]), agents
    assert re.match(r"^edge-1\s+\S{36}\s+.+\s+-\s+1$", lines[1]), agents
    assert re.match(r"^edge-2\s+\S{36}\s+.+\s+-\s+0$", lines[2]), agents
    listed = json.loads(run("agents", "list", "--json"))
    assert [(a["name"], a["live"], a["revoked"]) for a in listed] == [
        ("edge-1", 1, None),
        ("edge-2", 0, None),
    ]

    users = json.loads(run("users", "list", "--json"))
    assert [(u["username"], u["email"], u["streams"]) for u in users] == [
        ("alice", "alice@example.org", 1),
        ("bob", "bob@example.org", 1),
    ]
    assert set(users[0]) == {"username", "id", "email", "created", "streams"}
    table = run("users", "list")
    assert table.splitlines()[0].split() == ["USERNAME", "ID", "EMAIL", "CREATED", "STREAMS"]

    streams = json.loads(run("streams", "list", "--json"))
    assert [(s["owner"], s["active"], s["live_on"], s["destinations"]) for s in streams] == [
        ("alice", True, "edge-1", 1),
        ("bob", True, None, 1),
    ]
    assert set(streams[0]) == {
        "id",
        "name",
        "owner",
        "active",
        "live_on",
        "live_since",
        "destinations",
        "created",
    }
    only_bob = json.loads(run("streams", "list", "--user", "BOB", "--json"))
    assert [s["owner"] for s in only_bob] == ["bob"]
    table = run("streams", "list")
    assert "alice" in table
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "OWNER"]  # names, not just ids

    # Revoke by name: the key and its tokens stop working at once.
    revoked = run("agents", "revoke", "edge-1")
    assert "revoked agent edge-1" in revoked
    resp = await client.post("/agents/auth", json={"apiKey": api_key})
    assert resp.status == 401
    resp = await client.get(
        f"/agents/config/{stream_keys[0]}", headers={"Authorization": f"Bearer {agent_token}"}
    )
    assert resp.status == 401
    listed = json.loads(run("agents", "list", "--json"))
    assert listed[0]["revoked"] is not None and listed[1]["revoked"] is None
    # Revoke by id; a second revoke, or an unknown agent, is an error.
    run("agents", "revoke", listed[1]["id"])
    again = run_rig("agents", "revoke", "edge-1", env=env, cwd=tmp_path)
    assert again.returncode != 0
    assert "no active agent" in again.stderr
    assert "Traceback" not in again.stderr
    # The name is free again.
    assert run_rig("agents", "create", "edge-1", env=env, cwd=tmp_path).returncode == 0
