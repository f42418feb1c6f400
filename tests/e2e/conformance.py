"""What "relayed unchanged" means, as checks: what the publisher sent against what arrived.

Every check takes the publisher's messages as recorded on the wire (`tcp_proxy` +
`rtmp_capture`, independent of the agent) and one destination's view:

- `assert_unchanged`: the agent's messages to a destination (also recorded on the
  wire) are the publisher's relayed messages (audio, video, data), same bytes, same
  timestamps, same order, nothing added, nothing lost. Not compared: the transport
  (chunk size, chunk stream ids, message stream id, how messages are cut into
  chunks, aggregate messages, which are compared as the messages they carry) and the
  `@setDataFrame` wrapper of data messages (an instruction to the server receiving
  them, see `Message.body`).
- `assert_prefix`: the same for a publish cut short: the start of the publisher's
  messages, unchanged.
- `assert_joined_late`: the rule for a destination that reconnects while the stream
  runs (or is added live): it opens with the publisher's `onMetaData` and the sequence
  header of every track (and video metadata such as colorInfo) in force where it
  joins, bytes unchanged, then gets the publisher's messages from there to the end,
  bytes and timestamps unchanged, video from a keyframe on (video frames before it
  cannot be decoded; audio may start earlier). The opening messages' timestamps are not
  compared: a relay may stamp them with the join time. That it resumes at the newest
  keyframe (issue 11, item 3) is checked by the scenarios that change the
  configuration mid-stream. A destination's first connection, even seconds late (within
  the queue bounds), gets the whole stream: `assert_unchanged`.
- `assert_nginx_recording`: what nginx-rtmp 1.2.2's recorder (`record all`) wrote.
- `assert_same_demux`: what FFmpeg 8's demuxer reads from what a destination received,
  packet by packet, against the same demuxer reading the publisher's messages; and
  that every stream decodes as well as the publisher's does.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from .flvtools import FlvFile
from .rtmp_capture import (
    AUDIO,
    DATA_AMF0,
    VIDEO,
    Message,
    data_name,
    fourcc,
    is_ex_audio,
    is_ex_video,
    is_keyframe,
    is_sequence_header,
    kind_name,
)


def _first_difference(got: Sequence, want: Sequence) -> int:
    return next(
        (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
        min(len(got), len(want)),
    )


def _around(messages: Sequence[Message], i: int) -> str:
    if i >= len(messages):
        return "(nothing: the stream ended)"
    return ", ".join(m.describe() for m in messages[i : i + 3])


def _tally(keys: collections.Counter, by_key: dict) -> str:
    kinds = collections.Counter()
    for key, count in keys.items():
        kinds[kind_name(by_key[key])] += count
    return ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common()) or "nothing"


def difference_report(sent: Sequence[Message], arrived: Sequence[Message]) -> str:
    """What differs between two message lists, for a human: first difference, and what
    was lost or added by kind."""
    want, got = [m.key for m in sent], [m.key for m in arrived]
    i = _first_difference(got, want)
    by_key = {m.key: m for m in [*sent, *arrived]}
    lost = collections.Counter(want) - collections.Counter(got)
    added = collections.Counter(got) - collections.Counter(want)
    return (
        f"{len(arrived)} messages arrived, {len(sent)} sent; first difference at #{i}:"
        f" sent [{_around(sent, i)}], arrived [{_around(arrived, i)}];"
        f" lost: {_tally(lost, by_key)}; added: {_tally(added, by_key)}"
    )


def assert_unchanged(sent: Sequence[Message], arrived: Sequence[Message], where: str) -> None:
    """Strict: the destination got exactly the publisher's relayed messages."""
    if [m.key for m in arrived] != [m.key for m in sent]:
        raise AssertionError(f"{where}: not relayed unchanged: {difference_report(sent, arrived)}")


