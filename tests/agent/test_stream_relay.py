"""The stream relay over real sockets: every message byte for byte to every destination,
what a (re)connecting destination starts with, slow and refusing destinations, the end,
and the media engine's probes. The publisher side is the relay's own interface (`feed`,
`end`); the destinations are RTMP servers in this event loop (tests/agent/receiver.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import pytest

from agent.destination import Chunked, Destination, DestinationState, EgressSettings
from agent.egress import RtmpPublish, parse_target
from agent.media_queue import MediaMessage
from agent.probe import Prober
from agent.relay import StreamRelay
from agent.rtmp import amf0
from agent.rtmp.message import Message
from agent.tags import AUDIO, DATA, VIDEO, Kind, classify
from tests.unit.media_samples import encoded_flv

from .receiver import Receiver

# The receivers listen on 127.0.0.1: Custom destinations may be private here.
SETTINGS = EgressSettings(
    connect_timeout=3,
    write_timeout=1,
    backoff_initial=0.05,
    backoff_max=0.2,
    allow_private_destinations=True,
)
SET_DATA_FRAME = amf0.encode("@setDataFrame")


def stream_messages(video: str = "libx264", audio: str = "aac") -> list[Message]:
    """A real stream as a publisher sends it: FFmpeg 8's tags as RTMP messages, the
    metadata wrapped in @setDataFrame (as FFmpeg and OBS publish it)."""
    out = []
    for tag in encoded_flv(video, audio).tags:
        body = SET_DATA_FRAME + tag.body if tag.type_id == DATA else tag.body
        out.append(Message(tag.type_id, 1, tag.timestamp, body))
    return out


def recorded(messages: list[Message]) -> list[tuple[int, int, bytes]]:
    return [(m.type_id, m.timestamp, m.payload) for m in messages]


def kind(message: Message) -> Kind:
    return classify(message.type_id, message.payload).kind


def is_configuration(message: Message) -> bool:
    """A track's configuration: sequence header, channel configuration, colorInfo."""
    if message.type_id == DATA:
        return False
    return kind(message) in (Kind.SEQUENCE_HEADER, Kind.CHANNEL_CONFIG, Kind.METADATA)


def destination(n: int, url: str) -> Destination:
    """Destination `n` publishing to a receiver's `url` (server URL, `/`, key)."""
    server, _, key = url.rpartition("/")
    return Destination(n, "Custom", server, key)


def add_destination(relay: StreamRelay, url: str) -> None:
    """rig adds a destination while the stream is live."""
    current = [w.destination for w in relay.workers.values()]
    relay.apply_destinations([*current, destination(len(current) + 1, url)])


async def live(relay: StreamRelay, count: int | None = None) -> None:
    """Until `count` destinations (default: all) are live."""
    want = len(relay.workers) if count is None else count
    async with asyncio.timeout(10):
        while sum(w.state is DestinationState.LIVE for w in relay.workers.values()) < want:
            await asyncio.sleep(0.01)


async def feed(relay: StreamRelay, messages: list[Message], per_read: int = 3) -> None:
    """As reads from a publisher would come: a few messages at a time."""
    for i in range(0, len(messages), per_read):
        relay.feed(messages[i : i + per_read])
        await asyncio.sleep(0)


def relay_of(*urls: str, prober: Prober | None = None, **settings: object) -> StreamRelay:
    egress = dataclasses.replace(SETTINGS, **settings)
    destinations = [destination(n + 1, url) for n, url in enumerate(urls)]
    return StreamRelay("stream test", destinations, egress, prober)


