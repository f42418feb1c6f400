"""What an RTMP audio, video or data message is, read from its first bytes (sans-I/O).

An RTMP media message body is an FLV tag body (FLV spec v10.1 §E.4.2, §E.4.3). The relay
forwards every body unchanged; this module only *names* each one, so that the relay can
keep what a (re)connecting destination needs (the latest metadata and sequence headers
of every track, media from a video keyframe) and the media engine can probe new codec
configurations. It never changes, copies or rejects a body: whatever it cannot name is
classified `Kind.UNKNOWN` (the relay still forwards it and counts it).

Layouts, from the specifications and checked against FFmpeg's `libavformat/flvdec.c`
(`flv_read_packet`, `flv_parse_mod_ex_data`) and `flvenc.c`:

- legacy audio (FLV spec §E.4.2.1 AUDIODATA): SoundFormat (4 bits), rate, size, type;
  AAC adds AACPacketType (0 sequence header, 1 raw);
- legacy video (FLV spec §E.4.3.1 VIDEODATA): FrameType (4 bits), CodecID (4 bits); AVC
  adds AVCPacketType (0 sequence header, 1 NALU, 2 end of sequence) and a 24-bit
  composition time. CodecID 12 is HEVC in the same layout (not in the Adobe spec; the
  "FLV HEVC" extension Chinese CDNs and FFmpeg forks used before Enhanced RTMP);
- Enhanced RTMP v1/v2 (veovera/enhanced-rtmp, `enhanced-rtmp-v2.md`): "Enhanced Video"
  (IsExVideoHeader bit, VideoPacketType, ModEx, VideoFourCc, Multitrack with
  AvMultitrackType OneTrack / ManyTracks / ManyTracksManyCodecs), "Enhanced Audio"
  (SoundFormat 9 = ExHeader, AudioPacketType, AudioFourCc, MultichannelConfig,
  Multitrack) and "Metadata Frame" (VideoPacketType.Metadata carrying colorInfo);
- script data (FLV spec §E.4.4): an AMF0 string naming the handler (`onMetaData`,
  `onCuePoint`, `onTextData`...), after `@setDataFrame` when a publisher sends it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["AUDIO", "DATA", "DATA_AMF3", "VIDEO", "Kind", "Tag", "Track", "classify"]

# RTMP message type ids (= FLV TagType, FLV spec §E.4.1).
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
DATA: Final = 18

#: Tracks read from one multitrack message at most: more is not a real stream.
MAX_TRACKS: Final = 64


class Kind(enum.IntEnum):
    """What a message carries."""

    #: Codec configuration: AVC/HEVC/AV1/VP9 configuration record, AAC
    #: AudioSpecificConfig, OpusHead... (also MPEG2TSSequenceStart).
    SEQUENCE_HEADER = 1
    #: Enhanced audio MultichannelConfig: channel order of a track (replayed like a
    #: sequence header).
    CHANNEL_CONFIG = 2
    #: onMetaData (script data) or enhanced video Metadata (colorInfo).
    METADATA = 3
    #: A video keyframe: a destination can start here.
    KEYFRAME = 4
    #: Any other coded media: video inter frames, audio frames.
    FRAME = 5
    #: End of sequence (and the empty "audio silence" message, which Enhanced RTMP
    #: gives the same meaning).
    END_OF_SEQUENCE = 6
    #: Video info/command frame (client-side seeking): no media.
    COMMAND = 7
    #: Script data other than onMetaData: onCuePoint, onTextData, onCaption...
    SCRIPT = 8
    #: Not understood: forwarded unchanged and counted.
    UNKNOWN = 9


@dataclass(frozen=True, slots=True)
class Track:
    """One track's part of a message: its codec payload is `body[start:end]`."""

    id: int  # Enhanced RTMP trackId; 0 without multitrack
    codec: str | None  # FFmpeg's codec name (h264, hevc, av1, aac, opus...); None if unknown
    start: int
    end: int | None = None  # None: to the end of the body


