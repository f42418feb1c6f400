"""The disconnect slate: a "We'll be right back" card and silence, made to match the ingest.

While a publisher is away (issue 15), every destination keeps receiving media: the card
as video and silence as audio, encoded with PyAV to the ingest's facts (codec,
resolution, frame rate, profile, pixel format; sample rate, channels), so a destination
sees one continuous publish. The slate is encoded once per set of facts (`SlateCache`, a
worker thread, off the relay's path) as one closed GOP of `GOP_SECONDS` starting with
a keyframe plus a run of silent audio frames, and `SlateLoop` repeats them with rising
timestamps: holding costs no encoding at all.

What is relayed is exactly what an encoder's FLV output carries: the bodies are cut from
FFmpeg's own FLV muxer (`flvenc.c`), one muxer per track. So H.264 and AAC come as legacy
FLV tags (AVCDecoderConfigurationRecord, AudioSpecificConfig, then frames), HEVC, AV1,
VP9 and Opus as Enhanced RTMP tags (FourCC `hvc1`/`av01`/`vp09`/`Opus`, SequenceStart
then CodedFrames[X], plus the colorInfo metadata and Opus channel configuration FFmpeg
writes). The muxer's own `onMetaData` is dropped: destinations keep the publisher's.

Fallback: a codec PyAV cannot encode here (VP6, Speex, anything outside `_VIDEO_ENCODERS`
and `_AUDIO_ENCODERS`), or facts no encoder accepts, gets an H.264 (High, yuv420p) card
or AAC-LC silence with its own sequence header; the ingest's resolution, frame rate,
sample rate and channels are kept where they are valid (1280x720, 30 fps, 48 kHz stereo
otherwise). A destination then sees the codec change mid-publish. nginx-rtmp relays and
records it as it comes; FFmpeg's FLV demuxer (ffmpeg receivers, and how many services
read an ingest) opens a new stream for the new codec, legacy or Enhanced RTMP alike, so
the old stream ends and a new one starts (measured with PyAV 18.1 / FFmpeg 8.1: HEVC ->
H.264, Opus -> AAC, MP3 -> AAC; a new resolution in the same codec stays one stream). How
YouTube or Twitch take it is theirs to decide (the broadcast may restart there); matching
the codec avoids the question, hence the effort to match.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
from PIL import Image, ImageDraw, ImageFont

from agent.flv import SCRIPT, FlvTagReader
from agent.media_facts import AudioFacts, VideoFacts
from agent.memory import release_free_memory
from agent.rtmp.message import AUDIO, VIDEO, Message
from agent.scheduling import ordinary_scheduling

log = logging.getLogger(__name__)

CARD_TEXT = "We\u2019ll be right back"
CARD_SUBTEXT = "The stream will continue in a moment"
GOP_SECONDS = 2  # Twitch and YouTube want a keyframe at least every 2 s
DEFAULT_FRAME_RATE = Fraction(30)
FALLBACK_VIDEO = VideoFacts("h264", 1280, 720, DEFAULT_FRAME_RATE, "yuv420p", "High")
FALLBACK_AUDIO = AudioFacts("aac", 48000, 2, "stereo", "LC")
# Bounds on the facts a publisher's sequence header can claim: beyond them the fallback
# card is made instead, so a hostile header cannot make the agent encode a huge picture.
MAX_SIDE = 8192
MAX_FRAME_RATE = 120
MAX_CHANNELS = 8
_MUXER_OPTIONS = {"flvflags": "no_duration_filesize"}
_CARD_BACKGROUND = (17, 19, 26)
_CARD_TEXT_COLOUR = (236, 238, 242)
_CARD_SUBTEXT_COLOUR = (150, 156, 170)
_DEFAULT_LAYOUTS = {
    1: "mono",
    2: "stereo",
    3: "2.1",
    4: "quad",
    5: "5.0",
    6: "5.1",
    7: "6.1",
    8: "7.1",
}
_SILENCE_SECONDS = 1  # of silence encoded; its middle half is looped (no priming, no tail)
# The message stream id on the slate's messages, as a publisher's first createStream
# gets (the relay sends every source's messages on each destination's own stream).
SLATE_STREAM_ID = 1


class SlateError(Exception):
    """No slate could be encoded for these facts, not even the fallback."""


@dataclass(frozen=True, slots=True)
class TrackSlate:
    """One track of a slate: what it was encoded as, its headers and its frames."""

    facts: VideoFacts | AudioFacts  # as asked of the encoder (the ingest's, or the fallback)
    headers: tuple[bytes, ...]  # sequence header (and codec metadata), in muxer order
    frames: tuple[bytes, ...]  # video: one closed GOP, keyframe first; audio: silence
    frame_duration: Fraction  # milliseconds per frame
    note: str | None = None  # why it does not match the ingest, for the log


@dataclass(frozen=True, slots=True)
class Slate:
    """A slate for one set of ingest facts: either track may be absent, as in the ingest."""

    video: TrackSlate | None
    audio: TrackSlate | None

    def headers(self, timestamp: int = 0) -> list[Message]:
        """The sequence headers of both tracks (video first), as messages at `timestamp`."""
        return [
            Message(type_id, SLATE_STREAM_ID, timestamp, body)
            for type_id, track in ((VIDEO, self.video), (AUDIO, self.audio))
            if track is not None
            for body in track.headers
        ]

    @property
    def notes(self) -> list[str]:
        """What differs from the ingest (fallbacks), for the log."""
        return [t.note for t in (self.video, self.audio) if t is not None and t.note]


# --- the card ------------------------------------------------------------------------


def render_card(
    width: int, height: int, text: str = CARD_TEXT, subtext: str = CARD_SUBTEXT
) -> Image.Image:
    """The card as an RGB picture: `text` large and centred, `subtext` below it.

    Pillow's default font is a scalable FreeType font (Aileron) shipped inside Pillow,
    so no system font is needed; the text is sized to the picture's height and shrunk
    to fit narrow (portrait) pictures.
    """
    image = Image.new("RGB", (width, height), _CARD_BACKGROUND)
    draw = ImageDraw.Draw(image)
    size = _fitted_size(text, width * 0.86, height / 9)
    small = _fitted_size(subtext, width * 0.86, size / 2.2)
    middle = height / 2 - size * 0.35
    font = ImageFont.load_default(size)
    draw.text((width / 2, middle), text, font=font, fill=_CARD_TEXT_COLOUR, anchor="mm")
    if subtext and small >= 6:
        font = ImageFont.load_default(small)
        below = middle + size * 0.6 + small
        draw.text((width / 2, below), subtext, font=font, fill=_CARD_SUBTEXT_COLOUR, anchor="mm")
    return image


def _fitted_size(text: str, max_width: float, max_size: float) -> int:
    """The largest font size, at most `max_size`, at which `text` is at most `max_width`."""
    reference = 100
    length = ImageFont.load_default(reference).getlength(text) or 1
    return max(1, int(min(max_size, max_width * reference / length)))


# --- encoders --------------------------------------------------------------------------

# FFmpeg codec name -> the encoder in PyAV's bundled FFmpeg. These are the codecs FFmpeg's
# FLV muxer writes (legacy FLV or Enhanced RTMP) that the bundled FFmpeg can encode.
_VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
_AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame"}
# FFmpeg's H.264 profile names -> x264's (x264 cannot make Extended: Main is its subset).
_X264_PROFILES = {
    "Baseline": "baseline",
    "Constrained Baseline": "baseline",
    "Main": "main",
    "Extended": "main",
    "High": "high",
    "High 10": "high10",
    "High 10 Intra": "high10",
    "High 4:2:2": "high422",
    "High 4:2:2 Intra": "high422",
    "High 4:4:4 Predictive": "high444",
    "High 4:4:4 Intra": "high444",
}


def _video_options(encoder: str, facts: VideoFacts, gop: int) -> dict[str, str]:
    """Options for a still card: one closed GOP of `gop` frames, no B-frames (so every
    frame's composition time is 0 and the GOP can be repeated as is), one thread (the
    slate is encoded once; it must not take the relay's cores)."""
    if encoder == "libx264":
        options = {"preset": "veryfast", "tune": "stillimage", "bf": "0", "threads": "1"}
        # No lookahead: a still card gains nothing from it, and x264's lookahead buffers
        # were half the encode's memory peak (agent RSS +60 MB at 720p, +30 MB without).
        options["rc-lookahead"] = "0"
        options |= {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        profile = _X264_PROFILES.get(facts.profile or "")
        if profile:
            options["profile"] = profile
        if _is_h264_level(facts.level):
            options["level"] = facts.level
        return options
    if encoder == "libx265":
        params = f"keyint={gop}:min-keyint={gop}:bframes=0:scenecut=0:open-gop=0"
        params += ":frame-threads=1:pools=1:log-level=error"
        return {"preset": "veryfast", "x265-params": params}
    if encoder == "libsvtav1":
        # Low-delay prediction: no hidden reordered frames; a key frame opens each GOP.
        return {"preset": "10", "g": str(gop), "svtav1-params": "pred-struct=1:lp=1"}
    if encoder == "libvpx-vp9":
        return {
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            "g": str(gop),
            "keyint_min": str(gop),
            "threads": "1",
            "crf": "32",
            "b": "0",
        }
    return {}


def _is_h264_level(level: str | None) -> bool:
    """A level x264 takes as written ("3.1", "1b"; H.264 Annex A goes from 1 to 6.2)."""
    if level == "1b":
        return True
    try:
        return 1 <= float(level or "") <= 6.2
    except ValueError:
        return False


def _pixel_format(encoder: str, wanted: str | None) -> str:
    formats = {f.name for f in av.codec.Codec(encoder, "w").video_formats or ()}
    return wanted if wanted in formats else "yuv420p"


def _video_plans(facts: VideoFacts) -> Iterator[tuple[VideoFacts, str | None]]:
    """What to try, best first: the ingest's codec with its facts, the same codec with the
    encoder's defaults, then the fallback H.264 card. Each with its note for the log."""
    rate = facts.frame_rate
    if not rate or not 1 <= rate <= MAX_FRAME_RATE:
        rate = DEFAULT_FRAME_RATE
    if 16 <= facts.width <= MAX_SIDE and 16 <= facts.height <= MAX_SIDE:
        # 4:2:0 encoders want even sides: round up (the publisher's encoder cropped).
        size = {"width": facts.width + facts.width % 2, "height": facts.height + facts.height % 2}
    else:
        size = {"width": FALLBACK_VIDEO.width, "height": FALLBACK_VIDEO.height}
    shaped = replace(facts, frame_rate=rate, **size)
    encoder = _VIDEO_ENCODERS.get(facts.codec)
    if encoder:
        yield replace(shaped, pixel_format=_pixel_format(encoder, facts.pixel_format)), None
        yield (
            replace(shaped, pixel_format="yuv420p", profile=None, level=None),
            f"{facts.codec} slate with the encoder's defaults",
        )
    fallback = replace(FALLBACK_VIDEO, frame_rate=rate, **size)
    yield fallback, f"{facts.codec} cannot be encoded here: H.264 slate instead"


def _audio_plans(facts: AudioFacts) -> Iterator[tuple[AudioFacts, str | None]]:
    """As `_video_plans`, for the silence."""
    channels = facts.channels if 1 <= facts.channels <= MAX_CHANNELS else 2
    layout = facts.layout if channels == facts.channels else None
    shaped = replace(facts, channels=channels, layout=layout or _default_layout(channels))
    if facts.codec == "aac" and facts.profile in (None, "LC"):
        yield replace(shaped, profile="LC"), None  # FFmpeg's AAC encoder makes LC only
    elif facts.codec in _AUDIO_ENCODERS and facts.codec != "aac":
        yield shaped, None
    rates = av.codec.Codec("aac", "w").audio_rates or ()
    rate = facts.sample_rate if facts.sample_rate in rates else FALLBACK_AUDIO.sample_rate
    note = f"{facts.codec} cannot be encoded here: AAC slate instead"
    if facts.codec == "aac":
        note = f"AAC {facts.profile} cannot be encoded here: AAC-LC slate instead"
    yield replace(shaped, codec="aac", sample_rate=rate, profile="LC"), note
    yield FALLBACK_AUDIO, f"{facts.codec} silence unusable: 48 kHz stereo AAC-LC instead"


def _default_layout(channels: int) -> str:
    return _DEFAULT_LAYOUTS.get(channels, "stereo")


# --- encoding ---------------------------------------------------------------------------


class _TagSink:
    """File-like sink of a PyAV FLV muxer: cuts its bytes back into tag bodies (the
    muxer's own onMetaData dropped)."""

    def __init__(self) -> None:
        self._reader = FlvTagReader()
        self._bodies: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._bodies += [body for t, _, body in self._reader.feed(bytes(data)) if t != SCRIPT]
        return len(data)

    def take(self) -> list[bytes]:
        bodies, self._bodies = self._bodies, []
        return bodies


class _TrackEncoder:
    """One stream through its own FLV muxer, so every packet becomes exactly one tag body
    (plus, before the first frame, whatever configuration the muxer writes)."""

    def __init__(self, encoder: str, rate: Any, options: dict[str, str], **attributes: Any):
        self.sink = _TagSink()
        self.container = av.open(self.sink, "w", format="flv", options=_MUXER_OPTIONS)
        self.stream = self.container.add_stream(encoder, rate=rate, options=options)
        for name, value in attributes.items():
            setattr(self.stream, name, value)
        with ordinary_scheduling():  # libsvtav1 would leave this thread SCHED_FIFO 99
            self.container.start_encoding()  # opens the encoder; writes the sequence header
        self.headers = self.sink.take()
        self.frames: list[bytes] = []
        self.keyframes: list[bool] = []

    def encode(self, frame: Any) -> None:
        """Encode one frame (None: flush) and keep the tag body of every packet out."""
        for packet in self.stream.encode(frame):
            keyframe = packet.is_keyframe
            self.container.mux(packet)
            bodies = self.sink.take()
            if not bodies:
                continue
            if len(bodies) > 1:
                if self.frames:  # new configuration mid-GOP: the GOP could not loop
                    raise SlateError("the encoder changed its configuration mid-slate")
                self.headers += bodies[:-1]  # e.g. colorInfo metadata before frame 1
            self.frames.append(bodies[-1])
            self.keyframes.append(keyframe)

    def close(self) -> None:
        with contextlib.suppress(av.FFmpegError, ValueError):
            self.container.close()  # the trailer (end of sequence) is not looped


def _encode_video(facts: VideoFacts, text: str, subtext: str) -> TrackSlate:
    encoder = _VIDEO_ENCODERS[facts.codec]
    rate = facts.frame_rate or DEFAULT_FRAME_RATE
    gop = max(1, round(GOP_SECONDS * rate))
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told
    track = _TrackEncoder(
        encoder,
        rate,
        _video_options(encoder, facts, gop),
        width=facts.width,
        height=facts.height,
        pix_fmt=facts.pixel_format or "yuv420p",
        time_base=1 / rate,
    )
    try:
        card = render_card(facts.width, facts.height, text, subtext)
        frame = av.VideoFrame.from_image(card).reformat(format=facts.pixel_format or "yuv420p")
        frame.time_base = 1 / rate
        for index in range(gop):
            frame.pts = index
            track.encode(frame)
        track.encode(None)
    finally:
        track.close()
    if not track.frames or not track.keyframes[0]:
        raise SlateError(f"{encoder} made no keyframe first")
    return TrackSlate(facts, tuple(track.headers), tuple(track.frames), 1000 / rate)


def _encode_audio(facts: AudioFacts) -> TrackSlate:
    encoder = _AUDIO_ENCODERS[facts.codec]
    layout = facts.layout or _default_layout(facts.channels)
    track = _TrackEncoder(encoder, facts.sample_rate, {}, layout=layout)
    try:
        context = track.stream.codec_context
        samples = context.frame_size or 1024  # PCM-like encoders take any size
        sample_format = context.format.name
        for start in range(0, facts.sample_rate * _SILENCE_SECONDS, samples):
            frame = av.AudioFrame(format=sample_format, layout=layout, samples=samples)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate = facts.sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, facts.sample_rate)
            track.encode(frame)
        track.encode(None)
    finally:
        track.close()
    count = len(track.frames)
    if count < 4:
        raise SlateError(f"{encoder} made {count} frames of silence")
    steady = tuple(track.frames[count // 4 : 3 * count // 4])
    return TrackSlate(
        facts, tuple(track.headers), steady, Fraction(samples * 1000, facts.sample_rate)
    )


_ENCODE_ERRORS = (av.FFmpegError, ValueError, TypeError, SlateError)

# SVT-AV1 (4.1, PyAV 18's libsvtav1) now and then never returns from
# `svt_av1_enc_get_packet` while both cores are busy: reproduced in 1 of ~5 to 150
# encodes of a 320x180 slate with two busy loops beside it, with or without real-time
# threads, CPU idle once stuck (a lock in the library, not slowness). An AV1 encode that
# has not finished within SVT_TIMEOUT is abandoned (its thread stays asleep in that
# wait: no CPU, the encoder's memory kept) and started again, at most SVT_ATTEMPTS times.
SVT_TIMEOUT = 30.0  # s: a 1080p slate GOP takes 1-3 s
SVT_ATTEMPTS = 3


def _encode_video_watched(facts: VideoFacts, text: str, subtext: str) -> TrackSlate:
    """`_encode_video`, abandoned and tried again when libsvtav1 does not finish."""
    if _VIDEO_ENCODERS[facts.codec] != "libsvtav1":
        return _encode_video(facts, text, subtext)
    for _ in range(SVT_ATTEMPTS):
        try:
            return _in_own_thread(facts, text, subtext).result(SVT_TIMEOUT)
        except TimeoutError:
            log.warning("slate: libsvtav1 did not finish in %.0f s; trying again", SVT_TIMEOUT)
    raise SlateError(f"libsvtav1 did not finish in {SVT_ATTEMPTS} attempts")


def _in_own_thread(facts: VideoFacts, text: str, subtext: str) -> Future[TrackSlate]:
    """`_encode_video` in a thread of its own (a daemon: one that never returns is left)."""
    future: Future[TrackSlate] = Future()

    def encode() -> None:
        try:
            future.set_result(_encode_video(facts, text, subtext))
        except Exception as exc:  # raised by result() in the waiting thread
            future.set_exception(exc)

    threading.Thread(target=encode, name="slate-av1", daemon=True).start()
    return future


def _first_that_encodes(plans: Iterator[tuple[Any, str | None]], encode: Any) -> TrackSlate:
    failures = []
    for facts, note in plans:
        try:
            track = encode(facts)
        except _ENCODE_ERRORS as error:
            failures.append(f"{facts.codec}: {error}")
            log.debug("slate plan %s failed: %s", facts, error)
            continue
        return replace(track, note=note)
    raise SlateError("no slate could be encoded: " + "; ".join(failures))


def encode_slate(
    video: VideoFacts | None,
    audio: AudioFacts | None,
    text: str = CARD_TEXT,
    subtext: str = CARD_SUBTEXT,
) -> Slate:
    """Encode a slate for an ingest with these facts (blocking: run it in a worker thread;
    PyAV releases the GIL while encoding). A track the ingest lacks is absent here too.
    Raises SlateError only if even the H.264/AAC fallback cannot be encoded."""
    video_track = None
    if video is not None:
        video_track = _first_that_encodes(
            _video_plans(video), lambda facts: _encode_video_watched(facts, text, subtext)
        )
    audio_track = _first_that_encodes(_audio_plans(audio), _encode_audio) if audio else None
    slate = Slate(video_track, audio_track)
    for note in slate.notes:
        log.info("slate: %s", note)
    return slate


# --- holding: the slate looped in real time ---------------------------------------------


class SlateLoop:
    """A slate played in real time, from its own timestamp 0, for as long as wanted.

    Sans-I/O: the caller passes a monotonic clock in seconds. `due(now)` returns the
    headers first, then every frame whose time has come, video and audio interleaved by
    timestamp: the GOP and the silence repeated with rising timestamps, computed from
    frame counters (no drift, whatever the frame rate). Map the timestamps onto the
    broadcast with `agent.timeline.Timeline`. Pass `start` = when the last message was
    sent before the hold, and the first call catches up the time the hold took to begin;
    a call never returns more than `max_catch_up` seconds of media (a late call, an event
    loop that stalled): beyond that the slate falls behind the clock instead of bursting.

    The messages are RTMP messages as a publisher's (`MediaReceived.message`): the relay
    takes them in where it takes a publisher's, and its classifier (`agent/tags.py`)
    names them like any others (sequence headers, keyframes: what a destination that
    connects during the hold needs).
    """

    def __init__(self, slate: Slate, start: float, max_catch_up: float = 5.0) -> None:
        self.slate = slate
        self.start = start
        self.max_catch_up = max_catch_up
        self._headers_sent = False
        self._video_count = 0
        self._audio_count = 0

    def due(self, now: float) -> list[Message]:
        """The messages due by `now` (none twice), in the order to send them."""
        video, audio = self.slate.video, self.slate.audio
        limit = (now - self.start) * 1000
        excess = limit - self._next_time() - self.max_catch_up * 1000
        if excess > 0:
            self.start += float(excess) / 1000
            limit -= excess
        messages = [] if self._headers_sent else self.slate.headers()
        self._headers_sent = True
        while True:
            video_at = self._time(video, self._video_count)
            audio_at = self._time(audio, self._audio_count)
            if (
                video_at is not None
                and video_at <= limit
                and (audio_at is None or video_at <= audio_at)
            ):
                messages.append(self._next_video(video, video_at))
            elif audio_at is not None and audio_at <= limit:
                body = audio.frames[self._audio_count % len(audio.frames)]
                messages.append(Message(AUDIO, SLATE_STREAM_ID, int(audio_at), body))
                self._audio_count += 1
            else:
                return messages

    def next_due(self) -> float:
        """The clock time at which the next frame is due (for the caller's timer)."""
        return self.start + float(self._next_time()) / 1000

    def _next_time(self) -> Fraction | float:
        """The slate timestamp (ms) of the next frame of either track."""
        times = [
            t
            for t in (
                self._time(self.slate.video, self._video_count),
                self._time(self.slate.audio, self._audio_count),
            )
            if t is not None
        ]
        return min(times) if times else float("inf")

    def _next_video(self, video: TrackSlate, at: Fraction) -> Message:
        body = video.frames[self._video_count % len(video.frames)]  # a GOP: keyframe first
        self._video_count += 1
        return Message(VIDEO, SLATE_STREAM_ID, int(at), body)

    @staticmethod
    def _time(track: TrackSlate | None, count: int) -> Fraction | None:
        return None if track is None else count * track.frame_duration


# --- the cache: encoded once per set of facts, off the relay's path ----------------------


class SlateCache:
    """Slates by ingest facts, each encoded once in one worker thread.

    Call `request` as soon as an ingest's facts are known (after the probe of its
    sequence headers), so the slate is ready before any disconnect; `get` is what the
    relay reads when a hold begins (never blocks). One worker thread: slates are made one
    at a time, so encoding never takes more than one core from the relay. At most
    `max_queued` wait their turn: a newer request cancels the oldest waiting one (its
    future is cancelled; `get` asks again when a hold needs it), so publishers changing
    their facts again and again cannot build a backlog.
    """

    def __init__(
        self,
        max_entries: int = 16,
        max_queued: int = 4,
        text: str = CARD_TEXT,
        subtext: str = CARD_SUBTEXT,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slate")
        self._futures: OrderedDict[tuple[Any, Any], Future[Slate]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._max_queued = max_queued
        self._text = (text, subtext)
        self.encoded = 0  # slates encoded so far (each set of facts once)

    def request(self, video: VideoFacts | None, audio: AudioFacts | None) -> Future[Slate]:
        """The slate for these facts: done if cached, else being encoded (thread-safe).
        Wrap it with `asyncio.wrap_future` to await it from the event loop."""
        key = (video, audio)
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._executor.submit(self._encode, video, audio)
                self._futures[key] = future
            self._futures.move_to_end(key)
            self._cancel_oldest_queued()
            self._evict()
            return future

    def get(self, video: VideoFacts | None, audio: AudioFacts | None) -> Slate | None:
        """The slate if it is encoded already (requesting it otherwise): None while not."""
        future = self.request(video, audio)
        if future.done() and not future.cancelled() and future.exception() is None:
            return future.result()
        return None

    def close(self) -> None:
        """Stop the worker (a slate being encoded is finished, queued ones are dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _encode(self, video: VideoFacts | None, audio: AudioFacts | None) -> Slate:
        try:
            slate = encode_slate(video, audio, *self._text)
        finally:
            release_free_memory()  # the encoders' buffers, kept by this thread's arena
        self.encoded += 1
        return slate

    def _cancel_oldest_queued(self) -> None:
        """Cancel the least recently requested slates waiting beyond `max_queued`."""
        waiting = [key for key, f in self._futures.items() if not (f.done() or f.running())]
        for key in waiting[: max(0, len(waiting) - self._max_queued)]:
            if self._futures[key].cancel():  # False: it has just started; let it finish
                del self._futures[key]

    def _evict(self) -> None:
        """Forget the least recently requested finished slates beyond the limit."""
        for key in list(self._futures):
            if len(self._futures) <= self._max_entries:
                return
            if self._futures[key].done():
                del self._futures[key]
