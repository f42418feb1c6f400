"""Liveness and readiness when PostgreSQL dies under a running `rig serve` (issue 12,
item 15). Liveness: the process serves and its background workers run, so a restart
would not help; readiness: the database answers. A database outage is the latter."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from rig.embedded_db import embedded_server, ensure_database


def postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


def stop_postgres(pgdata: Path) -> None:
    """Fast shutdown (SIGINT: connections are cut), as when the database server dies."""
    pid = postmaster_pid(pgdata)
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "PostgreSQL did not stop"


def start_postgres(pgdata: Path) -> None:
    """Start the same server again, from a process of its own (pgserver caches servers)."""
    code = "import pgserver, sys; pgserver.get_server(sys.argv[1], cleanup_mode=None)"
    subprocess.run([sys.executable, "-c", code, str(pgdata)], check=True, timeout=60)


@pytest.fixture
def own_postgres(tmp_path_factory):
    """A PostgreSQL server of this test alone (stopping the session's would hurt others)."""
    pgdata = tmp_path_factory.mktemp("own-pg") / "data"
    server = embedded_server(pgdata)
    url = ensure_database(server, "rig_liveness")
    yield pgdata.resolve(), url
    if postmaster_pid(pgdata.resolve()) is None:
        start_postgres(pgdata.resolve())  # so that pgserver's own cleanup finds it
    server.cleanup()
    # pgserver stops only the server it started; the one the test started again (from
    # another process) outlived the suite (seen after full runs): stop it here.
    pid = postmaster_pid(pgdata.resolve())
    if pid is not None and os.path.exists(f"/proc/{pid}"):
        stop_postgres(pgdata.resolve())


async def get(session, url, **kwargs):
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.json()


async def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_database_outage_is_not_ready_but_alive_and_recovers(
    own_postgres, spawn_rig, rig_env, tmp_path
):
    import secrets

    pgdata, url = own_postgres
    rig = spawn_rig(
        rig_env(
            RIG_DATABASE_URL=url,
            RIG_JWT_SECRET=secrets.token_urlsafe(48),
            RIG_DATA_DIR=str(tmp_path / "data"),
        )
    )
    await rig.wait_ready()
    async with aiohttp.ClientSession() as session:
        user = {"username": "alice", "password": "a long password", "email": "a@example.org"}
        async with session.post(f"{rig.url}/accounts/", json=user) as resp:
            assert resp.status == 200
        async with session.post(f"{rig.url}/accounts/auth/local", json=user) as resp:
            token = (await resp.json())["payload"]["token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await get(session, f"{rig.url}/healthz"))[0] == 200
        assert (await get(session, f"{rig.url}/readyz"))[0] == 200

        stop_postgres(pgdata)
        # Readiness fails at once, and the API answers 503 (1008), never 500.
        status, body = await get(session, f"{rig.url}/readyz")
        assert status == 503, body
        assert body["details"]["database"] == "unreachable"
        status, body = await get(session, f"{rig.url}/streams/", headers=auth)
        assert (status, body["errorCode"]) == (503, 1008), body
        # Liveness holds for as long as the outage (restarting rig would not help) ...
        for _ in range(5):
            status, body = await get(session, f"{rig.url}/healthz")
            assert status == 200, body
            await asyncio.sleep(0.5)
        assert rig.proc.poll() is None

        start_postgres(pgdata)

        # ... and rig recovers on its own: ready again, the same token works.
        async def ready() -> bool:
            return (await get(session, f"{rig.url}/readyz"))[0] == 200

        await wait_for(ready, 30, "rig to be ready again")
        status, body = await get(session, f"{rig.url}/streams/", headers=auth)
        assert status == 200, body
        assert (await get(session, f"{rig.url}/healthz"))[0] == 200

        async def resumed() -> bool:
            return "claim sweeper resumed" in rig.log()

        await wait_for(resumed, 10, "the claim sweeper to resume")
    assert rig.stop() == 0
    log = rig.log()
    assert "Traceback" not in log, log
    # Background workers say that they paused and that they resumed, not a line per
    # attempt (one a second) while the database is away. (Twice at most: a restarting
    # database may refuse a first connection after the first query succeeded.)
    paused = log.count("claim sweeper paused")
    assert 1 <= paused <= 2, log
    assert log.count("claim sweeper resumed") == paused, log


async def test_a_dead_background_worker_fails_liveness(aiohttp_client, settings, db):
    """A worker that died of a bug (not an outage: those it survives) makes /healthz 503,
    so the orchestrator restarts rig instead of leaving claims unexpired forever."""
    from dataclasses import replace

    from rig.app import create_app
    from rig.background import WORKERS

    client = await aiohttp_client(create_app(replace(settings, background_tasks=True)))
    resp = await client.get("/healthz")
    assert resp.status == 200
    workers = client.server.app[WORKERS]
    assert set(workers) == {"claim sweeper", "webhook sender"}
    workers["claim sweeper"].cancel()  # as if it had raised
    while not workers["claim sweeper"].done():
        await asyncio.sleep(0.01)
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["errorCode"] == 1008
    assert body["details"] == {"workers": ["claim sweeper"]}
    assert (await client.get("/readyz")).status == 200  # the database is fine