@dataclass(frozen=True, slots=True)
class Tag:
    """The classifier's answer for one message."""

    kind: Kind
    media: int  # AUDIO, VIDEO or DATA (AMF0 and AMF3 script data alike)
    tracks: tuple[Track, ...] = ()
    name: str | None = None  # script data: the handler name

    @property
    def codec(self) -> str | None:
        """The first track's codec."""
        return self.tracks[0].codec if self.tracks else None


# Legacy CodecID (FLV spec §E.4.3.1) and SoundFormat (§E.4.2.1) -> FFmpeg codec names.
_LEGACY_VIDEO: Final = {2: "flv1", 3: "flashsv", 4: "vp6f", 5: "vp6a", 6: "flashsv2", 7: "h264"}
_LEGACY_HEVC: Final = 12
_AVC_LAYOUT: Final = frozenset((7, _LEGACY_HEVC))
_LEGACY_AUDIO: Final = {
    0: "pcm",
    1: "adpcm_swf",
    2: "mp3",
    3: "pcm_s16le",
    4: "nellymoser",
    5: "nellymoser",
    6: "nellymoser",
    7: "pcm_alaw",
    8: "pcm_mulaw",
    10: "aac",
    11: "speex",
    14: "mp3",
    15: None,  # device-specific sound
}
_LEGACY_AAC: Final = 10
_EX_HEADER: Final = 9  # SoundFormat.ExHeader: Enhanced Audio

# Enhanced RTMP v2, "Enhanced Video" VideoFourCc and "Enhanced Audio" AudioFourCc.
_VIDEO_FOURCC: Final = {
    b"avc1": "h264",
    b"hvc1": "hevc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
    b"vvc1": "vvc",
}
# Codecs whose CodedFrames carry a 24-bit composition time offset before the data.
_WITH_COMPOSITION_TIME: Final = frozenset(("h264", "hevc", "vvc"))
_AUDIO_FOURCC: Final = {
    b"mp4a": "aac",
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
}

# VideoFrameType (Enhanced RTMP v2 "Enhanced Video"; FLV spec §E.4.3.1 FrameType).
_KEY_FRAME: Final = 1
_COMMAND_FRAME: Final = 5

# VideoPacketType / AudioPacketType values.
_SEQUENCE_START: Final = 0
_CODED_FRAMES: Final = 1
_SEQUENCE_END: Final = 2
_CODED_FRAMES_X: Final = 3  # video only: composition time offset implied 0
_METADATA: Final = 4  # video: Metadata; audio: MultichannelConfig
_MPEG2TS_SEQUENCE_START: Final = 5  # video only; audio 5 is Multitrack
_VIDEO_MULTITRACK: Final = 6
_AUDIO_MULTITRACK: Final = 5
_MOD_EX: Final = 7

# AvMultitrackType.
_ONE_TRACK: Final = 0
_MANY_TRACKS: Final = 1
_MANY_TRACKS_MANY_CODECS: Final = 2

_UNKNOWN_AUDIO: Final = Tag(Kind.UNKNOWN, AUDIO)
_UNKNOWN_VIDEO: Final = Tag(Kind.UNKNOWN, VIDEO)
_UNKNOWN_DATA: Final = Tag(Kind.UNKNOWN, DATA)
_SILENCE: Final = Tag(Kind.END_OF_SEQUENCE, AUDIO)

# Legacy classifications are a function of the first byte or two: each computed once
# (only valid ones are kept, so the cache stays small whatever a publisher sends).
_legacy_video_tags: dict[bytes, Tag] = {}
_legacy_audio_tags: dict[bytes, Tag] = {}


def classify(type_id: int, body: bytes) -> Tag:
    """Name one RTMP message (type 8 audio, 9 video, 15/18 data); never raises."""
    if type_id == VIDEO:
        return _video(body)
    if type_id == AUDIO:
        return _audio(body)
    if type_id in (DATA, DATA_AMF3):
        return _script(body, type_id == DATA_AMF3)
    return Tag(Kind.UNKNOWN, type_id)


# ----------------------------------------------------------------------------- video


