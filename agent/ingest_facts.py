"""What the heartbeat says about an ingest (docs/agent-protocol.md#heartbeat-health, `ingest`).

Three sources: the tag classifier (codec names, unclassified messages), the media
engine (`agent.probe`: profile, level, picture size, pixel format, sample rate,
channels, probed once per new sequence header from the track's next coded frame) and
the messages themselves (frame rate and keyframe interval from the primary video
track's timestamps, between two reports). The relay tells it what it sees; nothing here
is on the per-destination path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from agent.media_facts import AudioFacts, VideoFacts
from agent.tags import AUDIO, VIDEO, Kind, Tag

if TYPE_CHECKING:
    from agent.probe import Probe, Prober

# The same track facts for at most this many probes per track (a publisher could send a
# new sequence header with every frame).
MAX_PROBES_PER_TRACK = 16
# Frames of the primary video track a frame rate is measured over, at least.
MIN_FRAMES_MEASURED = 15
# The frame rates encoders use: a measured rate within 2 % is taken as one of them.
STANDARD_RATES = tuple(
    Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50",
                          "60000/1001", "60", "100", "120")
)  # fmt: skip


@dataclass
class _Track:
    """One track of the ingest."""

    codec: str | None = None
    header: bytes | None = None  # the sequence header's payload, as probed
    probe_pending: bool = False  # wants the next coded frame
    probes: int = 0
    facts: Probe | None = None


@dataclass
class _Window:
    """Measurements since the last report."""

    frames: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    keyframes: list[int] = field(default_factory=list)

    def frame_rate(self) -> float:
        """Frames per second of media time (0 without two frames)."""
        if self.frames > 1 and self.first_ts is not None and self.last_ts is not None:
            span = self.last_ts - self.first_ts
            if span > 0:
                return round((self.frames - 1) * 1000 / span, 2)
        return 0.0


class IngestFacts:
    """Facts about one ingest's tracks, for the heartbeat."""

    def __init__(self, prober: Prober | None) -> None:
        self._prober = prober
        self._tracks: dict[tuple[int, int], _Track] = {}  # by (media, track id)
        self._window = _Window()
        self._whole = _Window()  # every window so far, added up (keyframes not kept)
        self._keyframe_interval: float | None = None
        self._last_keyframe: int | None = None  # its timestamp, across reports
        self.unclassified = 0

    def sequence_header(self, tag: Tag, body: bytes) -> None:
        """A sequence header: a new one is probed with the track's next coded frame."""
        for track in tag.tracks:
            state = self._tracks.setdefault((tag.media, track.id), _Track())
            state.codec = track.codec
            payload = body[track.start : track.end]
            if payload != state.header:
                state.header = payload
                state.probe_pending = track.codec is not None

    def frame(self, tag: Tag, body: bytes) -> bool:
        """A coded frame (probed if its track waits for one; for video, a keyframe).
        True when the tag's track needs nothing more: its next frames can skip this."""
        settled = True
        for track in tag.tracks:
            state = self._tracks.get((tag.media, track.id))
            if state is None:
                # A codec without sequence headers (MP3, Speex, VP6...): probe its frames.
                state = self._tracks[(tag.media, track.id)] = _Track(
                    codec=track.codec, probe_pending=track.codec is not None
                )
            if not state.probe_pending:
                continue
            if tag.media == VIDEO and tag.kind is not Kind.KEYFRAME:
                settled = False
                continue
            state.probe_pending = False
            if self._prober is None or state.probes >= MAX_PROBES_PER_TRACK:
                continue
            state.probes += 1
            assert state.codec is not None
            self._prober.submit(
                state.codec,
                state.header,
                body[track.start : track.end],
                functools.partial(self._probed, state),
            )
        return settled

    def count_frame(self, timestamp: int, keyframe: bool = False) -> None:
        """A frame of the primary video track, for the measured frame rate."""
        window = self._window
        window.frames += 1
        if window.first_ts is None:
            window.first_ts = timestamp
        window.last_ts = timestamp
        if keyframe:
            window.keyframes.append(timestamp)

    def report(self, primary_video: int | None, final: bool = False) -> dict[str, object]:
        """The facts, measurements since the last report
        (docs/agent-protocol.md#heartbeat-health, `ingest` without the byte counts); `final`: the
        frame rate over every report so far (the release's, for the session: a last,
        partial window says nothing of the whole)."""
        window, self._window = self._window, _Window()
        whole = self._whole
        whole.frames += window.frames
        if whole.first_ts is None:
            whole.first_ts = window.first_ts
        if window.last_ts is not None:
            whole.last_ts = window.last_ts
        frame_rate = (whole if final else window).frame_rate()
        self._measure_keyframe_interval(window)
        video = self._track(VIDEO, primary_video)
        audio = self._track(AUDIO, None)
        probe_v = video.facts if video else None
        probe_a = audio.facts if audio else None
        return {
            "frameRate": frame_rate,
            "keyframeInterval": self._keyframe_interval,
            "videoCodec": video.codec if video else None,
            "width": probe_v.width if probe_v else None,
            "height": probe_v.height if probe_v else None,
            "pixelFormat": probe_v.pixel_format if probe_v else None,
            "profile": probe_v.profile if probe_v else None,
            "level": probe_v.level if probe_v else None,
            "audioCodec": audio.codec if audio else None,
            "audioSampleRate": probe_a.sample_rate if probe_a else None,
            "audioChannels": probe_a.channels if probe_a else None,
            "unclassifiedMessages": self.unclassified,
        }

    def configuration(self, media: int, track_id: int) -> tuple[str | None, bytes | None]:
        """A track's codec and its latest sequence header (None, None: not seen)."""
        state = self._tracks.get((media, track_id))
        return (state.codec, state.header) if state else (None, None)

    def _measure_keyframe_interval(self, window: _Window) -> None:
        """The mean time between keyframes that ended in `window`, counting from the
        last keyframe of earlier windows, so a GOP longer than the heartbeat interval is
        measured too; between keyframes, the last value, or the time the current GOP has
        lasted when that is longer (the encoder stopped sending keyframes)."""
        keys = window.keyframes
        if self._last_keyframe is not None:
            keys = [self._last_keyframe, *keys]
        if not keys:
            return
        self._last_keyframe = keys[-1]
        if len(keys) > 1 and keys[-1] > keys[0]:
            self._keyframe_interval = round((keys[-1] - keys[0]) / (len(keys) - 1) / 1000, 2)
        elif self._keyframe_interval is not None and window.last_ts is not None:
            open_gop = round((window.last_ts - keys[-1]) / 1000, 2)
            self._keyframe_interval = max(self._keyframe_interval, open_gop)

    def slate_facts(self, primary_video: int | None) -> tuple[VideoFacts | None, AudioFacts | None]:
        """What a slate must match (agent/slate.py): the primary video track and the
        first audio track, as probed (codec, size, pixel format, profile, level; sample
        rate, channels) with the measured frame rate taken as the standard rate it is.
        What is not known yet is left to the slate's defaults; a track the ingest lacks
        is None."""
        video_track = self._track(VIDEO, primary_video)
        audio_track = self._track(AUDIO, None)
        video = audio = None
        if video_track is not None and video_track.codec is not None:
            probe = video_track.facts
            video = VideoFacts(
                video_track.codec,
                (probe.width if probe else None) or 0,  # 0: unknown, the slate's default
                (probe.height if probe else None) or 0,
                standard_rate(self.frame_rate()),
                probe.pixel_format if probe else None,
                probe.profile if probe else None,
                probe.level if probe else None,
            )
        if audio_track is not None and audio_track.codec is not None:
            probe = audio_track.facts
            audio = AudioFacts(
                audio_track.codec,
                (probe.sample_rate if probe else None) or 48000,
                (probe.channels if probe else None) or 2,
                profile=probe.profile if probe else None,
            )
        return video, audio

    def probed(self, primary_video: int | None) -> bool:
        """Whether every reported track has been probed and, with video, its frame rate
        measured: the slate facts will not get better."""
        tracks = [self._track(VIDEO, primary_video), self._track(AUDIO, None)]
        if any(t is not None and t.codec is not None and t.facts is None for t in tracks):
            return False
        return tracks[0] is None or self.frame_rate() is not None

    def frame_rate(self) -> float | None:
        """The primary video track's frame rate: measured since the last report, or
        the last one measured."""
        for window in (self._window, self._whole):
            if window.frames >= MIN_FRAMES_MEASURED and window.frame_rate():
                return window.frame_rate()
        return None

    def _track(self, media: int, wanted: int | None) -> _Track | None:
        """The track reported for `media`: `wanted`, else the lowest track id."""
        tracks = sorted((key[1], state) for key, state in self._tracks.items() if key[0] == media)
        chosen = next((state for tid, state in tracks if tid == wanted), None)
        return chosen or (tracks[0][1] if tracks else None)

    def _probed(self, state: _Track, result: Probe | None) -> None:
        if result is not None:
            state.facts = result


def standard_rate(measured: float | None) -> Fraction | None:
    """The standard frame rate within 2 % of a measured one (29.97 is 30000/1001), else
    the measured rate to the nearest frame; None when not measured."""
    if not measured:
        return None
    for rate in STANDARD_RATES:
        if abs(measured - rate) <= rate * Fraction(2, 100):
            return rate
    return Fraction(round(measured)) or None
