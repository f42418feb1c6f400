"""The disconnect slate: encoded to the ingest's facts, decodable, loopable, cached.

Every check decodes what would be relayed: the slate's messages are wrapped into an FLV
file (an RTMP media message body is an FLV tag body) and read back with PyAV's FLV
demuxer and decoders, as an FFmpeg receiver would.
"""

import contextlib
import functools
import io
import itertools
import math
import os
import threading
from fractions import Fraction

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from agent.flv import FLV_HEADER, flv_tag
from agent.media_facts import AudioFacts, VideoFacts
from agent.rtmp.message import Message
from agent.slate import (
    GOP_SECONDS,
    Slate,
    SlateCache,
    SlateError,
    SlateLoop,
    encode_slate,
    render_card,
)
from agent.tags import Kind, classify
from agent.timeline import Timeline

AUDIO, VIDEO = 8, 9


def kind(message: Message) -> Kind:
    """What the relay's classifier calls a slate message."""
    return classify(message.type_id, message.payload).kind


SMALL = VideoFacts("h264", 320, 180, Fraction(25), "yuv420p", "High", "3.0")
AAC = AudioFacts("aac", 44100, 1, "mono", "LC")


@functools.cache
def slate_for(video: VideoFacts | None, audio: AudioFacts | None) -> Slate:
    return encode_slate(video, audio)


def play(slate: Slate, seconds: float) -> list[Message]:
    """What holding for `seconds` sends, in one call (the catch-up path, unbounded)."""
    return SlateLoop(slate, start=100.0, max_catch_up=math.inf).due(100.0 + seconds)


def flv_of(messages: list[Message]) -> bytes:
    return FLV_HEADER + b"".join(flv_tag(m.type_id, m.timestamp, m.payload) for m in messages)


def decode(messages: list[Message]) -> dict[str, list]:
    """Every frame PyAV decodes from the messages, by stream type (decoding errors fail),
    and each stream's decoder (`contexts`: what it says of profile, level...)."""
    got: dict[str, list] = {"video": [], "audio": []}
    with av.open(io.BytesIO(flv_of(messages)), "r", format="flv") as container:
        for packet in container.demux():
            got[packet.stream.type] += packet.decode()  # flushes at the end (dts None)
        got["contexts"] = [s.codec_context for s in container.streams]
        got["codecs"] = [(c.type, c.codec.canonical_name) for c in got["contexts"]]
    return got


def first_byte_nibble(body: bytes) -> int:
    return body[0] >> 4


# --- matching the ingest --------------------------------------------------------------


def test_h264_aac_slate_decodes_at_the_ingest_resolution_rate_and_channels():
    slate = slate_for(SMALL, AAC)
    messages = play(slate, 2 * GOP_SECONDS + 0.5)  # more than two loops of the GOP
    got = decode(messages)
    assert got["codecs"] == [("video", "h264"), ("audio", "aac")]
    video = [m for m in messages if m.type_id == VIDEO and m.payload[1] == 1]  # AVC NALUs
    assert len(got["video"]) == len(video) == 2 * GOP_SECONDS * 25 + 13
    assert {(f.width, f.height) for f in got["video"]} == {(320, 180)}
    assert [round(float(f.time), 3) for f in got["video"][:3]] == [0.0, 0.04, 0.08]
    card = render_card(320, 180)
    assert all(psnr(got["video"][i].to_image(), card) > 35 for i in (0, 49, 50, 112))
    assert got["audio"] and {(f.sample_rate, f.layout.nb_channels) for f in got["audio"]} == {
        (44100, 1)
    }
    assert slate.notes == []