def _video(body: bytes) -> Tag:
    if not body:
        return _UNKNOWN_VIDEO
    first = body[0]
    if first & 0x80:
        return _enhanced_video(body, first)
    # AVC and legacy HEVC: the answer depends on two bytes (and needs five); the other
    # legacy codecs: on the first byte.
    if first & 0x0F in _AVC_LAYOUT:
        if len(body) < 5:
            return _legacy_video(body)
        key = body[:2]
    else:
        key = body[:1]
    tag = _legacy_video_tags.get(key)
    if tag is None:
        tag = _legacy_video(body)
        if tag.kind != Kind.UNKNOWN:
            _legacy_video_tags[key] = tag
    return tag


def _legacy_video(body: bytes) -> Tag:
    """FLV spec §E.4.3.1 VIDEODATA; AVC (and legacy HEVC) add AVCPacketType and
    CompositionTime (§E.4.3.1 AVCVIDEOPACKET). Depends on the first two bytes only."""
    frame_type, codec_id = body[0] >> 4, body[0] & 0x0F
    if frame_type == _COMMAND_FRAME:
        return Tag(Kind.COMMAND, VIDEO)
    if not 1 <= frame_type <= 4:
        return _UNKNOWN_VIDEO
    key = frame_type == _KEY_FRAME
    if codec_id in _AVC_LAYOUT:
        codec = "h264" if codec_id == 7 else "hevc"
        if len(body) < 5:  # AVCPacketType and CompositionTime
            return _UNKNOWN_VIDEO
        packet_type = body[1]
        if packet_type == 0:
            return Tag(Kind.SEQUENCE_HEADER, VIDEO, (Track(0, codec, 5),))
        if packet_type == 1:
            return Tag(Kind.KEYFRAME if key else Kind.FRAME, VIDEO, (Track(0, codec, 5),))
        if packet_type == 2:
            return Tag(Kind.END_OF_SEQUENCE, VIDEO, (Track(0, codec, 5),))
        return _UNKNOWN_VIDEO
    legacy = _LEGACY_VIDEO.get(codec_id)
    if legacy is None:
        return _UNKNOWN_VIDEO
    codec = legacy
    return Tag(Kind.KEYFRAME if key else Kind.FRAME, VIDEO, (Track(0, codec, 1),))


def _enhanced_video(body: bytes, first: int) -> Tag:
    """Enhanced RTMP v2, "Enhanced Video": ExVideoTagHeader then ExVideoTagBody."""
    frame_type = (first >> 4) & 0x07
    packet_type = first & 0x0F
    pos = _skip_mod_ex(body, 1, packet_type)
    if pos < 0:
        return _UNKNOWN_VIDEO
    if pos > 1:
        packet_type = body[pos - 1] & 0x0F
    if packet_type != _METADATA and frame_type == _COMMAND_FRAME:
        # A VideoCommand byte follows; the message carries no video.
        return Tag(Kind.COMMAND, VIDEO) if len(body) > pos else _UNKNOWN_VIDEO
    if packet_type in (_SEQUENCE_START, _MPEG2TS_SEQUENCE_START):
        kind = Kind.SEQUENCE_HEADER
    elif packet_type in (_CODED_FRAMES, _CODED_FRAMES_X):
        kind = Kind.KEYFRAME if frame_type == _KEY_FRAME else Kind.FRAME
    elif packet_type == _SEQUENCE_END:
        kind = Kind.END_OF_SEQUENCE
    elif packet_type == _METADATA:
        kind = Kind.METADATA  # "frameType ... should be ignored"
    elif packet_type == _VIDEO_MULTITRACK:
        return _multitrack(body, pos, VIDEO)
    else:
        return _UNKNOWN_VIDEO
    if len(body) < pos + 4:
        return _UNKNOWN_VIDEO
    codec = _VIDEO_FOURCC.get(body[pos : pos + 4])
    start = _payload_start(pos + 4, packet_type, codec)
    if start > len(body):
        return _UNKNOWN_VIDEO
    return Tag(kind, VIDEO, (Track(0, codec, start),))


def _payload_start(pos: int, packet_type: int, codec: str | None) -> int:
    # CodedFrames of AVC/HEVC/VVC start with an SI24 composition time offset.
    if packet_type == _CODED_FRAMES and codec in _WITH_COMPOSITION_TIME:
        return pos + 3
    return pos


# ----------------------------------------------------------------------------- audio