async def test_every_message_reaches_every_destination_unchanged():
    async with Receiver() as first, Receiver() as second:
        relay = relay_of(first.url("a"), second.url("b"))
        relay.start()
        await live(relay)
        messages = stream_messages()
        middle = len(messages) // 2
        at = messages[middle - 1].timestamp  # in place: no track's timestamps step back
        extra = [
            Message(DATA, 1, at, amf0.encode("onCuePoint", {"name": "ad", "time": 0.7})),
            Message(DATA, 1, at, amf0.encode("onTextData", {"text": "hello"})),
            Message(15, 1, at, b"\x00" + amf0.encode("onCaptionInfo", {"x": 1.0})),
            Message(VIDEO, 1, at, b"\x27\x01\x00\x00\x00" + os.urandom(3000)),  # corrupt frame
            Message(VIDEO, 1, at, b"\xff" + os.urandom(3000)),  # not even a header
            Message(VIDEO, 1, at, b"\x10\x00" + os.urandom(10)),  # codec id 0: unknown
            Message(AUDIO, 1, at, b""),  # the "audio silence" message
            Message(DATA, 1, at, SET_DATA_FRAME + amf0.encode("onMetaData", {"second": 1.0})),
        ]
        not_script = Message(DATA, 1, at, b"\x05\x00garbage")  # no handler name
        sent = messages[:middle] + extra + messages[middle:]
        await feed(relay, [*sent, not_script])
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        for receiver in (first, second):
            [publish] = receiver.publishes
            assert publish.messages == recorded(sent)  # same bytes, timestamps, order
            assert publish.unpublished
        # Counted: the unknown video (sent) and the data that is not script data (held
        # back: nginx-rtmp would hang up on it).
        unknown = sum(kind(m) is Kind.UNKNOWN for m in sent)
        assert relay.facts.unclassified == unknown + 1 == 3


async def test_a_new_destination_starts_with_metadata_headers_then_the_newest_keyframe():
    async with Receiver() as early, Receiver() as late:
        relay = relay_of(early.url("a"))
        relay.start()
        await live(relay)
        messages = stream_messages("libx265", "libopus")  # HEVC with colorInfo, Opus
        second_metadata = Message(
            DATA, 1, 900, SET_DATA_FRAME + amf0.encode("onMetaData", {"width": 320.0})
        )
        messages.insert(len(messages) - 5, second_metadata)
        await feed(relay, messages)
        add_destination(relay, late.url("b"))
        await live(relay, 2)
        tail = Message(AUDIO, 1, 2000, messages[-1].payload)
        await late.wait_for(lambda: late.publishes and len(late.publishes[0].messages) > 0)
        relay.feed([tail])
        relay.end("unpublished")
        assert await relay.wait_closed(2)

        assert early.publishes[0].messages == recorded([*messages, tail])
        got = late.publishes[0].messages
        # First the latest onMetaData (as sent), then each track's configuration
        # (HEVC sequence start, Opus sequence start and channel configuration, colorInfo),
        # in the order the publisher sent them, then media from the newest keyframe.
        configuration = [m for m in messages if is_configuration(m)]
        last_key = max(i for i, m in enumerate(messages) if kind(m) is Kind.KEYFRAME)
        after = [m for m in messages[last_key:] if not is_configuration(m) and m.type_id != DATA]
        want = [second_metadata, *configuration, *after, tail]
        assert got == recorded(want)
        assert got[len(configuration) + 1][0] == VIDEO  # a keyframe, original timestamp
        assert kind(want[len(configuration) + 1]) is Kind.KEYFRAME


async def test_a_first_connection_gets_the_stream_from_its_start():
    """The publisher's first seconds arrive in a burst (ffmpeg -re sends what it read
    while the claim was pending) before the destination accepted: nothing is lost."""
    async with Receiver() as reserved:
        port = reserved.port  # free now; the destination is not up yet
    relay = relay_of(f"rtmp://127.0.0.1:{port}/live2/a")
    relay.start()
    messages = stream_messages()
    assert sum(kind(m) is Kind.KEYFRAME for m in messages) >= 2  # more than one GOP
    relay.feed(messages)  # all of it at once
    await asyncio.sleep(0.1)  # the destination's first attempt fails meanwhile
    async with Receiver(port=port) as receiver:
        await live(relay)
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        assert relay.workers[1].reconnects >= 1  # it was down when the burst came
        # Exactly what the publisher sent, from its first message.
        assert receiver.publishes[0].messages == recorded(messages)


