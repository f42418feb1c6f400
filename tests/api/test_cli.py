"""The `rig` command: help, `rig agents create`, `rig migrate` (run as subprocesses)."""

import re
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from rig.app import create_app
from rig.settings import Settings


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], ["serve", "migrate", "agents"]),
        (["serve", "--help"], ["--port", "--host", "RIG_DATABASE_URL", "RIG_DATA_DIR"]),
        (["migrate", "--help"], ["--status", "RIG_DATABASE_URL"]),
        (["agents", "--help"], ["create"]),
        (["agents", "create", "--help"], ["name", "RIG_DATABASE_URL"]),
    ],
)
def test_help(run_rig, rig_env, tmp_path, args, expected):
    result = run_rig(*args, env=rig_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: rig")
    for word in expected:
        assert word in result.stdout
    assert list(tmp_path.iterdir()) == []  # asking for help creates nothing


def test_console_script_help(rig_env, tmp_path):
    script = Path(sys.executable).parent / "rig"
    result = subprocess.run(
        [str(script), "--help"],
        env=rig_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: rig")


def test_no_command_is_a_usage_error(run_rig, rig_env, tmp_path):
    result = run_rig(env=rig_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: rig" in result.stderr


def test_invalid_setting_is_a_usage_error(run_rig, rig_env, tmp_path):
    result = run_rig("migrate", env=rig_env(RIG_PORT="eighty"), cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_fails_cleanly(run_rig, rig_env, tmp_path):
    env = rig_env(RIG_DATABASE_URL="postgresql://rig@127.0.0.1:1/rig", RIG_DATA_DIR=str(tmp_path))
    result = run_rig("migrate", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr


async def test_agents_create_prints_a_working_key(
    run_rig, rig_env, make_database, tmp_path, aiohttp_client, expect_ok, expect_error
):
    url = make_database()
    env = rig_env(RIG_DATABASE_URL=url, RIG_DATA_DIR=str(tmp_path / "data"))
    result = run_rig("agents", "create", "edge-1", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    api_key = lines[-1]
    assert api_key == api_key.strip()
    assert re.fullmatch(r"\S{32,}", api_key), lines
    assert all(api_key not in line for line in lines[:-1])

    app = create_app(
        Settings(database_url=url, data_dir=tmp_path, jwt_secret=secrets.token_urlsafe(48))
    )
    client = await aiohttp_client(app)
    resp = await client.post("/agents/auth", json={"apiKey": api_key})
    token = (await expect_ok(resp, "Agent authenticated"))["token"]
    resp = await client.get(
        "/agents/config/nosuchkey", headers={"Authorization": f"Bearer {token}"}
    )
    await expect_error(resp, 1000, 404)  # the token was accepted; the key just does not exist

    again = run_rig("agents", "create", "edge-1", env=env, cwd=tmp_path)
    assert again.returncode != 0
    assert "edge-1" in again.stderr
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert again.stdout.strip() == ""

    other = run_rig("agents", "create", "edge-2", env=env, cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    other_key = other.stdout.strip().splitlines()[-1]
    assert other_key != api_key

    conn = await asyncpg.connect(url)
    try:
        names = await conn.fetch("SELECT name FROM agents ORDER BY name")
        assert [row["name"] for row in names] == ["edge-1", "edge-2"]
    finally:
        await conn.close()


def test_migrate_and_status(run_rig, rig_env, make_database, tmp_path):
    env = rig_env(RIG_DATABASE_URL=make_database(), RIG_DATA_DIR=str(tmp_path / "data"))
    status = run_rig("migrate", "--status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^pending\s+0001_initial$", status.stdout, re.M), status.stdout
    assert not re.search(r"^applied", status.stdout, re.M)

    first = run_rig("migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "0001_initial" in first.stdout

    status = run_rig("migrate", "--status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^applied\s+0001_initial$", status.stdout, re.M), status.stdout
    assert not re.search(r"^pending", status.stdout, re.M)

    second = run_rig("migrate", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0001_initial" not in second.stdout
    assert re.search(r"\b0\b", second.stdout), second.stdout


SERVER_ONLY_FLAGS = ("--host", "--port", "--token-ttl", "--rate-limit-address", "--cors-origins")


@pytest.mark.parametrize(
    "command",
    [
        ["migrate"],
        ["agents", "create"],
        ["agents", "list"],
        ["agents", "revoke"],
        ["users", "list"],
        ["streams", "list"],
    ],
)
def test_each_subcommand_lists_only_its_own_flags(run_rig, rig_env, tmp_path, command):
    """Only `serve` has the server's flags; every command has the database's and logs'."""
    result = run_rig(*command, "--help", env=rig_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in ("--database-url", "--data-dir", "--log-level", "--log-format"):
        assert flag in result.stdout, (command, flag)
    for flag in SERVER_ONLY_FLAGS:
        assert flag not in result.stdout, (command, flag)


def test_serve_lists_every_setting_with_a_flag(run_rig, rig_env, tmp_path):
    from rig.settings import OPTIONS

    result = run_rig("serve", "--help", env=rig_env(), cwd=tmp_path)
    flags = [flag for flag, *_ in OPTIONS if flag]
    for flag in flags:
        assert flag in result.stdout, flag


async def test_commands_say_whether_they_started_or_joined_the_embedded_database(
    spawn_rig, run_rig, rig_env, tmp_path
):
    env = rig_env(RIG_DATA_DIR=str(tmp_path / "data"))
    alone = run_rig("migrate", env=env, cwd=tmp_path, timeout=120)
    assert alone.returncode == 0, alone.stderr
    assert "started embedded PostgreSQL" in alone.stderr  # nothing ran: it started one
    rig = spawn_rig(env)
    await rig.wait_ready(timeout=120)
    assert "started embedded PostgreSQL" in rig.log()
    for command in (["migrate", "--status"], ["agents", "list"]):
        joined = run_rig(*command, env=env, cwd=tmp_path, timeout=120)
        assert joined.returncode == 0, joined.stderr
        assert "started embedded PostgreSQL" not in joined.stderr, (command, joined.stderr)
        assert "embedded PostgreSQL already running" in joined.stderr, (command, joined.stderr)
    assert rig.stop() == 0