def _audio(body: bytes) -> Tag:
    if not body:
        # Enhanced RTMP v2 "Enhanced Audio", AudioPacketType: an empty audio message is
        # the "audio silence" message, which SequenceEnd has the meaning of.
        return _SILENCE
    first = body[0]
    if first >> 4 == _EX_HEADER:
        return _enhanced_audio(body, first)
    key = body[:2] if first >> 4 == _LEGACY_AAC else body[:1]
    tag = _legacy_audio_tags.get(key)
    if tag is None:
        tag = _legacy_audio(body)
        if tag.kind != Kind.UNKNOWN:
            _legacy_audio_tags[key] = tag
    return tag


def _legacy_audio(body: bytes) -> Tag:
    """FLV spec §E.4.2.1 AUDIODATA; AAC adds AACPacketType (§E.4.2.2 AACAUDIODATA).
    Depends on the first two bytes only."""
    sound_format = body[0] >> 4
    if sound_format == _LEGACY_AAC:
        if len(body) < 2:
            return _UNKNOWN_AUDIO
        if body[1] == 0:
            return Tag(Kind.SEQUENCE_HEADER, AUDIO, (Track(0, "aac", 2),))
        if body[1] == 1:
            return Tag(Kind.FRAME, AUDIO, (Track(0, "aac", 2),))
        return _UNKNOWN_AUDIO
    if sound_format not in _LEGACY_AUDIO:
        return _UNKNOWN_AUDIO  # 12, 13: reserved
    return Tag(Kind.FRAME, AUDIO, (Track(0, _LEGACY_AUDIO[sound_format], 1),))


def _enhanced_audio(body: bytes, first: int) -> Tag:
    """Enhanced RTMP v2, "Enhanced Audio": ExAudioTagHeader then ExAudioTagBody."""
    packet_type = first & 0x0F
    pos = _skip_mod_ex(body, 1, packet_type)
    if pos < 0:
        return _UNKNOWN_AUDIO
    if pos > 1:
        packet_type = body[pos - 1] & 0x0F
    if packet_type == _SEQUENCE_START:
        kind = Kind.SEQUENCE_HEADER
    elif packet_type == _CODED_FRAMES:
        kind = Kind.FRAME
    elif packet_type == _SEQUENCE_END:
        kind = Kind.END_OF_SEQUENCE
    elif packet_type == _METADATA:
        kind = Kind.CHANNEL_CONFIG  # AudioPacketType.MultichannelConfig
    elif packet_type == _AUDIO_MULTITRACK:
        return _multitrack(body, pos, AUDIO)
    else:
        return _UNKNOWN_AUDIO
    if len(body) < pos + 4:
        return _UNKNOWN_AUDIO
    return Tag(kind, AUDIO, (Track(0, _AUDIO_FOURCC.get(body[pos : pos + 4]), pos + 4),))


# ----------------------------------------------------------------------- shared parts


