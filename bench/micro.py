"""Per-packet cost of each piece of the agent's relay path, one thread, no I/O.

`python -m bench.micro` (after `bench/run` made the fixture, or with a path to any FLV)
prints microseconds of CPU per audio/video packet for: RTMP chunk parsing (the ingest
read in 1448- and 16384-byte pieces), FLV tag building, PyAV demuxing, PyAV muxing
(one muxer per track, as `agent/remux.py`), and RTMP chunk writing (per destination).
Their sum is the floor of the relay path in Python; the workload benchmark's CPU per
packet minus this sum is what threads, wake-ups and syscalls cost.
"""

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av

from agent.fanout import DEMUXER_OPTIONS
from agent.flv import AUDIO, FLV_HEADER, VIDEO, FlvTagReader, flv_tag
from agent.remux import Remuxer
from agent.rtmp.chunk import ChunkReader, ChunkWriter
from agent.rtmp.message import Message

OUT = Path(__file__).resolve().parent / "out"


def _timed(work: Callable[[], int], repeat: int = 5) -> float:
    """Best of `repeat` runs: CPU seconds per item `work` reports."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        count = work()
        best = min(best, (time.process_time() - start) / count)
    return best


def measure(path: Path) -> dict[str, float]:
    """Microseconds per packet of each piece, on the media tags of the FLV at `path`."""
    tags = [t for t in FlvTagReader().feed(path.read_bytes()) if t[0] in (AUDIO, VIDEO)]
    writer = ChunkWriter(4096)
    chunked = b"".join(writer.write(Message(t, 1, ts, body)) for t, ts, body in tags)
    flv = FLV_HEADER + b"".join(flv_tag(t, ts, body) for t, ts, body in tags)
    figures: dict[str, float] = {}

    for piece in (1448, 16384):

        def parse(piece: int = piece) -> int:
            reader = ChunkReader()
            reader.chunk_size = 4096
            return sum(
                len(reader.feed(chunked[i : i + piece])) for i in range(0, len(chunked), piece)
            )

        figures[f"chunk parse ({piece} B reads)"] = _timed(parse)

    figures["FLV tag build"] = _timed(lambda: len([flv_tag(*t) for t in tags]))

    def demux() -> int:
        container = av.open(io.BytesIO(flv), "r", format="flv", options=DEMUXER_OPTIONS)
        count = sum(1 for p in container.demux() if p.dts is not None)
        container.close()
        return count

    figures["PyAV demux (incl. open)"] = _timed(demux)

    container = av.open(io.BytesIO(flv), "r", format="flv")
    streams = [s for s in container.streams if s.type in ("audio", "video")]
    packets = [p for p in container.demux() if p.dts is not None]

    def mux() -> int:
        remuxer = Remuxer(streams)
        for packet in packets:
            # mux_one takes the packet's data: give it a copy, as demuxing would.
            copy = av.Packet(bytes(packet))
            copy.dts, copy.pts, copy.time_base = packet.dts, packet.pts, packet.time_base
            copy.is_keyframe = packet.is_keyframe
            copy.stream = packet.stream
            remuxer.mux(copy)
        remuxer.close()
        return len(packets)

    figures["PyAV mux (incl. packet copy)"] = _timed(mux)

    def write() -> int:
        out = ChunkWriter(4096)
        for t, ts, body in tags:
            out.write(Message(t, 1, ts, body))
        return len(tags)

    figures["chunk write (per destination)"] = _timed(write)
    return {name: seconds * 1e6 for name, seconds in figures.items()}


def main(argv: list[str]) -> int:
    """Print the table."""
    path = Path(argv[0]) if argv else next(iter(sorted(OUT.glob("fixture-*.flv"))), None)
    if path is None:
        print("no fixture: run bench/run first, or pass an FLV file", file=sys.stderr)
        return 2
    figures = measure(path)
    width = max(len(name) for name in figures)
    for name, micros in figures.items():
        print(f"{name:<{width}}  {micros:6.1f} us/packet")
    ingest = figures["chunk parse (16384 B reads)"] + figures["FLV tag build"]
    total = ingest + figures["PyAV demux (incl. open)"] + figures["PyAV mux (incl. packet copy)"]
    total += 2 * figures["chunk write (per destination)"]
    print(f"{'sum per packet, D = 2':<{width}}  {total:6.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