async def test_a_first_connection_gets_the_start_of_a_stream_with_offset_timestamps():
    """ffmpeg -output_ts_offset 20000 (or -copyts): onMetaData and the sequence headers at
    0, the media from 20 000 s on. The start is a few seconds of media, not 20 000 s:
    it is kept for the first connection all the same (it was dropped at once)."""
    async with Receiver() as reserved:
        port = reserved.port
    relay = relay_of(f"rtmp://127.0.0.1:{port}/live2/a")
    relay.start()
    offset = 20_000_000
    messages = [
        m
        if m.type_id == DATA or is_configuration(m)
        else Message(m.type_id, m.stream_id, m.timestamp + offset, m.payload)
        for m in stream_messages()
    ]
    assert sum(kind(m) is Kind.KEYFRAME for m in messages) >= 2
    relay.feed(messages)
    await asyncio.sleep(0.1)  # the destination's first attempt fails meanwhile
    async with Receiver(port=port) as receiver:
        await live(relay)
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        assert relay.workers[1].reconnects >= 1
        assert receiver.publishes[0].messages == recorded(messages)


async def test_a_destination_changed_while_live_starts_at_the_newest_keyframe():
    """Its replacement joins a live stream, as an added destination does: not the stream
    from its start, which the relay still keeps for a destination that never connected
    (a streamer fixing a mistyped server URL sent the service 10 s of old media)."""
    async with Receiver() as reserved:
        nothing = reserved.port  # free now: a mistyped destination, refused
    async with Receiver() as first, Receiver() as fixed:
        relay = relay_of(first.url("a"), f"rtmp://127.0.0.1:{nothing}/live2/b")
        relay.start()
        await live(relay, 1)
        messages = stream_messages()
        keys = [m for m in messages if kind(m) is Kind.KEYFRAME]
        assert len(keys) >= 2
        await feed(relay, messages)
        relay.apply_destinations([relay.workers[1].destination, destination(2, fixed.url("b"))])
        await live(relay)
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        got = fixed.publishes[0].messages
        video = [m for m in got if m[0] == VIDEO]
        assert (VIDEO, keys[0].timestamp, keys[0].payload) not in got
        assert (VIDEO, keys[-1].timestamp, keys[-1].payload) in got
        assert len(got) < len(messages) // 2
        assert first.publishes[0].messages == recorded(messages)  # the other: untouched
        assert video  # and it did get the stream


async def test_a_new_sequence_header_replaces_the_old_one_for_new_destinations():
    async with Receiver() as receiver:
        relay = relay_of()
        relay.start()
        messages = stream_messages()
        header = next(m for m in messages if m.type_id == VIDEO and is_configuration(m))
        keyframe = next(m for m in messages if kind(m) is Kind.KEYFRAME)
        await feed(relay, messages)
        new_header = Message(VIDEO, 1, 1600, header.payload + b"\x00")  # changed configuration
        new_key = Message(VIDEO, 1, 1600, keyframe.payload)
        relay.feed([new_header, new_key])
        add_destination(relay, receiver.url("a"))
        await live(relay)
        await receiver.wait_for(
            lambda: (VIDEO, 1600, new_key.payload) in receiver.publishes[0].messages
        )
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        got = receiver.publishes[0].messages
        assert (VIDEO, 1600, new_header.payload) in got
        assert (VIDEO, header.timestamp, header.payload) not in got
        assert got[-1] == (VIDEO, 1600, new_key.payload)


async def test_audio_first_then_video_and_audio_only_destinations():
    async with Receiver() as from_start, Receiver() as late:
        relay = relay_of(from_start.url("a"))
        relay.start()
        await live(relay)
        messages = stream_messages()
        audio = [m for m in messages if m.type_id == AUDIO]
        video = [m for m in messages if m.type_id == VIDEO]
        # A GStreamer-style start: audio before any video.
        await feed(relay, audio[:20])
        # A destination joining an audio-only stream starts at once, from the start.
        add_destination(relay, late.url("b"))
        await live(relay, 2)
        await late.wait_for(lambda: late.publishes and len(late.publishes[0].messages) >= 20)
        assert late.publishes[0].messages == recorded(audio[:20])
        rest = video + audio[20:]
        await feed(relay, rest)
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        assert from_start.publishes[0].messages == recorded(audio[:20] + rest)
        assert late.publishes[0].messages == recorded(audio[:20] + rest)


