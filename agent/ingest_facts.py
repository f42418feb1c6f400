"""What the heartbeat says about an ingest (CONTRACTS.md §1, `ingest`).

Three sources: the tag classifier (codec names, unclassified messages), the media
engine (`agent.probe`: profile, level, picture size, pixel format, sample rate,
channels, probed once per new sequence header from the track's next coded frame) and
the messages themselves (frame rate and keyframe interval from the primary video
track's timestamps, between two reports). The relay tells it what it sees; nothing here
is on the per-destination path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.tags import AUDIO, VIDEO, Kind, Tag

if TYPE_CHECKING:
    from agent.probe import Probe, Prober

# The same track facts for at most this many probes per track (a publisher could send a
# new sequence header with every frame).
MAX_PROBES_PER_TRACK = 16


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
                lambda result, state=state: self._probed(state, result),
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
        """The facts, measurements since the last report (CONTRACTS.md §1 `ingest`
        without the byte counts); `final`: the frame rate over every report so far (the
        release's, for the session: a last, partial window says nothing of the whole)."""
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

    def _track(self, media: int, wanted: int | None) -> _Track | None:
        """The track reported for `media`: `wanted`, else the lowest track id."""
        tracks = sorted((key[1], state) for key, state in self._tracks.items() if key[0] == media)
        chosen = next((state for tid, state in tracks if tid == wanted), None)
        return chosen or (tracks[0][1] if tracks else None)

    def _probed(self, state: _Track, result: Probe | None) -> None:
        if result is not None:
            state.facts = result