def test_the_sequence_headers_are_legacy_flv_for_avc_and_aac():
    slate = slate_for(SMALL, AAC)
    (avc,) = slate.video.headers
    (asc,) = slate.audio.headers
    assert avc[0] == 0x17 and avc[1] == 0  # keyframe | AVC, AVC sequence header
    assert avc[5] == 1  # AVCDecoderConfigurationRecord version 1
    assert first_byte_nibble(asc) == 10 and asc[1] == 0  # AAC, AAC sequence header
    assert [m.payload for m in slate.headers()] == [avc, asc]
    assert slate.video.frames[0][0] == 0x17 and slate.video.frames[1][0] == 0x27  # key, inter


@pytest.mark.parametrize(
    ("profile", "level", "pixel_format", "expected"),
    [
        ("Constrained Baseline", "3.0", "yuv420p", {"Baseline", "Constrained Baseline"}),
        ("Main", "3.1", "yuv420p", {"Main"}),
        ("High", "4.0", "yuv420p", {"High"}),
        ("High 10", "4.1", "yuv420p10le", {"High 10"}),
    ],
)
def test_h264_profile_level_and_pixel_format_follow_the_ingest(
    profile, level, pixel_format, expected
):
    facts = VideoFacts("h264", 192, 108, Fraction(30), pixel_format, profile, level)
    slate = slate_for(facts, None)
    assert slate.video.note is None
    got = decode(play(slate, 0.2))
    (decoder,) = got["contexts"]
    assert decoder.profile in expected
    assert decoder.level == round(float(level) * 10)  # H.264 level_idc
    assert decoder.pix_fmt == pixel_format == got["video"][0].format.name
    assert slate.audio is None and got["audio"] == []


@pytest.mark.parametrize(
    ("video", "audio", "fourcc", "audio_fourcc"),
    [
        (VideoFacts("hevc", 320, 180, Fraction(30), "yuv420p"), "opus", b"hvc1", b"Opus"),
        (VideoFacts("av1", 320, 180, Fraction(24), "yuv420p"), "aac", b"av01", None),
        (VideoFacts("vp9", 320, 180, Fraction(30), "yuv420p"), "opus", b"vp09", b"Opus"),
    ],
)
def test_enhanced_rtmp_codecs_match_and_decode(video, audio, fourcc, audio_fourcc):
    facts = AudioFacts(audio, 48000, 2, "stereo")
    slate = slate_for(video, facts)
    assert slate.notes == []
    start = slate.video.headers[0]
    assert start[0] & 0x80 and start[0] & 0x0F == 0 and start[1:5] == fourcc  # SequenceStart
    assert all(f[0] & 0x80 and f[1:5] == fourcc for f in slate.video.frames)
    assert slate.video.frames[0][0] >> 4 & 0x07 == 1  # keyframe
    if audio_fourcc:
        assert first_byte_nibble(slate.audio.headers[0]) == 9  # ExHeader audio
        assert slate.audio.headers[0][1:5] == audio_fourcc
    messages = play(slate, GOP_SECONDS + 0.3)
    got = decode(messages)
    assert [codec for _, codec in got["codecs"]] == [video.codec, audio]
    loops = len([m for m in messages if m.type_id == VIDEO and kind(m) is Kind.KEYFRAME])
    assert loops == 2
    assert len(got["video"]) == len(
        [m for m in messages if m.type_id == VIDEO and m.payload in slate.video.frames]
    )
    assert {(f.width, f.height) for f in got["video"]} == {(320, 180)}
    assert psnr(got["video"][-1].to_image(), render_card(320, 180)) > 35  # the second loop
    assert {(f.sample_rate, f.layout.nb_channels) for f in got["audio"]} == {(48000, 2)}


ALL_CODECS = [
    (SMALL, AAC),
    (VideoFacts("hevc", 320, 180, Fraction(30), "yuv420p"), AudioFacts("opus", 48000, 2)),
    (VideoFacts("av1", 320, 180, Fraction(24), "yuv420p"), AudioFacts("aac", 48000, 2)),
    (VideoFacts("vp9", 320, 180, Fraction(30), "yuv420p"), AudioFacts("opus", 48000, 2)),
    (None, AudioFacts("mp3", 44100, 2)),
]