async def test_a_destination_that_drops_resumes_at_the_newest_keyframe():
    async with Receiver() as receiver:
        relay = relay_of(receiver.url("a"))
        relay.start()
        await live(relay)
        messages = stream_messages()
        keys = [i for i, m in enumerate(messages) if kind(m) is Kind.KEYFRAME]
        cut = keys[1] + 5  # within the second GOP
        await feed(relay, messages[:cut])
        await receiver.wait_for(lambda: len(receiver.publishes[0].messages) == cut)
        receiver.drop()  # the destination crashes
        worker = relay.workers[1]
        async with asyncio.timeout(5):
            while worker.state is DestinationState.LIVE:
                await asyncio.sleep(0.01)
        assert worker.state in (DestinationState.BACKOFF, DestinationState.CONNECTING)
        assert worker.last_error
        await live(relay)
        await feed(relay, messages[cut:])
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        assert worker.reconnects == 1
        assert worker.last_error is None  # live again
        first, second = receiver.publishes
        assert first.messages == recorded(messages[:cut])
        configuration = [m for m in messages if is_configuration(m) or m.type_id == DATA]
        resumed = [m for m in messages[keys[1] :] if m not in configuration]
        assert second.messages == recorded(configuration + resumed)  # original timestamps


async def test_a_destination_refusing_a_large_chunk_size_gets_the_usual_one():
    async with Receiver(max_chunk_size=4096) as strict:
        relay = relay_of(strict.url("a"))
        relay.start()
        await live(relay)
        worker = relay.workers[1]
        assert worker.reconnects == 1  # refused 65536 once, took 4096
        messages = stream_messages()
        await feed(relay, messages)
        relay.end("unpublished")
        assert await relay.wait_closed(2)
        assert "set chunk size 65536" in strict.connections[0].error
        assert strict.publishes[-1].messages == recorded(messages)


async def test_a_stalled_destination_loses_whole_gops_and_never_holds_the_others():
    async with Receiver() as healthy, Receiver(stall=True) as stalled:
        # A long backoff: lastError is cleared once the destination is live again, which
        # the tests' 50 ms backoff could do before the failure is looked at.
        relay = relay_of(
            healthy.url("a"),
            stalled.url("b"),
            queue_bytes=256 * 1024,
            backoff_initial=3,
            backoff_max=3,
        )
        relay.start()
        await live(relay)
        base = stream_messages()
        keyframe = next(m.payload for m in base if kind(m) is Kind.KEYFRAME)
        # 10 s of 8 Mbit/s video, a keyframe every 0.5 s: far more than the stalled
        # destination's socket buffers and queue hold.
        inter = b"\x27\x01\x00\x00\x00" + bytes(30_000)
        heavy = [Message(VIDEO, 1, t * 33, keyframe if t % 15 == 0 else inter) for t in range(300)]
        started = time.monotonic()
        for message in heavy:
            relay.feed([message])  # never blocks
            await asyncio.sleep(0.001)
        assert time.monotonic() - started < 2.0
        await healthy.wait_for(lambda: len(healthy.publishes[0].messages) == len(heavy))
        assert healthy.publishes[0].messages == recorded(heavy)
        slow = relay.workers[2]
        assert slow.dropped_packets > 0
        async with asyncio.timeout(5):  # the write deadline (1 s) fails it
            while slow.reconnects == 0:
                await asyncio.sleep(0.05)
        assert "stopped reading (write timed out)" in (slow.last_error or "")
        relay.end("unpublished")
        assert await relay.wait_closed(3)


async def test_the_end_closes_every_destination_within_a_second():
    async with Receiver() as receiver:
        closed_port = Receiver()
        async with closed_port:
            port = closed_port.port
        relay = relay_of(receiver.url("a"), f"rtmp://127.0.0.1:{port}/app/key", "bad url")
        relay.start()
        await live(relay, 1)
        await feed(relay, stream_messages()[:20])
        await asyncio.sleep(0.1)  # the refused one is in backoff now
        assert relay.workers[2].state is DestinationState.BACKOFF
        assert relay.workers[3].state is DestinationState.FAILED
        ended = time.monotonic()
        relay.end("kicked")
        assert await relay.wait_closed(1.0)
        assert time.monotonic() - ended < 1.0
        assert receiver.publishes[0].unpublished
        await receiver.wait_for(lambda: receiver.connections[0].closed_at is not None, 1.0)
        assert all(w.done for w in relay.workers.values())
        assert relay.workers[1].state is DestinationState.OFF


