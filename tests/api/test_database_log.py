"""No destination key in the database server's log (issue 12, item 14): a duplicate
destination is refused without PostgreSQL ever printing the key in an error DETAIL."""

import secrets
import uuid

import asyncpg
import pytest


def server_log(postgres_server) -> str:
    return postgres_server.log.read_text(errors="replace")


async def test_duplicate_destinations_leave_no_key_in_the_server_log(
    api, postgres_server, expect_error
):
    account = await api.account()
    stream = await api.stream(account)
    key = f"secret-{secrets.token_hex(8)}"
    other_key = f"secret-{secrets.token_hex(8)}"
    await api.destination(account, stream["id"], "YouTube", key)
    other = await api.destination(account, stream["id"], "YouTube", other_key)
    custom = {"service": "Custom", "streamKey": key, "rtmpUrl": "rtmp://ingest.example/live"}
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination", json=custom, headers=account.headers
    )
    assert resp.status == 200
    custom_id = (await resp.json())["payload"]["id"]

    # Added twice; changed into a duplicate of another (built-in and Custom).
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        json={"service": "YouTube", "streamKey": key},
        headers=account.headers,
    )
    await expect_error(resp, 1006, 409)
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination", json=custom, headers=account.headers
    )
    await expect_error(resp, 1006, 409)
    resp = await api.client.patch(
        f"/streams/{stream['id']}/destination/{other['id']}",
        json={"streamKey": key},
        headers=account.headers,
    )
    await expect_error(resp, 1007, 409)
    second_custom = {**custom, "streamKey": other_key}
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination", json=second_custom, headers=account.headers
    )
    assert resp.status == 200
    second_custom_id = (await resp.json())["payload"]["id"]
    resp = await api.client.patch(
        f"/streams/{stream['id']}/destination/{second_custom_id}",
        json={"streamKey": key},
        headers=account.headers,
    )
    await expect_error(resp, 1007, 409)
    assert custom_id != second_custom_id

    log = server_log(postgres_server)
    assert "database system is ready to accept connections" in log  # the right file
    assert key not in log, [line for line in log.splitlines() if key in line]
    assert other_key not in log


async def test_a_racing_duplicate_shows_a_digest_not_the_key(api, postgres_server):
    """Two requests adding the same destination at once pass rig's check together; the
    unique index refuses the second, and its DETAIL line names a digest of the key."""
    account = await api.account()
    stream = await api.stream(account)
    key = f"secret-{secrets.token_hex(8)}"
    await api.destination(account, stream["id"], "Twitch", key)
    with pytest.raises(asyncpg.UniqueViolationError) as raised:
        await api.db.execute(
            "INSERT INTO destinations (stream_id, service, stream_key) VALUES ($1, $2, $3)",
            uuid.UUID(stream["id"]),
            "Twitch",
            key,
        )
    assert key not in str(raised.value.detail)
    assert "destination_key_digest" in str(raised.value.detail)
    assert key not in server_log(postgres_server)