@pytest.mark.parametrize(("video", "audio"), ALL_CODECS)
def test_the_relays_classifier_names_every_slate_message(video, audio):
    """What the relay keeps for a destination joining mid-hold comes from these names."""
    slate = slate_for(video, audio)
    for track, media_facts in ((slate.video, video), (slate.audio, audio)):
        if media_facts is None:
            assert track is None
            continue
        type_id = VIDEO if track is slate.video else AUDIO
        tags = [classify(type_id, body) for body in track.headers]
        assert [t.kind for t in tags].count(Kind.SEQUENCE_HEADER) == (media_facts.codec != "mp3")
        assert {t.kind for t in tags} <= {Kind.SEQUENCE_HEADER, Kind.CHANNEL_CONFIG, Kind.METADATA}
        frames = [classify(type_id, body) for body in track.frames]
        assert {t.codec for t in tags + frames} == {media_facts.codec}
        if type_id == VIDEO:
            assert [t.kind for t in frames] == [Kind.KEYFRAME] + [Kind.FRAME] * (len(frames) - 1)
        else:
            assert {t.kind for t in frames} == {Kind.FRAME}


def test_mp3_ingest_gets_mp3_silence():
    slate = slate_for(None, AudioFacts("mp3", 44100, 2, "stereo"))
    assert slate.video is None and slate.notes == []
    assert first_byte_nibble(slate.audio.frames[0]) == 2  # MP3
    got = decode(play(slate, 1))
    assert got["codecs"] == [("audio", "mp3")]
    assert {(f.sample_rate, f.layout.nb_channels) for f in got["audio"]} == {(44100, 2)}


# --- the card -------------------------------------------------------------------------


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = sum(v * v for v in ImageStat.Stat(ImageChops.difference(a, b)).rms) / 3
    return 10 * math.log10(255 * 255 / mse) if mse else math.inf


def bright(image: Image.Image) -> Image.Image:
    """The light pixels (the words) white, the rest black."""
    return image.convert("L").point(lambda p: 255 if p > 180 else 0)


def test_the_card_carries_its_text():
    card = render_card(640, 360)
    blank = render_card(640, 360, text="", subtext="")
    assert sum(bright(card).histogram()[255:]) > 640 * 360 * 0.01  # light words on dark
    assert bright(blank).getbbox() is None
    assert psnr(card, blank) < 25
    left, top, right, bottom = bright(card).getbbox()
    assert top < 180 < bottom and left < 320 < right  # centred


def test_the_card_fits_a_portrait_picture():
    left, _, right, _ = bright(render_card(360, 640)).getbbox()
    assert left > 0 and right < 360  # the words are not cut at the edges
    assert right - left > 360 * 0.6  # and not tiny


def test_the_encoded_card_is_the_rendered_card():
    slate = slate_for(SMALL, None)
    keyframe = decode(play(slate, 0))["video"][0].to_image()
    assert psnr(keyframe, render_card(320, 180)) > 30  # legible: near the picture itself
    assert psnr(keyframe, render_card(320, 180, text="", subtext="")) < 25


# --- fallback --------------------------------------------------------------------------


def test_codecs_that_cannot_be_encoded_fall_back_to_h264_and_aac():
    video = VideoFacts("vp6f", 320, 176, Fraction(15))
    audio = AudioFacts("speex", 16000, 1)
    slate = slate_for(video, audio)
    assert slate.video.facts.codec == "h264" and slate.audio.facts.codec == "aac"
    assert len(slate.notes) == 2 and "vp6f" in slate.notes[0] and "speex" in slate.notes[1]
    got = decode(play(slate, 1))
    assert got["codecs"] == [("video", "h264"), ("audio", "aac")]
    assert {(f.width, f.height) for f in got["video"]} == {(320, 176)}  # the ingest's size
    assert {(f.sample_rate, f.layout.nb_channels) for f in got["audio"]} == {(16000, 1)}


