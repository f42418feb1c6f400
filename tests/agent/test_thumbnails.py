"""Thumbnails: the relay's newest keyframe decoded by PyAV into a JPEG of the right size,
for every codec; the worker's bounds (one picture per interval per stream, a busy stream
skipped, a full queue waits, an unchanged keyframe sent again without decoding, a corrupt
keyframe failing alone). The streams are real encodings (PyAV's FFmpeg) fed to a real
`StreamRelay`; the pictures are read back with Pillow."""

from __future__ import annotations

import asyncio
import io
import threading
from fractions import Fraction

import pytest
from PIL import Image

from agent import thumbnails
from agent.destination import EgressSettings
from agent.relay import StreamRelay
from agent.rtmp.message import Message
from agent.tags import VIDEO, Kind, classify
from agent.thumbnails import Keyframe, Thumbnailer, make_thumbnail, picture_size
from tests.unit.media_samples import FlvSample, picture_flv

RED, BLUE = (220, 20, 20), (20, 20, 220)


def relay_fed(tags: list[FlvSample]) -> StreamRelay:
    """A relay without destinations that got these tags from a publisher."""
    relay = StreamRelay("stream test", [], EgressSettings())
    relay.start()
    relay.feed([Message(t.type_id, 1, t.timestamp, t.body) for t in tags])
    return relay


def keyframe_of(codec: str, width: int, height: int, **options: object) -> Keyframe:
    keyframe = relay_fed(picture_flv(codec, width, height, **options)).latest_keyframe()
    assert keyframe is not None
    return keyframe


def picture(jpeg: bytes) -> Image.Image:
    assert jpeg.startswith(b"\xff\xd8")
    image = Image.open(io.BytesIO(jpeg), formats=["JPEG"])
    image.load()
    return image.convert("RGB")


def near(colour: tuple[int, ...], wanted: tuple[int, int, int], slack: int = 40) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(colour, wanted, strict=True))


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1", "vp9"])
def test_a_keyframe_becomes_a_jpeg_with_the_longest_side_320(codec):
    jpeg = make_thumbnail(keyframe_of(codec, 1280, 720))
    image = picture(jpeg)
    assert image.size == (320, 180)
    # The picture itself, the right way round: red on the left, blue on the right.
    assert near(image.getpixel((40, 120)), RED), image.getpixel((40, 120))
    assert near(image.getpixel((280, 120)), BLUE), image.getpixel((280, 120))
    assert len(jpeg) < 32 * 1024


@pytest.mark.parametrize(
    ("size", "options", "expected"),
    [
        ((1920, 1080), {}, (320, 180)),
        ((720, 1280), {}, (180, 320)),  # portrait (phones)
        ((640, 480), {}, (320, 240)),
        ((160, 120), {}, (160, 120)),  # never enlarged
        ((1440, 1080), {"sample_aspect": (4, 3)}, (320, 180)),  # anamorphic 16:9
    ],
)
def test_the_size_keeps_the_displayed_aspect_ratio(size, options, expected):
    image = picture(make_thumbnail(keyframe_of("h264", *size, **options)))
    assert image.size == expected


def test_picture_size():
    assert picture_size(1280, 720) == (320, 180)
    assert picture_size(1280, 720, Fraction(1)) == (320, 180)
    assert picture_size(720, 576, Fraction(64, 45)) == (320, 180)  # PAL 16:9
    assert picture_size(720, 576, Fraction(16, 15)) == (320, 240)  # PAL 4:3
    assert picture_size(1, 10000) == (1, 320)


def test_a_corrupt_keyframe_raises():
    good = keyframe_of("h264", 640, 360)
    broken = Keyframe(good.message, "h264", good.header, b"\x00\x00\x00\x10" + bytes(range(16)))
    with pytest.raises(Exception):  # noqa: B017 - FFmpeg's error, whichever it is
        make_thumbnail(broken)


def test_each_picture_gives_the_decoders_memory_back(monkeypatch):
    """The worker thread's malloc arena keeps what the decoder freed unless trimmed
    (agent/memory.py): after every picture, made or failed."""
    threads: list[str] = []
    monkeypatch.setattr(
        thumbnails, "release_free_memory", lambda: threads.append(threading.current_thread().name)
    )
    good = keyframe_of("h264", 640, 360)
    broken = Keyframe(good.message, "h264", good.header, b"\x00\x00\x00\x10" + bytes(16))

    async def both() -> None:
        made: list[bytes] = []

        async def upload(claim_id: str, jpeg: bytes) -> None:
            made.append(jpeg)

        thumbnailer = Thumbnailer(upload)
        for claim_id, keyframe in (("a", good), ("b", broken)):
            relay = type("Relay", (), {"latest_keyframe": lambda self, k=keyframe: k})()
            thumbnailer.tick([(claim_id, relay)], 0.0)
            while thumbnailer.pending:
                await asyncio.sleep(0.01)
        await thumbnailer.close()
        assert len(made) == 1 and thumbnailer.failed == 1

    asyncio.run(both())
    assert len(threads) == 2 and all(name.startswith("thumbnail") for name in threads), threads


