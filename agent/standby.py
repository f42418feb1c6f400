"""A publisher's media while it does not feed the destinations, kept ready to take over
(issue 15; sans-I/O).

A broadcast may have publishers that wait: a backup while the primary is live, the
primary back on a new connection during a hold (it takes over at its first keyframe),
a connection whose data resumed after a stall. Their media is read (so their TCP
connections never back up) but not sent; `Standby` keeps what a switch to them needs,
exactly as a destination that connects needs it from the relay:

- the latest `onMetaData`, and the latest configuration of every track (sequence header,
  channel configuration, video metadata such as colorInfo), in the order they came;
- every message since the latest video keyframe, bounded like the relay's GOP cache
  (a GOP beyond the bounds is dropped: the source is ready again at its next keyframe).

`take()` gives them in the order to send: metadata and configuration (stamped with the
keyframe's timestamp, so a switch never sends anything older than what it switches at),
then the keyframe and what followed it. A source without video is ready at its first
audio frame; a source that sends only audio into a broadcast that had video is ready
once `AUDIO_ONLY_AFTER_MS` of its audio came without any video (a backup encoder set
up without a camera still takes over, after a short wait).
"""

from __future__ import annotations

from agent.rtmp.message import Message
from agent.tags import AUDIO, DATA, VIDEO, Kind, classify

# Audio this long (its own timestamps) without any video: the source has no video.
AUDIO_ONLY_AFTER_MS = 3000
_CONFIGURATION = frozenset((Kind.SEQUENCE_HEADER, Kind.CHANNEL_CONFIG, Kind.METADATA))


class Standby:
    """What a waiting source has sent that a switch to it needs."""

    def __init__(self, max_bytes: int, max_ms: int) -> None:
        self.max_bytes = max_bytes
        self.max_ms = max_ms
        self.has_video = False  # this source has sent video
        self._metadata: Message | None = None
        # Latest configuration per (media, track ids, kind), in the order of arrival.
        self._configuration: dict[tuple[int, tuple[int, ...], Kind], Message] = {}
        self._gop: list[Message] | None = None  # from a video keyframe on, else None
        self._gop_bytes = 0
        self._first_audio: int | None = None  # timestamp of its first audio frame
        self._last_audio: Message | None = None

    def add(self, messages: list[Message]) -> None:
        """Messages the source sent (in order)."""
        for message in messages:
            tag = classify(message.type_id, message.payload)
            kind = tag.kind
            if kind in _CONFIGURATION:
                if tag.media == DATA:
                    self._metadata = message  # onMetaData
                else:
                    key = (tag.media, tuple(t.id for t in tag.tracks), kind)
                    self._configuration.pop(key, None)  # re-inserted last: newest order
                    self._configuration[key] = message
                continue
            if tag.media == VIDEO:
                self.has_video = True
                if kind is Kind.KEYFRAME:
                    self._gop, self._gop_bytes = [], 0
            elif tag.media == AUDIO and kind is Kind.FRAME:
                self._last_audio = message
                if self._first_audio is None:
                    self._first_audio = message.timestamp
            if self._gop is not None:
                self._keep(message)

    @property
    def keyframe_at(self) -> int | None:
        """The timestamp (the source's clock) of the keyframe a switch would start at."""
        return self._gop[0].timestamp if self._gop else None

    def ready(self, expect_video: bool) -> bool:
        """Whether a switch to this source can happen now: it has a keyframe to start at
        (or, without video, an audio frame)."""
        if self._gop:
            return True
        if self._last_audio is None or self.has_video:
            return False
        if not expect_video:
            return True
        assert self._first_audio is not None
        return self._last_audio.timestamp - self._first_audio >= AUDIO_ONLY_AFTER_MS

    def take(self) -> tuple[list[Message], int]:
        """What to send to switch to this source (configuration first, then media from
        its keyframe) and the timestamp it switches at; the standby is empty after it."""
        if self._gop:
            media, at = self._gop, self._gop[0].timestamp
        else:
            assert self._last_audio is not None, "take() when not ready"
            media, at = [self._last_audio], self._last_audio.timestamp
        head = [] if self._metadata is None else [self._metadata]
        head += self._configuration.values()
        stamped = [Message(m.type_id, m.stream_id, at, m.payload) for m in head]
        self.clear()
        return stamped + media, at

    def clear(self) -> None:
        """Forget the media (it was sent, or it is stale after a stall: the source is
        ready again at its next keyframe). The configuration stays: a publisher sends its
        sequence headers once per connection, and a switch back needs them."""
        self._gop, self._gop_bytes = None, 0
        self._first_audio, self._last_audio = None, None

    def reconfigure(self, configuration: list[Message]) -> None:
        """The source's configuration is these messages now (what it sent while it fed
        the destinations: the relay kept it), replacing what was kept before."""
        self._metadata = None
        self._configuration.clear()
        self.add(configuration)

    def _keep(self, message: Message) -> None:
        gop = self._gop
        assert gop is not None
        gop.append(message)
        self._gop_bytes += len(message.payload)
        if self._gop_bytes > self.max_bytes or message.timestamp - gop[0].timestamp > self.max_ms:
            self._gop, self._gop_bytes = None, 0  # too long: wait for the next keyframe