def test_he_aac_gets_aac_lc_at_the_same_rate():
    slate = slate_for(None, AudioFacts("aac", 48000, 2, "stereo", "HE-AAC"))
    assert slate.audio.facts.profile == "LC" and "HE-AAC" in slate.notes[0]
    got = decode(play(slate, 0.5))
    assert {(f.sample_rate, f.layout.nb_channels) for f in got["audio"]} == {(48000, 2)}


@pytest.mark.parametrize(
    ("facts", "size", "rate"),
    [
        (VideoFacts("h264", 0, 0, None), (1280, 720), 30),  # unknown: the fallback card
        (VideoFacts("h264", 100_000, 100_000, Fraction(30)), (1280, 720), 30),
        (VideoFacts("h264", 161, 91, Fraction(1000)), (162, 92), 30),  # odd: rounded up
    ],
)
def test_facts_out_of_bounds_are_bounded(facts, size, rate):
    slate = slate_for(facts, None)
    assert (slate.video.facts.width, slate.video.facts.height) == size
    assert slate.video.facts.frame_rate == rate
    assert len(slate.video.frames) == GOP_SECONDS * rate


@pytest.mark.parametrize("level", ["9.9", "banana", "0"])
def test_a_level_h264_does_not_have_is_left_to_the_encoder(level):
    slate = slate_for(VideoFacts("h264", 160, 96, Fraction(30), "yuv420p", "Main", level), None)
    assert slate.video.note is None
    assert decode(play(slate, 0.1))["contexts"][0].level == 11  # x264's own choice here


def test_a_pixel_format_the_encoder_lacks_becomes_yuv420p():
    slate = slate_for(VideoFacts("vp9", 160, 96, Fraction(30), "yuv420p10le"), None)
    assert slate.video.facts.pixel_format == "yuv420p"
    assert decode(play(slate, 0.1))["video"][0].format.name == "yuv420p"


# --- holding: the loop -----------------------------------------------------------------


def test_the_loop_repeats_the_gop_with_rising_timestamps():
    slate = slate_for(SMALL, AAC)
    loop = SlateLoop(slate, start=10.0, max_catch_up=math.inf)
    first = loop.due(10.0)
    assert [m.payload for m in first[:2]] == [m.payload for m in slate.headers()]
    assert first[2].type_id == VIDEO and kind(first[2]) is Kind.KEYFRAME and first[2].timestamp == 0
    later = loop.due(10.0 + 3 * GOP_SECONDS)
    assert loop.due(10.0 + 3 * GOP_SECONDS) == []  # nothing twice
    sent = first + later
    video = [m for m in sent if m.type_id == VIDEO and m.payload in slate.video.frames]
    gop = len(slate.video.frames)
    assert [m.timestamp for m in video] == [n * 40 for n in range(3 * gop + 1)]
    assert [i for i, m in enumerate(video) if kind(m) is Kind.KEYFRAME] == [
        0,
        gop,
        2 * gop,
        3 * gop,
    ]
    assert [m.payload for m in video[gop : 2 * gop]] == list(slate.video.frames)
    audio = [m.timestamp for m in sent if m.type_id == AUDIO and m.payload in slate.audio.frames]
    assert audio == [int(n * 1024 * 1000 / 44100) for n in range(len(audio))]
    assert audio[-1] > 3 * GOP_SECONDS * 1000 - 30
    stamps = [m.timestamp for m in sent]
    assert stamps == sorted(stamps)  # interleaved by timestamp


def test_the_loop_is_paced_by_the_clock_it_is_given():
    slate = slate_for(SMALL, AAC)
    loop = SlateLoop(slate, start=0.0)
    loop.due(0.0)
    assert loop.next_due() == pytest.approx(1024 / 44100)  # audio frame 1 before video 1
    assert [m.type_id for m in loop.due(0.03)] == [AUDIO]
    assert loop.next_due() == pytest.approx(0.04)
    assert [(m.type_id, m.timestamp) for m in loop.due(0.047)] == [(VIDEO, 40), (AUDIO, 46)]