def assert_prefix(sent: Sequence[Message], arrived: Sequence[Message], where: str) -> None:
    """A publish cut short: the destination got the start of it, unchanged (the agent
    may not have received, or not yet relayed, the publisher's last messages)."""
    assert arrived, f"{where}: nothing arrived"
    if [m.key for m in arrived] != [m.key for m in sent[: len(arrived)]]:
        raise AssertionError(
            f"{where}: not the start of the publisher's stream: {difference_report(sent, arrived)}"
        )


def track_of(m: Message) -> tuple:
    """Which track a message belongs to: its type, and for Enhanced RTMP its FourCC
    and multitrack track id."""
    p = m.payload
    multitrack = (is_ex_video(m) and p[0] & 0x0F == 6) or (is_ex_audio(m) and p[0] & 0x0F == 5)
    # Multitrack: AvMultitrackType|PacketType, FourCC, then the (first) track's id.
    track_id = p[6] if multitrack and len(p) > 6 else 0
    return (m.type, fourcc(m), track_id)


def is_video_metadata(m: Message) -> bool:
    """Enhanced RTMP video metadata (PacketType 4: colorInfo, HDR)."""
    return is_ex_video(m) and m.payload[0] & 0x0F == 4


def opening_for(sent: Sequence[Message], k: int) -> list[Message]:
    """What a destination joining at sent[k] must get first: the latest onMetaData,
    then the latest sequence header of each track and the latest video metadata."""
    metadata = None
    headers: dict[tuple, Message] = {}
    for m in sent[:k]:
        if m.type == DATA_AMF0 and data_name(m) == "onMetaData":
            metadata = m
        elif is_sequence_header(m):
            headers[track_of(m)] = m
        elif is_video_metadata(m):
            headers[("metadata", *track_of(m))] = m
    return ([metadata] if metadata else []) + list(headers.values())


def _is_configuration(m: Message) -> bool:
    return (
        (m.type == DATA_AMF0 and data_name(m) == "onMetaData")
        or is_sequence_header(m)
        or (is_video_metadata(m))
    )


def joined_tail(sent: Sequence[Message], j: int) -> list[Message]:
    """The publisher's messages from #j on, as a destination joining there gets them:
    video frames before the first keyframe left out (they cannot be decoded without
    it); audio, data and configuration kept in place."""
    tail: list[Message] = []
    key_seen = False
    for m in sent[j:]:
        key_seen = key_seen or is_keyframe(m)
        configuration = is_sequence_header(m) or is_video_metadata(m)
        if m.type == VIDEO and not key_seen and not configuration:
            continue
        tail.append(m)
    return tail


def assert_joined_late(sent: Sequence[Message], arrived: Sequence[Message], where: str) -> int:
    """A destination that joined a running stream (see the module's rule); returns the
    index of the publisher's message where its video resumed (for audio only: where it
    joined)."""
    arrived_keys = [m.key for m in arrived]
    wrong_opening = None
    for j in range(len(sent) + 1):
        tail = joined_tail(sent, j)
        if len(tail) > len(arrived) or arrived_keys[len(arrived) - len(tail) :] != [
            m.key for m in tail
        ]:
            continue
        opening = arrived[: len(arrived) - len(tail)]
        want = opening_for(sent, j)
        bodies = [m.body for m in opening]
        if bodies[:1] == [m.body for m in want[:1]] and sorted(bodies) == sorted(
            m.body for m in want
        ):
            keyframe = next((m for m in tail if is_keyframe(m)), None)
            return sent.index(keyframe) if keyframe is not None else j
        if not all(_is_configuration(m) for m in opening):
            continue  # media before the join point: not an opening
        wrong_opening = wrong_opening or (
            f"{where}: joined at #{j} ({_around(sent, j)}) but opened with"
            f" [{', '.join(m.describe() for m in opening)}], want the metadata and sequence"
            f" headers in force there: [{', '.join(m.describe() for m in want)}]"
        )
    raise AssertionError(
        wrong_opening
        or f"{where}: what arrived is not the publisher's stream from some point to its end,"
        f" video from a keyframe, after the configuration in force there:"
        f" {difference_report(sent, arrived)}"
    )


# --- nginx-rtmp's recorder


