"""Thumbnails (docs/agent-protocol.md#thumbnail-upload): an agent PUTs the live stream's
latest JPEG, the owner GETs it while live and at most 15 s old; everything else is
refused clearly. Pictures are wanted only while someone asks for them: a GET marks the
stream's picture wanted (rig's claim and heartbeat answers say `thumbnailWanted`) and
waits a little for a picture when there is none yet."""

import asyncio
import io
from email.utils import parsedate_to_datetime

import pytest
from PIL import Image

from rig import thumbnails

JPEG = {"Content-Type": "image/jpeg"}


def picture(width: int = 320, height: int = 180, kind: str = "JPEG", quality: int = 80) -> bytes:
    """A real image made with Pillow (a gradient, so it is not trivially small)."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, kind, quality=quality) if kind == "JPEG" else image.save(out, kind)
    return out.getvalue()


async def live(api, make_agent):
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    return account, stream, agent, claim


async def put(api, agent, claim_id, data, headers=JPEG):
    return await api.client.put(
        f"/agents/claims/{claim_id}/thumbnail", data=data, headers={**agent.headers, **headers}
    )


async def get(api, account, stream_id, headers=None):
    return await api.client.get(
        f"/streams/{stream_id}/thumbnail", headers=headers or account.headers
    )


async def test_the_owner_gets_the_latest_picture(api, make_agent, expect_ok):
    account, stream, agent, claim = await live(api, make_agent)
    first, second = picture(320, 180), picture(180, 320)
    stored = await expect_ok(await put(api, agent, claim["claimId"], first), "Thumbnail stored")
    assert (stored["width"], stored["height"]) == (320, 180)
    resp = await get(api, account, stream["id"])
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    body = await resp.read()
    assert body == first
    with Image.open(io.BytesIO(body)) as image:  # it decodes, at the right size
        image.load()
        assert (image.format, image.size) == ("JPEG", (320, 180))
    taken = parsedate_to_datetime(resp.headers["Last-Modified"])
    assert abs(taken.timestamp() - parsedate_to_datetime(resp.headers["Date"]).timestamp()) < 5
    # Five seconds later (without waiting), the next one replaces it.
    await api.db.execute("UPDATE stream_thumbnails SET taken_at = now() - interval '6 seconds'")
    await expect_ok(await put(api, agent, claim["claimId"], second), "Thumbnail stored")
    assert await (await get(api, account, stream["id"])).read() == second
    key = await api.api_key(account, scope="read", streamId=stream["id"])
    resp = await get(api, account, stream["id"], headers={"X-Api-Key": key["apiKey"]})
    assert await resp.read() == second


@pytest.fixture
def short_wait(monkeypatch):
    """A GET waits half a second for a picture instead of 10 s."""
    monkeypatch.setattr(thumbnails, "WAIT_SECONDS", 0.5)


def beat_of(claim, stream, ingest=None):
    """A heartbeat entry of the claim, with the ingest's facts when given."""
    entry = {"claimId": claim["claimId"], "streamKey": stream["streamKey"]}
    if ingest is not None:
        entry["health"] = {"ingestUrl": "rtmp://edge.example/live", "ingest": ingest}
    return entry


async def test_no_picture_answers_1000(api, make_agent, expect_ok, expect_error, case, short_wait):
    account, stream, agent, claim = await live(api, make_agent)
    with case("live, no picture yet (or no video)"):
        error = await expect_error(await get(api, account, stream["id"]), 1000, 404)
        assert "15 s" in error["message"]
    await expect_ok(await put(api, agent, claim["claimId"], picture()), "Thumbnail stored")
    with case("older than 15 s"):
        await api.db.execute("UPDATE stream_thumbnails SET taken_at = now() - interval '16 s'")
        await expect_error(await get(api, account, stream["id"]), 1000, 404)
    with case("not live"):
        await api.db.execute("UPDATE stream_thumbnails SET taken_at = now()")
        await expect_ok(await agent.release(claim["claimId"]), "Claim released")
        error = await expect_error(await get(api, account, stream["id"]), 1000, 404)
        assert "not live" in error["message"]
    with case("live again: the last broadcast's picture is not this one's"):
        await agent.claimed(stream["streamKey"])
        await expect_error(await get(api, account, stream["id"]), 1000, 404)
    with case("someone else's stream"):
        stranger = await api.account()
        await expect_error(await get(api, stranger, stream["id"]), 1000, 404)


async def test_a_get_makes_the_picture_wanted_for_a_minute(api, make_agent, expect_ok, short_wait):
    account, stream, agent, claim = await live(api, make_agent)
    assert claim["thumbnailWanted"] is False  # nobody has looked
    [answer] = await agent.beat([beat_of(claim, stream)])
    assert answer["thumbnailWanted"] is False
    await get(api, account, stream["id"])  # no picture yet: 1000 after the wait
    [answer] = await agent.beat([beat_of(claim, stream)])
    assert answer["thumbnailWanted"] is True
    until = await api.db.fetchval("SELECT wanted_until - now() FROM thumbnail_wanted")
    assert 55 < until.total_seconds() <= 60
    # A stream that comes back live while someone looks is wanted from its claim on.
    await expect_ok(await agent.release(claim["claimId"]), "Claim released")
    claim = await agent.claimed(stream["streamKey"])
    assert claim["thumbnailWanted"] is True
    # A minute without a GET: no more pictures.
    await api.db.execute("UPDATE thumbnail_wanted SET wanted_until = now() - interval '1 s'")
    [answer] = await agent.beat([beat_of(claim, stream)])
    assert answer["thumbnailWanted"] is False
    # Another stream's GET wants only that stream's pictures.
    other = await api.stream(account)
    other_claim = await agent.claimed(other["streamKey"])
    await get(api, account, other["id"])
    answers = await agent.beat([beat_of(claim, stream), beat_of(other_claim, other)])
    assert [a["thumbnailWanted"] for a in answers] == [False, True]