def test_a_late_call_returns_at_most_max_catch_up_and_keeps_timestamps_continuous():
    slate = slate_for(SMALL, AAC)
    loop = SlateLoop(slate, start=0.0, max_catch_up=1.0)
    burst = loop.due(30.0)  # the event loop stalled for 30 s
    assert max(m.timestamp for m in burst) <= 1000
    assert loop.start == pytest.approx(29.0, abs=0.05)  # behind the clock, not bursting
    after = loop.due(30.5)
    video = [m.timestamp for m in burst + after if m.type_id == VIDEO][1:]  # after the header
    assert video == [n * 40 for n in range(len(video))] and video[-1] >= 1440


def test_a_fractional_frame_rate_does_not_drift():
    facts = VideoFacts("h264", 160, 96, Fraction(30000, 1001), "yuv420p")
    slate = slate_for(facts, None)
    assert len(slate.video.frames) == 60  # 2 s at 29.97
    stamps = [m.timestamp for m in play(slate, 60.06) if m.type_id == VIDEO][1:]
    assert len(stamps) == 1801 and stamps[-1] == 60060  # 1800 frames of 33.367 ms
    assert {b - a for a, b in itertools.pairwise(stamps)} == {33, 34}


def test_holding_after_a_publisher_through_the_timeline_is_continuous():
    """Publisher -> slate -> publisher again, as the relay will drive them."""
    slate = slate_for(SMALL, AAC)
    timeline = Timeline(step_ms=40)
    for ts in range(0, 2000, 40):  # the publisher, live
        timeline.place(VIDEO, ts, now=ts / 1000)
    stalled_at = timeline.last_at
    timeline.switch()
    loop = SlateLoop(slate, start=stalled_at)
    # The hold begins 1.5 s after the last message: the first call catches up.
    held = [timeline.place(m.type_id, m.timestamp, 3.46) for m in loop.due(3.46)]
    held += [timeline.place(m.type_id, m.timestamp, 4.0) for m in loop.due(4.0)]
    assert held[0] == 1960 + 40
    assert timeline.last_output - 1960 == pytest.approx((4.0 - stalled_at) * 1000, abs=41)
    timeline.switch(at=0)
    back = [timeline.place(VIDEO, ts, now=5.0) for ts in (0, 33, 66)]
    assert back[0] == timeline.last_output - 66 and back[0] - max(held) == 40


def test_an_audio_only_slate_is_silence_only():
    slate = slate_for(None, AAC)
    messages = play(slate, 1)
    assert {m.type_id for m in messages} == {AUDIO}
    assert SlateLoop(slate, 0).next_due() == 0


# --- the cache --------------------------------------------------------------------------


def test_the_cache_encodes_each_set_of_facts_once_off_the_calling_thread():
    cache = SlateCache()
    try:
        facts = (VideoFacts("h264", 128, 72, Fraction(10)), None)
        callers = []
        real_encode = cache._encode

        def encode(*args):
            callers.append(threading.current_thread().name)
            return real_encode(*args)

        cache._encode = encode
        first = cache.request(*facts)
        assert cache.request(*facts) is first  # the same encoding, not a second
        slate = first.result(timeout=60)
        assert cache.get(*facts) is slate
        other = cache.request(VideoFacts("h264", 128, 72, Fraction(15)), None).result(60)
        assert other is not slate and len(other.video.frames) == 30
        assert cache.encoded == 2
        assert callers and all(name.startswith("slate") for name in callers)
    finally:
        cache.close()


def test_get_never_blocks_while_a_slate_is_being_encoded():
    cache = SlateCache()
    release = threading.Event()
    cache._executor.submit(release.wait)  # the worker is busy
    try:
        facts = (VideoFacts("h264", 128, 72, Fraction(10)), None)
        assert cache.get(*facts) is None
        release.set()
        cache.request(*facts).result(timeout=60)
        assert cache.get(*facts) is not None
    finally:
        release.set()
        cache.close()


