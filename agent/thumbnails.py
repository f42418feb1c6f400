"""Thumbnails of live streams: the newest video keyframe as a small JPEG for rig
(docs/agent-protocol.md#thumbnail-upload, `PUT /agents/claims/{claimID}/thumbnail`).

At most every `INTERVAL` seconds per live stream whose picture rig wants (someone asked
for it within the last minute: `thumbnailWanted`, `IngestServer._live_claims`), the
relay's newest keyframe of the
primary video track (`StreamRelay.latest_keyframe`: the coded frame and its sequence
header, which the relay keeps anyway) is decoded by PyAV, scaled so its longest side is
at most 320 px (the display aspect ratio kept, never enlarged) and encoded as a JPEG by
Pillow, then uploaded. H.264, HEVC, AV1 and VP9 alike: whatever FFmpeg decodes.

Off the relay's path, with bounded CPU: one worker thread (PyAV and Pillow release the
GIL while they decode, scale and encode; the decoder itself runs single-threaded), at
most `MAX_PENDING` pictures queued, and a stream whose previous picture is still being
made or uploaded is skipped until it is done. A picture made starts the next one due at
once, not at the next tick: a process with many streams keeps each within the interval
as long as one thread can make them (a 720p H.264 keyframe takes ~16 ms: ~600 streams at
one picture per 10 s); past that, the least recently pictured go first. When the
keyframe has not changed since the last picture (a GOP longer than the interval), the
same JPEG is sent again without decoding, so rig's picture stays fresh (it serves one at
most 15 s old). A keyframe that does not decode fails that one picture; the stream is
tried again an interval later. A stream without video never gets one (rig then answers
1000).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from agent.memory import release_free_memory
from agent.probe import decode_one, open_decoder

if TYPE_CHECKING:
    from agent.media_queue import MediaMessage
    from agent.relay import StreamRelay

log = logging.getLogger(__name__)

INTERVAL = 10.0  # seconds between pictures of one stream (rig refuses more than 1 per 5 s)
TICK = 1.0  # how often the live streams are looked at (and after each picture made)
MAX_SIDE = 320  # px, the longest side (docs/agent-protocol.md#thumbnail-upload)
MAX_PENDING = 2  # pictures queued for the worker thread at once
JPEG_QUALITY = 80  # Pillow's scale; ~6-10 KB at 320x180
# A decoder refuses pictures above this many pixels (a hostile sequence header could
# announce a huge one): 8K UHD, the largest a service takes.
MAX_PIXELS = 7680 * 4320


@dataclass(frozen=True)
class Keyframe:
    """A keyframe as the relay has it: the message (its identity says whether the picture
    changed), the track's codec, its sequence header and the coded frame."""

    message: MediaMessage
    codec: str
    header: bytes | None
    frame: bytes


def picture_size(width: int, height: int, aspect: Fraction | None = None) -> tuple[int, int]:
    """The thumbnail's size: the picture as displayed (`aspect` is its sample aspect
    ratio: anamorphic video is shown wider than it is stored), longest side at most
    MAX_SIDE, never enlarged."""
    shown_w, shown_h = float(width), float(height)
    if aspect is not None and aspect > 0:
        if aspect > 1:
            shown_w *= float(aspect)
        else:
            shown_h /= float(aspect)
    scale = min(1.0, MAX_SIDE / max(shown_w, shown_h))
    return max(1, round(shown_w * scale)), max(1, round(shown_h * scale))


def make_thumbnail(keyframe: Keyframe) -> bytes:
    """The keyframe as a JPEG (runs in the worker thread); raises on undecodable input."""
    context = open_decoder(keyframe.codec, keyframe.header)
    if context.type != "video":
        raise ValueError(f"{keyframe.codec} is not video")
    context.thread_count = 1  # one core at most, and no frame-threading delay
    # No deblocking: invisible at 320 px, a tenth of an H.264 keyframe's decoding time.
    context.options = {"max_pixels": str(MAX_PIXELS), "skip_loop_filter": "all"}
    frames = decode_one(context, keyframe.frame)
    if not frames:
        raise ValueError("the keyframe decoded to no picture")
    frame = frames[0]
    aspect = context.sample_aspect_ratio
    width, height = picture_size(frame.width, frame.height, Fraction(aspect) if aspect else None)
    # swscale scales and converts to RGB in one step; "area" averages, as a downscale should.
    image = frame.to_image(width=width, height=height, interpolation="AREA")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _timed(keyframe: Keyframe) -> tuple[bytes | Exception, float]:
    """make_thumbnail in the worker thread: the JPEG (or why not) and the thread's CPU
    seconds it took."""
    started = time.thread_time()
    try:
        result: bytes | Exception = make_thumbnail(keyframe)
    except Exception as exc:  # undecodable input: reported, not raised
        result = exc
    release_free_memory()  # what the decoder freed, kept by this thread's arena
    return result, time.thread_time() - started