def _skip_mod_ex(body: bytes, pos: int, packet_type: int) -> int:
    """Skip ModEx blocks (packet type 7): the position after the last one's type byte,
    whose low nibble is the real packet type; -1 when truncated. Each block: size - 1
    (UI8; 255 means a UI16 size - 1 follows), the data, then ModExType << 4 | type."""
    end = len(body)
    while packet_type == _MOD_EX:
        if pos >= end:
            return -1
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > end:
                return -1
            size = int.from_bytes(body[pos : pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= end:
            return -1
        packet_type = body[pos] & 0x0F
        pos += 1
    return pos


def _multitrack(body: bytes, pos: int, media: int) -> Tag:
    """The Multitrack layout shared by audio and video (Enhanced RTMP v2, "Enhanced
    Video"/"Enhanced Audio" and "Multitrack Streaming via Enhanced RTMP"):

        AvMultitrackType << 4 | PacketType, [FOURCC unless ManyTracksManyCodecs],
        then per track: [FOURCC if ManyTracksManyCodecs], trackId (UI8),
        [sizeOfTrack (UI24) unless OneTrack], the track's payload.
    """
    end = len(body)
    if pos >= end:
        return _tag_unknown(media)
    multitrack_type, packet_type = body[pos] >> 4, body[pos] & 0x0F
    pos += 1
    frame_type = (body[0] >> 4) & 0x07
    kind = _multitrack_kind(media, packet_type, frame_type)
    if kind is None or multitrack_type > _MANY_TRACKS_MANY_CODECS:
        return _tag_unknown(media)
    fourccs = _VIDEO_FOURCC if media == VIDEO else _AUDIO_FOURCC
    codec = None
    if multitrack_type != _MANY_TRACKS_MANY_CODECS:
        if end < pos + 4:
            return _tag_unknown(media)
        codec = fourccs.get(body[pos : pos + 4])
        pos += 4
    tracks = []
    while True:
        if multitrack_type == _MANY_TRACKS_MANY_CODECS:
            if end < pos + 4:
                return _tag_unknown(media)
            codec = fourccs.get(body[pos : pos + 4])
            pos += 4
        if pos >= end:
            return _tag_unknown(media)
        track_id = body[pos]
        pos += 1
        if multitrack_type == _ONE_TRACK:
            start = _payload_start(pos, packet_type, codec) if media == VIDEO else pos
            if start > end:
                return _tag_unknown(media)
            return Tag(kind, media, (Track(track_id, codec, start),))
        if end < pos + 3:
            return _tag_unknown(media)
        size = int.from_bytes(body[pos : pos + 3], "big")
        pos += 3
        track_end = pos + size
        if track_end > end:
            return _tag_unknown(media)
        start = _payload_start(pos, packet_type, codec) if media == VIDEO else pos
        if start > track_end:
            return _tag_unknown(media)
        tracks.append(Track(track_id, codec, start, track_end))
        pos = track_end
        if pos == end:
            return Tag(kind, media, tuple(tracks))
        if len(tracks) >= MAX_TRACKS:
            return _tag_unknown(media)


def _multitrack_kind(media: int, packet_type: int, frame_type: int) -> Kind | None:
    # The packet type inside a Multitrack header applies to every track; it "MUST not"
    # be Multitrack (nor ModEx) again.
    if packet_type == _SEQUENCE_START or (
        media == VIDEO and packet_type == _MPEG2TS_SEQUENCE_START
    ):
        return Kind.SEQUENCE_HEADER
    if packet_type == _CODED_FRAMES or (media == VIDEO and packet_type == _CODED_FRAMES_X):
        return Kind.KEYFRAME if media == VIDEO and frame_type == _KEY_FRAME else Kind.FRAME
    if packet_type == _SEQUENCE_END:
        return Kind.END_OF_SEQUENCE
    if packet_type == _METADATA:
        return Kind.METADATA if media == VIDEO else Kind.CHANNEL_CONFIG
    return None


def _tag_unknown(media: int) -> Tag:
    return _UNKNOWN_VIDEO if media == VIDEO else _UNKNOWN_AUDIO


# ----------------------------------------------------------------------- script data

_SET_DATA_FRAME: Final = "@setDataFrame"
_MAX_NAME: Final = 256


def _script(body: bytes, amf3: bool) -> Tag:
    """FLV spec §E.4.4.1 SCRIPTDATA: a handler name (AMF0 string), then its arguments.
    RTMP publishers put `@setDataFrame` before it (FFmpeg, OBS); AMF3 data messages
    start with a 0 format byte before the AMF0 values."""
    pos = 1 if amf3 and body[:1] == b"\x00" else 0
    name, pos = _amf0_string(body, pos)
    if name == _SET_DATA_FRAME:
        name, pos = _amf0_string(body, pos)
    if name is None:
        return _UNKNOWN_DATA
    if name == "onMetaData":
        return Tag(Kind.METADATA, DATA, name=name)
    return Tag(Kind.SCRIPT, DATA, name=name)


def _amf0_string(body: bytes, pos: int) -> tuple[str | None, int]:
    # AMF0 §2.4 string-type: marker 0x02, UI16 length, UTF-8.
    if len(body) < pos + 3 or body[pos] != 0x02:
        return None, pos
    size = int.from_bytes(body[pos + 1 : pos + 3], "big")
    end = pos + 3 + size
    if end > len(body):
        return None, pos
    raw = body[pos + 3 : min(end, pos + 3 + _MAX_NAME)]
    return raw.decode("utf-8", "replace"), end