async def test_a_custom_destination_at_a_private_address_fails_at_once_with_a_reason():
    """An address this agent may not connect to (RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS
    off; a literal one: rig let it through with its own setting on) never will be: the
    destination is failed with the reason, not retried for the whole broadcast. A name
    is retried: what it resolves to may change. Services' own URLs are not checked."""
    async with Receiver() as receiver:
        server, _, key = receiver.url("a").rpartition("/")
        destinations = [
            Destination(1, "YouTube", server, key),  # (a service: any address)
            Destination(2, "Custom", "rtmp://10.1.2.3/app", "key"),
            Destination(3, "Custom", "rtmp://[fd00::1]:1935/app", "key"),
            Destination(4, "Custom", "rtmp://localhost:1/app", "key"),
        ]
        settings = dataclasses.replace(SETTINGS, allow_private_destinations=False)
        relay = StreamRelay("stream test", destinations, settings)
        relay.start()
        await live(relay, 1)
        for n, kind in ((2, "private"), (3, "unique-local")):
            worker = relay.workers[n]
            assert worker.state is DestinationState.FAILED
            assert worker.reconnects == 0
            assert worker.last_error == (
                f"the destination's address is not public ({kind}): this agent does not"
                " connect to such addresses (RIG_AGENT_ALLOW_PRIVATE_DESTINATIONS)"
            )
        async with asyncio.timeout(3):
            while relay.workers[4].reconnects == 0:
                await asyncio.sleep(0.02)
        assert relay.workers[4].state is not DestinationState.FAILED
        last_error = relay.workers[4].last_error or ""
        assert last_error.endswith("the destination's address is not public")
        relay.end("unpublished")
        assert await relay.wait_closed(3)


async def test_a_batch_is_chunked_once_per_chunk_size_and_stream_id():
    def connection(key: tuple[int, int]) -> RtmpPublish:
        """A publish (never connected) with the chunk key Chunked looks at, as set once
        a destination accepted it. A real one: compiled, Chunked takes nothing else."""
        publish = RtmpPublish(parse_target("rtmp://127.0.0.1/live", "key"), key[1], 1.0)
        publish.chunk_key = key
        return publish

    batch = Chunked([MediaMessage(VIDEO, 0, b"\x17\x01" + bytes(5000), Kind.KEYFRAME)])
    a, b, c = connection((1, 65536)), connection((1, 65536)), connection((1, 4096))
    assert batch.for_connection(a) is batch.for_connection(b)
    assert batch.for_connection(c) != batch.for_connection(a)


@pytest.mark.parametrize(
    ("video", "audio", "facts"),
    [
        ("libx264", "aac", ("h264", "High", "aac")),
        ("libx265", "libopus", ("hevc", "Main", "opus")),
        ("libsvtav1", "aac", ("av1", "Main", "aac")),
        ("libvpx-vp9", "libopus", ("vp9", "Profile 0", "opus")),
    ],
)
async def test_the_media_engine_probes_each_new_sequence_header(video, audio, facts):
    prober = Prober()
    try:
        relay = relay_of(prober=prober)
        relay.start()
        await feed(relay, stream_messages(video, audio))
        async with asyncio.timeout(10):
            while True:
                ingest = relay.ingest_facts()
                if ingest["width"] and ingest["audioSampleRate"]:
                    break
                await asyncio.sleep(0.02)
        codec, profile, audio_codec = facts
        assert ingest["videoCodec"] == codec
        assert (ingest["width"], ingest["height"]) == (320, 240)
        assert ingest["pixelFormat"] == "yuv420p"
        assert ingest["profile"] == profile
        assert ingest["audioCodec"] == audio_codec
        assert ingest["audioSampleRate"] == 48000  # not the FLV header's 44 kHz
        assert ingest["audioChannels"] == 2
        assert ingest["unclassifiedMessages"] == 0
        relay.end("unpublished")
    finally:
        prober.close()


async def test_measured_frame_rate_and_keyframe_interval():
    relay = relay_of()
    relay.start()
    await feed(relay, stream_messages())  # 30 fps, a keyframe every 30 frames
    facts = relay.ingest_facts()
    assert facts["frameRate"] == pytest.approx(30, abs=0.5)
    assert facts["keyframeInterval"] == pytest.approx(1.0, abs=0.05)
    assert relay.ingest_facts()["frameRate"] == 0  # nothing since the last report
    relay.end("unpublished")
