"""Integrity of a relayed stream: a destination's recording against what the publisher sent.

Each publisher tees exactly what it sends into a local FLV file (ffmpeg's `tee` muxer),
so the reference is per packet. Every audio and video tag is identified by its type,
timestamp and the SHA-1 of its body. The receiver (nginx-rtmp `record all`) rebases the
timestamps of its file to the first frame it recorded, so each track of a recording is
matched at the constant offset that aligns the most tags (codec sequence headers, which a
relay may repeat, and script tags are left out). Then, per track:

- head: tags sent before the first recorded one (publish start until the first tag);
- mid: tags between the first and the last recorded one that are missing (gaps);
- tail: tags sent after the last recorded one;

each as milliseconds of media (the sum of the lost tags' durations). Recorded tags that
were never sent (corrupted or foreign bytes) and tags out of order are counted too.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.flv import AUDIO, VIDEO
from bench.fixture import read_tags

TRACKS = {"video": VIDEO, "audio": AUDIO}


def is_sequence_header(type_id: int, body: bytes) -> bool:
    """AVC/HEVC decoder configuration or AAC AudioSpecificConfig (FLV spec §E.4.2, §E.4.3)."""
    if len(body) < 2:
        return True
    if type_id == VIDEO:
        return body[0] & 0x0F in (7, 12) and body[1] == 0
    if type_id == AUDIO:
        return body[0] >> 4 == 10 and body[1] == 0
    return False


def frames(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """The (timestamp, body SHA-1) of every audio and video frame, by track."""
    out: dict[str, list[tuple[int, bytes]]] = {name: [] for name in TRACKS}
    names = {type_id: name for name, type_id in TRACKS.items()}
    for type_id, timestamp, body in read_tags(path):
        name = names.get(type_id)
        if name is not None and not is_sequence_header(type_id, body):
            out[name].append((timestamp, hashlib.sha1(body, usedforsecurity=False).digest()))
    return out


@dataclass
class SentTrack:
    """One track as the publisher sent it."""

    timestamps: list[int]
    index: dict[tuple[int, bytes], int]  # (timestamp, sha1) -> position
    by_sha: dict[bytes, list[int]]  # sha1 -> positions (a looped fixture repeats bodies)
    durations: list[int]


@dataclass
class Sent:
    """What one publisher sent: its teed FLV file, indexed per track."""

    path: Path
    tracks: dict[str, SentTrack]

    @classmethod
    def load(cls, path: Path) -> Sent:
        """Parse and index the teed file."""
        tracks = {}
        for name, items in frames(path).items():
            timestamps = [ts for ts, _ in items]
            deltas = [b - a for a, b in itertools.pairwise(timestamps)]
            typical = int(statistics.median(deltas)) if deltas else 0
            by_sha: dict[bytes, list[int]] = {}
            for i, (_, sha) in enumerate(items):
                by_sha.setdefault(sha, []).append(i)
            tracks[name] = SentTrack(
                timestamps,
                {item: i for i, item in enumerate(items)},
                by_sha,
                [*deltas, typical],
            )
        return cls(path, tracks)


@dataclass
class TrackLoss:
    """Losses of one track at one destination, in tags and in milliseconds of media."""

    sent: int = 0
    received: int = 0
    head_ms: int = 0
    mid_ms: int = 0
    tail_ms: int = 0
    head_tags: int = 0
    mid_tags: int = 0
    tail_tags: int = 0
    foreign: int = 0  # recorded frames that were never sent
    out_of_order: int = 0  # recorded frames not after the previous one (or repeated)


@dataclass
class Integrity:
    """One destination's recording(s) against what the publisher sent."""

    recordings: list[str]
    video: TrackLoss = field(default_factory=TrackLoss)
    audio: TrackLoss = field(default_factory=TrackLoss)

    @property
    def ok(self) -> bool:
        """Nothing lost, corrupted or reordered anywhere (head included)."""
        return self.clean_after_head and self.video.head_tags == 0 and self.audio.head_tags == 0

    @property
    def clean_after_head(self) -> bool:
        """No mid-stream or tail loss, nothing corrupted or reordered."""
        return bool(self.recordings) and all(
            t.mid_tags == 0 and t.tail_tags == 0 and t.foreign == 0 and t.out_of_order == 0
            for t in (self.video, self.audio)
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _align(sent: Sent, recorded: dict[str, list[tuple[int, bytes]]]) -> dict[str, list[int | None]]:
    """Sent positions of one recording's frames, per track, at the one timestamp offset
    (shared by audio and video: a receiver rebases both alike) that matches the most."""
    offsets: set[int] = set()
    for name, frames_ in recorded.items():
        track = sent.tracks[name]
        for ts, sha in frames_[:2]:  # the first frame may itself be foreign
            offsets.update(track.timestamps[i] - ts for i in track.by_sha.get(sha, []))
    best: dict[str, list[int | None]] = {n: [None] * len(f) for n, f in recorded.items()}
    best_count = 0
    # A looped fixture repeats bodies every loop: prefer the smallest shift among equals.
    for offset in sorted(offsets, key=lambda o: (abs(o), o))[:32]:
        positions = {
            name: [sent.tracks[name].index.get((ts + offset, sha)) for ts, sha in frames_]
            for name, frames_ in recorded.items()
        }
        count = sum(p is not None for track in positions.values() for p in track)
        if count > best_count:
            best, best_count = positions, count
    return best


def check_track(track: SentTrack, aligned: list[list[int | None]]) -> TrackLoss:
    """One track: the sent positions of each recording's frames (recordings in order)."""
    loss = TrackLoss(sent=len(track.timestamps))
    seen: Counter[int] = Counter()
    for positions in aligned:
        loss.received += len(positions)
        previous = -1
        for position in positions:
            if position is None:
                loss.foreign += 1
                continue
            if position <= previous:
                loss.out_of_order += 1
            previous = max(previous, position)
            seen[position] += 1
    if not seen:
        loss.head_tags = len(track.timestamps)
        loss.head_ms = sum(track.durations)
        return loss
    first, last = min(seen), max(seen)
    for i, duration in enumerate(track.durations):
        if i in seen:
            continue
        if i < first:
            loss.head_tags += 1
            loss.head_ms += duration
        elif i > last:
            loss.tail_tags += 1
            loss.tail_ms += duration
        else:
            loss.mid_tags += 1
            loss.mid_ms += duration
    return loss


def check(sent: Sent, recordings: list[Path]) -> Integrity:
    """One destination's recordings (oldest first; a reconnect makes a new file)."""
    result = Integrity([str(p) for p in recordings])
    aligned = [_align(sent, frames(p)) for p in recordings]
    for name in TRACKS:
        setattr(result, name, check_track(sent.tracks[name], [a[name] for a in aligned]))
    return result
