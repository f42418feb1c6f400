"""An FFmpeg 8 RTMP receiver (PyAV's bundled FFmpeg, listening): what a destination gets.

Run as a process: ``python pyav_receiver.py URL OUT.flv`` listens on URL
(``rtmp://127.0.0.1:PORT/app/key``, FFmpeg's ``listen`` mode: one publish) and writes
the stream as FFmpeg's RTMP server hands it over: an FLV byte stream, one tag per
message (the ``data`` format reads those bytes without demuxing them). FFmpeg's RTMP
implementation is independent of ours, so this is a second reading of what the agent
sent, besides the wire capture.

The stream is demuxed and decoded afterwards, from the file (`read_flv`), by the same
function that reads what the publisher sent: both go through the very same demuxer
and decoders.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import av

# How long the listener waits for the agent to connect, seconds.
LISTEN_TIMEOUT = 60


def receive(url: str, out: Path) -> str:
    """Accept one publish on `url` and write it to `out` as FLV; how it ended."""
    options = {"listen": "1", "timeout": str(LISTEN_TIMEOUT)}
    with out.open("wb") as sink, av.open(url, "r", format="data", options=options) as container:
        try:
            for packet in container.demux():
                if packet.size:
                    sink.write(bytes(packet))
        except av.FFmpegError as exc:
            # FFmpeg's RTMP server reports the publisher's disconnect as an I/O error.
            return f"{type(exc).__name__}: {exc}"
    return "end of stream"


def read_flv(path: Path) -> dict:
    """FFmpeg 8's view of an FLV file: its streams, every packet (stream, pts, dts, key
    flag, digest of its bytes), and per audio/video stream how many frames decoded,
    how many packets failed to, and the picture sizes seen."""
    packets: list[dict] = []
    kept: list[Any] = []
    ended_by = "end of file"
    with av.open(str(path), "r", format="flv") as container:
        try:
            for packet in container.demux():
                if packet.dts is None and packet.size == 0:
                    continue  # the demuxer's end-of-stream flush packets
                packets.append(
                    {
                        "stream": packet.stream.index,
                        "pts": packet.pts,
                        "dts": packet.dts,
                        "key": bool(packet.is_keyframe),
                        "size": packet.size,
                        "sha": hashlib.sha256(bytes(packet)).hexdigest(),
                    }
                )
                kept.append(packet)
        except IndexError:
            # PyAV 18 cannot return a packet of a stream the demuxer added after
            # opening (FFmpeg 8 ends a multitrack H.264 track with a legacy AVC end of
            # sequence, which does): the read ends there, the same for both sides.
            ended_by = f"a stream added after packet #{len(packets)}"
        except av.FFmpegError as exc:
            # FFmpeg's FLV demuxer gives up on some garbage (a video tag of random bytes).
            ended_by = f"{type(exc).__name__} after packet #{len(packets)}"
        streams = [
            {
                "index": s.index,
                "type": s.type,
                "codec": s.codec_context.name,
                "extradata": hashlib.sha256(s.codec_context.extradata or b"").hexdigest(),
            }
            for s in container.streams
        ]
        decoded = {str(s.index): _decode(s, kept) for s in container.streams if _decodable(s)}
    return {"streams": streams, "packets": packets, "decoded": decoded, "ended_by": ended_by}


def _decodable(stream: Any) -> bool:
    return stream.type in ("audio", "video")


def _decode(stream: Any, packets: list[Any]) -> dict:
    """Decode one stream's packets: frames out, packets refused, picture sizes."""
    result: dict = {"frames": 0, "errors": 0, "sizes": []}
    context = stream.codec_context
    for packet in [*(p for p in packets if p.stream.index == stream.index), None]:
        try:
            frames = context.decode(packet)
        except av.FFmpegError:
            result["errors"] += 1
            continue
        for frame in frames:
            result["frames"] += 1
            if stream.type == "video" and [frame.width, frame.height] not in result["sizes"]:
                result["sizes"].append([frame.width, frame.height])
    return result


def main() -> None:
    url, out = sys.argv[1], Path(sys.argv[2])
    print(receive(url, out), flush=True)


if __name__ == "__main__":
    main()
