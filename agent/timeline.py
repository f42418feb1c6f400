"""One broadcast's timestamps, continuous whatever source feeds it (sans-I/O).

A destination must see one publish whose timestamps never step back and never leave a
hole, while what feeds it changes: the original publisher, the slate (`agent/slate.py`),
the publisher back on a new connection, a backup publisher. Each source has its own
clock, starting anywhere (OBS starts at 0 on every connection). `Timeline` maps every
source's timestamps onto the broadcast's: the first source keeps its own (the relay is
unchanged until something happens), and each later source is shifted so that the
message it takes over with (its first keyframe) comes one frame interval after the
last message sent. One shift per source for all of its tracks keeps its audio and video
in step.

RTMP timestamps are 32-bit milliseconds that wrap after 49.7 days (RTMP spec 1.0 §5.3.1
and §6.1.1 use serial-number arithmetic): a source's timestamps are unwrapped by the
signed difference from its previous message, and the broadcast's own timeline is kept
unwrapped and sent modulo 2**32, so a destination sees a wrap only where an ordinary
long publish would have one.

What it does with a source's own irregularities, decided here (nginx-rtmp passes them
through, FFmpeg's muxers clamp): a message older than the last one sent on its track
(audio a few ms behind video after a switch, a publisher's jitter) is sent at that
track's last timestamp (never back); an audio or video track whose source clock steps
back by more than `max_step_back_ms` from that track's own last message is a new clock,
treated as a switch (compared per track, so audio and video interleaved a second or
more apart, as a GStreamer pipeline starting with audio sends them, are no restart; a
data message, such as an onMetaData stamped 0 in mid-stream, never restarts the clock);
a jump forward is passed through (it is the publisher's own hole, which a byte-for-byte
relay keeps).
"""

from __future__ import annotations

from typing import Final

AUDIO, VIDEO = 8, 9
WRAP: Final = 1 << 32
MASK: Final = WRAP - 1
_HALF: Final = 1 << 31
MAX_STEP_MS: Final = 1000  # a switch never leaves more than this between two messages


def serial_delta(new: int, old: int) -> int:
    """`new - old` between two 32-bit RTMP timestamps, in serial-number arithmetic: the
    shortest way round, so a wrap reads as a small step forward."""
    delta = (new - old) & MASK
    return delta - WRAP if delta >= _HALF else delta


class Timeline:
    """The broadcast's output timestamps (one per stream key, shared by its destinations:
    they all get the same messages).

    `place(type_id, timestamp, now)` maps one message of the current source; `switch()`
    says the next source takes over. The clock (`now`, seconds, monotonic) is passed in
    and only recorded: `last_at` is when the last message went out, which is where a
    slate's real-time playing starts (`SlateLoop(slate, start=timeline.last_at)`).
    """

    def __init__(self, step_ms: int = 33, max_step_back_ms: int = 1000) -> None:
        self.step_ms = _checked_step(step_ms)
        self.max_step_back_ms = max_step_back_ms
        self.last_output: int | None = None  # largest timestamp sent so far, unwrapped
        self.last_at: float | None = None  # clock when the last message was placed
        self.switches = 0  # sources after the first (and source clocks that restarted)
        self._track_last: dict[int, int] = {}  # per message type: last timestamp, unwrapped
        self._offset = 0  # current source's unwrapped time + offset = broadcast time
        self._source_raw: int | None = None  # current source's last 32-bit timestamp
        self._source_time = 0  # ... and the same, unwrapped
        self._source_tracks: dict[int, int] = {}  # per type: its last source time, unwrapped
        self._anchor: int | None = None  # source timestamp the pending switch happens at
        self._step = self.step_ms

    def switch(self, at: int | None = None, step_ms: int | None = None) -> None:
        """Another source takes over: the relay switches at a keyframe whose timestamp in
        the new source's clock is `at` (None: whatever message of it is placed first).
        That message is placed `step_ms` (one frame interval; default the timeline's)
        after the last one sent; the new source's earlier messages (its sequence headers)
        go out at their track's last timestamp."""
        self._step = self.step_ms if step_ms is None else _checked_step(step_ms)
        self._source_raw = None
        self._anchor = None if at is None else at & MASK
        self.switches += 1

    def place(self, type_id: int, timestamp: int, now: float) -> int:
        """The broadcast's 32-bit timestamp for a message of the current source
        (`type_id`: 8 audio, 9 video, 18 data; each type is a track of its own)."""
        raw = timestamp & MASK
        if self._source_raw is None:
            self._start_source(raw)
        else:
            source_time = self._source_time + serial_delta(raw, self._source_raw)
            track_time = self._source_tracks.get(type_id)
            if (
                track_time is not None
                and source_time < track_time - self.max_step_back_ms
                and type_id in (VIDEO, AUDIO)
            ):
                # The source's clock restarted (a new clock in the same connection).
                self._source_raw = None
                self._anchor = None
                self._step = self.step_ms
                self.switches += 1
                self._start_source(raw)
            else:
                self._source_time = source_time
                self._source_raw = raw
        self._source_tracks[type_id] = self._source_time
        output = self._source_time + self._offset
        last = self._track_last.get(type_id)
        if last is not None and output < last:
            output = last
        self._track_last[type_id] = output
        if self.last_output is None or output > self.last_output:
            self.last_output = output
        self.last_at = now
        return output & MASK

    def _start_source(self, raw: int) -> None:
        """Fix the offset of a source from its first message (or the switch's `at`)."""
        anchor = raw if self._anchor is None else self._anchor
        self._source_raw = raw
        self._source_tracks.clear()
        if self.last_output is None:
            # The first source of the broadcast keeps its timestamps, wrapped as they are.
            self._source_time = raw
            self._offset = 0
            return
        self._source_time = anchor + serial_delta(raw, anchor)
        self._offset = self.last_output + self._step - anchor


def _checked_step(step_ms: int) -> int:
    if not 0 <= step_ms <= MAX_STEP_MS:
        raise ValueError(f"step of {step_ms} ms: a switch step is 0 to {MAX_STEP_MS} ms")
    return step_ms