def test_the_relay_keeps_the_newest_keyframe_of_the_primary_track():
    tags = picture_flv("h264", 640, 360, frames=12, gop=5)
    relay = relay_fed(tags)
    keyframe = relay.latest_keyframe()
    assert keyframe is not None
    keyframes = [
        t for t in tags if t.type_id == VIDEO and classify(VIDEO, t.body).kind is Kind.KEYFRAME
    ]
    assert len(keyframes) == 3
    assert keyframe.message.body == keyframes[-1].body  # frame 10, not frame 0
    assert keyframe.codec == "h264"
    assert keyframe.frame == keyframes[-1].body[5:]  # AVC: after the 5-byte header
    header = next(t for t in tags if classify(t.type_id, t.body).kind is Kind.SEQUENCE_HEADER)
    assert keyframe.header == header.body[5:]
    # The bar has moved by frame 10: the picture is of the newest keyframe.
    newest, first = (
        picture(make_thumbnail(keyframe)),
        picture(make_thumbnail(keyframe_of("h264", 640, 360, frames=1))),
    )
    assert newest.tobytes() != first.tobytes()


def test_a_new_sequence_header_forgets_the_keyframe_until_the_next():
    relay = relay_fed(picture_flv("h264", 640, 360))
    assert relay.latest_keyframe() is not None
    other = picture_flv("h264", 320, 240)
    header = next(t for t in other if classify(t.type_id, t.body).kind is Kind.SEQUENCE_HEADER)
    relay.feed([Message(VIDEO, 1, 1000, header.body)])
    assert relay.latest_keyframe() is None  # would not decode with the new header
    key = next(t for t in other if classify(t.type_id, t.body).kind is Kind.KEYFRAME)
    relay.feed([Message(VIDEO, 1, 1033, key.body)])
    keyframe = relay.latest_keyframe()
    assert keyframe is not None
    assert picture(make_thumbnail(keyframe)).size == (320, 240)


def test_no_video_no_keyframe():
    relay = relay_fed([])
    assert relay.latest_keyframe() is None
    relay.feed([Message(8, 1, 0, b"\xaf\x00\x11\x90"), Message(8, 1, 21, b"\xaf\x01" + bytes(20))])
    assert relay.latest_keyframe() is None