async def test_a_get_waits_for_the_picture_it_asked_for(api, make_agent, expect_ok, monkeypatch):
    monkeypatch.setattr(thumbnails, "WAIT_SECONDS", 60.0)
    account, stream, agent, claim = await live(api, make_agent)
    waiting = asyncio.ensure_future(get(api, account, stream["id"]))
    # The agent hears of it at its next heartbeat, then uploads a picture.
    async with asyncio.timeout(30):
        while not (await agent.beat([beat_of(claim, stream)]))[0]["thumbnailWanted"]:
            await asyncio.sleep(0.05)
    assert not waiting.done()
    jpeg = picture()
    await expect_ok(await put(api, agent, claim["claimId"], jpeg), "Thumbnail stored")
    async with asyncio.timeout(30):
        resp = await waiting
    assert resp.status == 200 and await resp.read() == jpeg


@pytest.mark.parametrize("ingest", [{"videoCodec": None, "audioCodec": "aac"}, None])
async def test_no_video_or_no_picture_coming(api, make_agent, expect_error, monkeypatch, ingest):
    """Audio only (the agent's last heartbeat said so): 1000 at once, not after the wait.
    Video, but no picture comes (an agent with pictures off): 1000 after the wait."""
    monkeypatch.setattr(thumbnails, "WAIT_SECONDS", 3600.0 if ingest else 0.5)
    account, stream, agent, claim = await live(api, make_agent)
    await agent.beat([beat_of(claim, stream, ingest or {"videoCodec": "h264"})])
    async with asyncio.timeout(30):  # not an hour
        error = await expect_error(await get(api, account, stream["id"]), 1000, 404)
    assert ("no video" if ingest else "15 s") in error["message"]


async def test_bad_uploads_are_refused_and_store_nothing(api, make_agent, expect_error, case):
    account, _stream, agent, claim = await live(api, make_agent)
    claim_id = claim["claimId"]
    big = picture(320, 320, quality=100) * 20
    assert len(big) > 256 * 1024
    for name, data, headers, code, status in [
        ("JSON content type", picture(), {"Content-Type": "application/json"}, 1002, 400),
        ("no content type", picture(), {"Content-Type": "application/octet-stream"}, 1002, 400),
        ("a PNG", picture(kind="PNG"), JPEG, 1005, 400),
        ("FF D8 then garbage", b"\xff\xd8" + b"\x00" * 100, JPEG, 1005, 400),
        ("empty", b"", JPEG, 1005, 400),
        ("too wide", picture(400, 200), JPEG, 1005, 400),
        ("too tall", picture(100, 321), JPEG, 1005, 400),
        ("over 256 KiB", b"\xff\xd8" + big, JPEG, 1005, 413),
    ]:
        with case(name):
            await expect_error(await put(api, agent, claim_id, data, headers), code, status)

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(40):
            yield b"\xff\xd8" + b"\x00" * 8190

    with case("over 256 KiB, chunked"):
        await expect_error(await put(api, agent, claim_id, chunks()), 1005, 413)
    with case("a user token"):
        resp = await api.client.put(
            f"/agents/claims/{claim_id}/thumbnail",
            data=picture(),
            headers={**account.headers, **JPEG},
        )
        await expect_error(resp, 1003, 403)
    assert await api.db.fetchval("SELECT count(*) FROM stream_thumbnails") == 0


async def test_only_the_claim_s_agent_while_live_and_not_too_often(
    api, make_agent, expect_ok, expect_error, case
):
    account, stream, agent, claim = await live(api, make_agent)
    other = await make_agent()
    with case("another agent's claim"):
        await expect_error(await put(api, other, claim["claimId"], picture()), 1000, 404)
    with case("an unknown claim"):
        await expect_error(
            await put(api, agent, "11111111-1111-4111-8111-111111111111", picture()), 1000, 404
        )
        await expect_error(await put(api, agent, "not-a-claim", picture()), 1000, 404)
    await expect_ok(await put(api, agent, claim["claimId"], picture()), "Thumbnail stored")
    with case("too soon"):
        resp = await put(api, agent, claim["claimId"], picture(160, 90))
        error = await expect_error(resp, 1010, 429)
        assert resp.headers["Retry-After"] == "5"
        assert error["details"]["retryAfter"] == 5
        with Image.open(io.BytesIO(await (await get(api, account, stream["id"])).read())) as img:
            assert img.size == (320, 180)  # the first one stays
    with case("an expired claim"):
        await api.db.execute("UPDATE stream_claims SET expires_at = now() - interval '1 s'")
        await api.db.execute("UPDATE stream_thumbnails SET taken_at = now() - interval '6 s'")
        await expect_error(await put(api, agent, claim["claimId"], picture()), 1000, 404)