def nginx_expected(sent: Sequence[Message]) -> list[Message]:
    """What nginx-rtmp 1.2.2 (`record all`) records of a stream sent to it unchanged.

    Its recorder writes only audio and video; it writes the first AVC and AAC sequence
    headers it saw at the start of the file (and no later one), in place of the
    publisher's; it skips video until a key frame, read from the legacy FrameType
    nibble. So an Enhanced RTMP video track is not recorded at all (its first byte has
    IsExHeader set: nginx reads FrameType 9, never a key frame); enhanced audio (Opus)
    it records as opaque tags.
    """
    out: list[Message] = []
    video_started = False
    for m in sent:
        if m.type not in (AUDIO, VIDEO):
            continue
        legacy_header = is_sequence_header(m) and not (is_ex_audio(m) or is_ex_video(m))
        if legacy_header:
            continue
        if m.type == VIDEO:
            if is_ex_video(m):
                continue
            video_started = video_started or is_keyframe(m)
            if not video_started:
                continue
        out.append(m)
    return out


def assert_nginx_recording(recording: FlvFile, sent: Sequence[Message], where: str) -> None:
    """The recording holds exactly what nginx records of the publisher's stream (see
    `nginx_expected`), bytes and timestamps unchanged, in order; its sequence headers
    are the publisher's."""
    assert not recording.truncated, f"{where}: {recording.path.name} ends inside a tag"
    want = nginx_expected(sent)
    legacy_headers = {
        (m.type, m.key[2])
        for m in sent
        if is_sequence_header(m) and not (is_ex_audio(m) or is_ex_video(m))
    }
    tags = recording.media
    # nginx writes the first AVC/AAC header it knows at the start of the file (AAC twice)
    # and no later one: they must be the publisher's.
    got_headers = {(t.type, t.sha) for t in tags if t.is_sequence_header}
    assert got_headers <= legacy_headers, (
        f"{where}: nginx recorded sequence headers that are not the publisher's"
    )
    assert {kind for kind, _ in got_headers} == {kind for kind, _ in legacy_headers}, (
        f"{where}: nginx recorded no sequence header for some track"
    )
    frames = [t for t in tags if not t.is_sequence_header]
    got = [(t.type, t.timestamp, t.sha) for t in frames]
    expected = [m.key for m in want]
    if got != expected:
        i = _first_difference(got, expected)
        raise AssertionError(
            f"{where}: nginx recorded {len(got)} media tags, want {len(expected)};"
            f" first difference at #{i}: got {got[i : i + 2]}, want"
            f" [{_around(want, i)}]"
        )


# --- FFmpeg 8 (PyAV) as a receiver


def assert_same_demux(received: dict, reference: dict, where: str, clean: bool = True) -> None:
    """FFmpeg's demuxer read the same streams and packets from the destination as from
    the publisher's messages, and every stream decodes as well as the publisher's
    (with `clean`: without a single error, every audio and video stream giving frames).
    Both reports come from `pyav_receiver.read_flv`."""
    assert received["streams"] == reference["streams"], (
        f"{where}: streams differ: got {received['streams']}, want {reference['streams']}"
    )
    got, want = received["packets"], reference["packets"]
    if got != want:
        i = _first_difference(got, want)
        raise AssertionError(
            f"{where}: FFmpeg read {len(got)} packets, the publisher's stream has"
            f" {len(want)}; first difference at #{i}: got {got[i : i + 1]}, want {want[i : i + 1]}"
        )
    assert received["ended_by"] == reference["ended_by"], (
        f"{where}: the read ended by {received['ended_by']}, want {reference['ended_by']}"
    )
    assert received["decoded"] == reference["decoded"], (
        f"{where}: decoding differs: got {received['decoded']}, want {reference['decoded']}"
    )
    if clean:
        for index, result in reference["decoded"].items():
            assert result["errors"] == 0, f"{where}: stream {index} does not decode: {result}"
            assert result["frames"] > 0, f"{where}: stream {index} decoded no frame"