@dataclass
class _StreamState:
    """One live stream's pictures."""

    last_at: float = float("-inf")  # loop time of the last picture taken (or tried)
    busy: bool = False  # a picture is being made or uploaded
    keyframe: MediaMessage | None = None  # the keyframe last decoded (or tried)
    jpeg: bytes | None = None  # its picture (None: it did not decode)


Upload = Callable[[str, bytes], Awaitable[object]]


class Thumbnailer:
    """Makes and uploads the pictures of every live stream of the process."""

    def __init__(
        self,
        upload: Upload,
        interval: float = INTERVAL,
        max_pending: int = MAX_PENDING,
        tick: float = TICK,
    ) -> None:
        self._upload = upload
        self._interval = interval
        self._max_pending = max_pending
        self._tick = tick
        self._live: Callable[[], Iterable[tuple[str, StreamRelay]]] | None = None  # run()'s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thumbnail")
        self._streams: dict[str, _StreamState] = {}  # by claim id
        self._pending = 0  # pictures queued or being made in the worker thread
        self._tasks: set[asyncio.Task[None]] = set()
        self.made = 0
        self.failed = 0  # keyframes that did not decode
        self.upload_failures = 0
        self.cpu_seconds = 0.0  # the worker thread's, making pictures (agent/metrics.py)

    def tick(self, live: Iterable[tuple[str, StreamRelay]], now: float) -> None:
        """Start the pictures that are due among the live streams (claim id, relay); the
        least recently pictured first, so every stream gets its turn."""
        seen = set()
        due: list[tuple[float, str, _StreamState, Keyframe]] = []
        for claim_id, relay in live:
            seen.add(claim_id)
            state = self._streams.setdefault(claim_id, _StreamState())
            if state.busy or now - state.last_at < self._interval:
                continue
            keyframe = relay.latest_keyframe()
            if keyframe is not None:
                due.append((state.last_at, claim_id, state, keyframe))
        for claim_id in self._streams.keys() - seen:
            del self._streams[claim_id]  # the publish ended
        due.sort(key=lambda item: item[0])
        for _, claim_id, state, keyframe in due:
            if keyframe.message is state.keyframe:
                if state.jpeg is not None:  # the same picture: sent again, not decoded
                    state.last_at = now
                    self._start(claim_id, state, self._upload(claim_id, state.jpeg))
            elif self._pending < self._max_pending:
                try:
                    future = self._pool.submit(_timed, keyframe)
                except RuntimeError:  # closed
                    return
                self._pending += 1
                state.last_at = now
                state.keyframe, state.jpeg = keyframe.message, None
                self._start(claim_id, state, self._made(claim_id, keyframe, future))

    @property
    def pending(self) -> int:
        """Pictures queued for the worker thread or being made."""
        return self._pending

    async def run(self, live: Callable[[], Iterable[tuple[str, StreamRelay]]]) -> None:
        """Look at the live streams every `tick` seconds, and whenever a picture is made,
        until cancelled."""
        loop = asyncio.get_running_loop()
        self._live = live
        try:
            while True:
                self.tick(live(), loop.time())
                await asyncio.sleep(self._tick)
        finally:
            self._live = None

    async def close(self) -> None:
        """Stop: uploads in flight are cancelled, a picture being made is waited for."""
        self._live = None  # no new pictures from here
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def _start(self, claim_id: str, state: _StreamState, work: Awaitable[object]) -> None:
        state.busy = True

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # rig unreachable, say: the next one may get through
                self.upload_failures += 1
                log.debug("thumbnail of claim %s not sent: %s", claim_id, exc)
            finally:
                state.busy = False

        task = asyncio.get_running_loop().create_task(guarded(), name=f"thumbnail {claim_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _made(
        self, claim_id: str, keyframe: Keyframe, future: Future[tuple[bytes | Exception, float]]
    ) -> None:
        """The picture the worker thread is making: uploaded once made."""
        try:
            jpeg, cpu = await asyncio.wrap_future(future)
        finally:
            self._pending -= 1
            if self._live is not None:  # the thread is free: the next picture due
                self.tick(self._live(), asyncio.get_running_loop().time())
        self.cpu_seconds += cpu
        if isinstance(jpeg, Exception):  # a corrupt keyframe is the publisher's problem
            self.failed += 1
            why = str(jpeg)[:200]
            log.info("could not make a thumbnail of a %s keyframe: %s", keyframe.codec, why)
            return
        self.made += 1
        state = self._streams.get(claim_id)
        if state is None:
            return  # the publish ended meanwhile
        if state.keyframe is keyframe.message:
            state.jpeg = jpeg
        await self._upload(claim_id, jpeg)
