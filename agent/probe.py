"""The agent's media engine for understanding a stream: PyAV, off the relay's path.

When a track gets a new sequence header, the relay hands it and the track's next coded
frame to `Prober.submit`; a worker thread opens the codec with the sequence header as
extradata (`av.CodecContext.create(name, "r")`), decodes that one frame and reads what
the codec says: profile, level, picture size and pixel format, sample rate and channels
(so 48 kHz AAC is reported as 48000, which the FLV audio header cannot say: its rate
field stops at 44 kHz). The relay never waits for it: the answer comes back through a
callback on the event loop. The pool is small and its queue bounded; when it is full
the request is dropped (the heartbeat then reports what the classifier knows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av

log = logging.getLogger(__name__)

# FFmpeg decoder to open for a codec name, in order of preference.
_DECODERS = {
    "av1": ("libdav1d", "av1"),
    "mp3": ("mp3float", "mp3"),
    "vp9": ("vp9", "libvpx-vp9"),
    "vp8": ("vp8", "libvpx"),
    "opus": ("opus", "libopus"),
    "pcm": ("pcm_s16le",),
}


@dataclass(frozen=True)
class Probe:
    """What the codec says about one track (None: it did not say)."""

    codec: str
    profile: str | None = None
    level: str | None = None
    width: int | None = None
    height: int | None = None
    pixel_format: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


def _level(codec: str, raw: int, extradata: bytes | None) -> str | None:
    """A codec's level as people write it (H.264 4.1, HEVC 4.1, AV1 5.1, VP9 4.0)."""
    if codec == "vp9" and extradata is not None and len(extradata) > 5:
        raw = extradata[5]  # VPCodecConfigurationRecord: version+flags (4), profile, level
        return f"{raw // 10}.{raw % 10}" if raw > 0 else None
    if raw < 0:
        return None
    if codec == "h264":
        return f"{raw // 10}.{raw % 10}"
    if codec == "hevc":  # general_level_idc = 30 x level
        return f"{raw // 30}.{raw % 30 // 3}"
    if codec == "av1":  # seq_level_idx: 2.0 is 0, then X.Y = (X - 2) * 4 + Y
        return f"{2 + raw // 4}.{raw % 4}"
    return None


def open_decoder(codec: str, extradata: bytes | None) -> av.CodecContext:
    """A decoder of `codec` (an FFmpeg codec name, as the classifier says it) with the
    sequence header as its extradata; ValueError when FFmpeg has none."""
    last_error: Exception | None = None
    for name in _DECODERS.get(codec, (codec,)):
        try:
            context = av.CodecContext.create(name, "r")
        except (av.FFmpegError, ValueError) as exc:
            last_error = exc
            continue
        break
    else:
        raise ValueError(f"no decoder for {codec}: {last_error}")
    if extradata:
        context.extradata = extradata
    return context


def decode_one(context: av.CodecContext, frame: bytes) -> list:
    """Decode one coded frame, flushing the decoder so a frame held back for reordering
    (H.264 with B-frames) comes out too. Raises on undecodable input."""
    frames = context.decode(av.Packet(frame))
    # Some decoders will not flush after one packet; the frame is enough.
    with contextlib.suppress(av.FFmpegError, ValueError):
        frames += context.decode(None)
    return frames


def probe(codec: str, extradata: bytes | None, frame: bytes) -> Probe:
    """Open `codec`'s decoder with `extradata`, decode `frame`, report. Runs in the
    worker thread (PyAV releases the GIL while decoding); raises on undecodable input."""
    context = open_decoder(codec, extradata)
    frames = decode_one(context, frame)
    if context.type == "video":
        first = frames[0] if frames else None
        return Probe(
            codec,
            profile=context.profile,
            level=_level(codec, context.level, extradata),
            width=(first.width if first else context.width) or None,
            height=(first.height if first else context.height) or None,
            pixel_format=(first.format.name if first else context.pix_fmt) or None,
        )
    first_audio = frames[0] if frames else None
    layout = context.layout
    return Probe(
        codec,
        profile=context.profile,
        sample_rate=(first_audio.sample_rate if first_audio else context.sample_rate) or None,
        channels=(layout.nb_channels if layout else None) or None,
    )


class Prober:
    """A small pool of PyAV workers with a bounded queue, shared by every stream of the
    process; results are delivered on the event loop."""

    def __init__(self, workers: int = 1, max_pending: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe")
        self._max_pending = max_pending
        self._pending = 0
        self.dropped = 0

    def submit(
        self,
        codec: str,
        extradata: bytes | None,
        frame: bytes,
        done: Callable[[Probe | None], None],
    ) -> bool:
        """Probe in the background; `done(Probe or None)` runs on the event loop. False
        (and nothing happens) when the queue is full."""
        if self._pending >= self._max_pending:
            self.dropped += 1
            return False
        loop = asyncio.get_running_loop()
        self._pending += 1

        def finished(future: Future[Probe]) -> None:  # in the worker thread
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(deliver, future)

        def deliver(future: Future[Probe]) -> None:  # on the event loop
            self._pending -= 1
            if future.cancelled():
                return
            try:
                result = future.result()
            except Exception as exc:  # undecodable input is the publisher's problem
                log.info("could not probe a %s track: %s", codec, str(exc)[:200])
                result = None
            done(result)

        try:
            future = self._pool.submit(probe, codec, extradata, frame)
        except RuntimeError:  # shut down
            self._pending -= 1
            return False
        future.add_done_callback(finished)
        return True

    def close(self) -> None:
        """Stop the workers (waits for a probe in progress: a few milliseconds)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