def test_the_cache_cancels_the_oldest_waiting_requests_beyond_its_queue():
    cache = SlateCache(max_queued=2)
    release = threading.Event()
    cache._executor.submit(release.wait)  # the worker is busy
    try:
        keys = [(None, AudioFacts("aac", rate, 1)) for rate in (8000, 11025, 16000, 22050)]
        futures = [cache.request(*key) for key in keys]
        assert [f.cancelled() for f in futures] == [True, True, False, False]
        release.set()
        assert futures[3].result(timeout=60).audio.facts.sample_rate == 22050
        assert cache.encoded == 2
        assert cache.request(*keys[0]).result(timeout=60) is not None  # asked again: made
    finally:
        release.set()
        cache.close()


def test_the_cache_forgets_the_least_recently_requested_beyond_its_limit():
    cache = SlateCache(max_entries=2)
    try:
        first, second, third = [(None, AudioFacts("aac", rate, 1)) for rate in (8000, 16000, 22050)]
        for key in (first, second, first, third):  # `first` used again: `second` is oldest
            cache.request(*key).result(timeout=60)
        assert cache.encoded == 3
        cache.request(*first).result(timeout=60)  # still cached
        assert cache.encoded == 3
        cache.request(*second).result(timeout=60)  # forgotten: encoded again
        assert cache.encoded == 4
    finally:
        cache.close()


def realtime_threads() -> list[int]:
    """This process's threads with a real-time scheduling policy."""
    found = []
    for tid in map(int, os.listdir("/proc/self/task")):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                found.append(tid)
    return found


def test_encoding_an_av1_slate_leaves_no_thread_real_time():
    """SVT-AV1 (PyAV's libsvtav1) makes the thread that opens an encoder SCHED_FIFO 99
    whenever it may (as root, or with CAP_SYS_NICE) and never sets it back: the agent's
    slate thread, and every thread or process it started afterwards, would run before
    anything else on its core, kernel threads included (it stalled our CI that way)."""
    assert realtime_threads() == []
    policies = []

    def encode() -> None:
        slate_for(VideoFacts("av1", 320, 180, Fraction(24), "yuv420p"), None)
        policies.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=encode)
    thread.start()
    thread.join()
    assert policies == [os.SCHED_OTHER]
    assert realtime_threads() == []


def test_an_av1_encode_that_never_finishes_is_abandoned_and_tried_again(monkeypatch, caplog):
    """libsvtav1 sometimes never returns (agent/slate.py, SVT_TIMEOUT): the slate is
    encoded again rather than the slate thread waiting forever."""
    import agent.slate as slate_module

    real_encode = slate_module._encode_video
    stuck = threading.Event()  # never set: the first attempt waits like the library does
    attempts = []

    def first_hangs(facts, text, subtext):
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            stuck.wait()
            raise SlateError("released at the end of the test")
        return real_encode(facts, text, subtext)

    monkeypatch.setattr(slate_module, "_encode_video", first_hangs)
    monkeypatch.setattr(slate_module, "SVT_TIMEOUT", 0.5)
    av1 = VideoFacts("av1", 160, 90, Fraction(24), "yuv420p")
    slate = encode_slate(av1, None)
    assert slate.video is not None and slate.video.facts.codec == "av1"
    assert slate.video.frames
    assert attempts == ["slate-av1", "slate-av1"]
    assert "libsvtav1 did not finish" in caplog.text
    # Never finishing at all: that plan fails clearly (encode_slate then tries the next).
    attempts.clear()
    monkeypatch.setattr(slate_module, "_encode_video", lambda *_: stuck.wait())
    monkeypatch.setattr(slate_module, "SVT_ATTEMPTS", 2)
    with pytest.raises(SlateError, match="libsvtav1 did not finish in 2 attempts"):
        slate_module._encode_video_watched(av1, "", "")
    stuck.set()  # let the abandoned threads end