class Uploads:
    """What the thumbnailer sent, by claim id (the upload it is given)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail
        self.hang: asyncio.Event | None = None  # set: uploads wait for it
        self.arrived = asyncio.Event()

    async def __call__(self, claim_id: str, jpeg: bytes) -> bool:
        if self.hang is not None:
            await self.hang.wait()
        self.arrived.set()
        if self.fail:
            raise OSError("rig unreachable")
        self.sent.append((claim_id, jpeg))
        return True

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.sent) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_one_picture_per_interval_per_stream_and_an_unchanged_keyframe_is_not_decoded():
    uploads = Uploads()
    thumbnailer = Thumbnailer(uploads, interval=10)
    relay = relay_fed(picture_flv("h264", 1280, 720))
    try:
        thumbnailer.tick([("claim-a", relay)], now=100.0)
        await uploads.wait(1)
        assert picture(uploads.sent[0][1]).size == (320, 180)
        assert thumbnailer.made == 1
        for now in (101.0, 105.0, 109.9):  # within the interval: nothing
            thumbnailer.tick([("claim-a", relay)], now=now)
        await asyncio.sleep(0.05)
        assert len(uploads.sent) == 1
        # The keyframe has not changed: the same picture again, not decoded again.
        thumbnailer.tick([("claim-a", relay)], now=110.0)
        await uploads.wait(2)
        assert uploads.sent[1] == uploads.sent[0]
        assert thumbnailer.made == 1
        # A new keyframe: a new picture.
        later = picture_flv("h264", 1280, 720, frames=4, gop=3)
        relay.feed([Message(t.type_id, 1, 5000 + t.timestamp, t.body) for t in later])
        thumbnailer.tick([("claim-a", relay)], now=120.0)
        await uploads.wait(3)
        assert thumbnailer.made == 2
        assert uploads.sent[2][1] != uploads.sent[0][1]
    finally:
        await thumbnailer.close()


async def test_a_corrupt_keyframe_fails_its_picture_only():
    uploads = Uploads()
    thumbnailer = Thumbnailer(uploads, interval=10)
    good = relay_fed(picture_flv("h264", 640, 360))
    tags = picture_flv("h264", 640, 360)
    bad = relay_fed(tags)
    key = next(t for t in tags if classify(t.type_id, t.body).kind is Kind.KEYFRAME)
    # The same AVC header, zeros for its NAL units: a keyframe that does not decode.
    bad.feed([Message(VIDEO, 1, 1000, key.body[:5] + bytes(len(key.body) - 5))])
    try:
        thumbnailer.tick([("bad", bad), ("good", good)], now=0.0)
        await uploads.wait(1)
        async with asyncio.timeout(10):
            while thumbnailer.failed < 1:
                await asyncio.sleep(0.01)
        assert [claim for claim, _ in uploads.sent] == ["good"]
        # The bad stream is not tried again before the interval, nor for the same keyframe.
        thumbnailer.tick([("bad", bad), ("good", good)], now=20.0)
        await uploads.wait(2)
        await asyncio.sleep(0.05)
        assert thumbnailer.failed == 1
        assert [claim for claim, _ in uploads.sent] == ["good", "good"]
    finally:
        await thumbnailer.close()


async def test_the_queue_is_bounded_and_every_stream_gets_its_turn():
    uploads = Uploads()
    thumbnailer = Thumbnailer(uploads, interval=10, max_pending=2)
    relays = [(f"claim-{n}", relay_fed(picture_flv("h264", 640, 360))) for n in range(5)]
    try:
        thumbnailer.tick(relays, now=0.0)  # two start; the other three wait
        assert thumbnailer.pending == 2
        await uploads.wait(2)
        await asyncio.sleep(0.05)
        assert len(uploads.sent) == 2  # a tick alone does not start the others
        thumbnailer.tick(relays, now=1.0)  # the least recently pictured first
        assert thumbnailer.pending == 2
        await uploads.wait(4)
        thumbnailer.tick(relays, now=2.0)
        await uploads.wait(5)
        assert sorted(claim for claim, _ in uploads.sent) == [c for c, _ in relays]
    finally:
        await thumbnailer.close()


async def test_a_finished_picture_starts_the_next_due_one_without_waiting_for_a_tick():
    # Two pictures a tick (a second) would picture a worker's 40 streams every 20 s, past
    # the 15 s rig serves a picture for: the thread takes the next one as soon as it is free.
    uploads = Uploads()
    thumbnailer = Thumbnailer(uploads, interval=10, max_pending=2, tick=3600)  # one tick
    relays = [(f"claim-{n}", relay_fed(picture_flv("h264", 640, 360))) for n in range(7)]
    most = 0

    def live() -> list:
        nonlocal most
        most = max(most, thumbnailer.pending)
        return relays

    task = asyncio.create_task(thumbnailer.run(live))
    try:
        await uploads.wait(7)
        assert sorted(claim for claim, _ in uploads.sent) == sorted(c for c, _ in relays)
        assert thumbnailer.made == 7
        assert most <= 2  # never more than max_pending queued
        await asyncio.sleep(0.05)
        assert len(uploads.sent) == 7  # each once: the others are not due for 10 s
    finally:
        task.cancel()
        await thumbnailer.close()


async def test_a_stream_still_uploading_is_skipped_and_a_failed_upload_is_not_fatal():
    uploads = Uploads(fail=True)
    thumbnailer = Thumbnailer(uploads, interval=10)
    relay = relay_fed(picture_flv("h264", 640, 360))
    try:
        thumbnailer.tick([("claim-a", relay)], now=0.0)
        async with asyncio.timeout(10):
            while thumbnailer.upload_failures < 1:
                await asyncio.sleep(0.01)
        uploads.fail = False
        thumbnailer.tick([("claim-a", relay)], now=10.0)  # the same picture, sent again
        await uploads.wait(1)
        # An upload that hangs keeps the stream busy: nothing more is started for it.
        uploads.hang = asyncio.Event()
        thumbnailer.tick([("claim-a", relay)], now=20.0)
        await asyncio.sleep(0.05)
        thumbnailer.tick([("claim-a", relay)], now=40.0)
        await asyncio.sleep(0.05)
        uploads.hang.set()
        await uploads.wait(2)
        await asyncio.sleep(0.05)
        assert len(uploads.sent) == 2  # the one that hung, nothing started meanwhile
        thumbnailer.tick([("claim-a", relay)], now=50.0)
        await uploads.wait(3)
    finally:
        await thumbnailer.close()


async def test_a_stream_that_ended_is_forgotten():
    uploads = Uploads()
    thumbnailer = Thumbnailer(uploads, interval=10)
    relay = relay_fed(picture_flv("h264", 640, 360))
    try:
        thumbnailer.tick([("claim-a", relay)], now=0.0)
        await uploads.wait(1)
        thumbnailer.tick([], now=1.0)
        assert thumbnailer._streams == {}
        # The same relay under a new claim (a new broadcast) gets a picture at once.
        thumbnailer.tick([("claim-b", relay)], now=2.0)
        await uploads.wait(2)
        assert uploads.sent[1][0] == "claim-b"
    finally:
        await thumbnailer.close()
