"""Per-packet cost of each piece of the agent's relay path, one thread, no I/O.

`python -m bench.micro` (after `bench/run` made the fixture, or with a path to any FLV)
prints microseconds of CPU per audio/video message for: RTMP chunk parsing (the ingest
read in 1448- and 16384-byte pieces), the tag classifier, the relay's bookkeeping
(`StreamRelay.feed` without destinations: classify, GOP cache, measurements), and
chunking for the destinations three ways: compressed headers per connection (FFmpeg's
way, `ChunkWriter`), stand-alone headers per connection (`message_chunks`), and once for
every destination with the same chunk size and stream id (what the relay does). Their
sum is the floor of the relay path in Python; the workload benchmark's CPU per message
minus this sum is what the event loop, the syscalls and the kernel cost.
"""

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.destination import Chunked, EgressSettings, encode
from agent.egress import RtmpPublish, parse_target
from agent.flv import AUDIO, VIDEO, FlvTagReader
from agent.media_queue import MediaMessage
from agent.relay import StreamRelay
from agent.rtmp.chunk import ChunkReader, ChunkWriter
from agent.rtmp.message import Message
from agent.tags import classify

OUT = Path(__file__).resolve().parent / "out"
D = 2  # destinations per stream in the workload benchmark


def _timed(work: Callable[[], int], repeat: int = 5) -> float:
    """Best of `repeat` runs: CPU seconds per item `work` reports."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        count = work()
        best = min(best, (time.process_time() - start) / count)
    return best


def measure(path: Path) -> dict[str, float]:
    """Microseconds per message of each piece, on the media tags of the FLV at `path`."""
    tags = [t for t in FlvTagReader(1 << 26).feed(path.read_bytes()) if t[0] in (AUDIO, VIDEO)]
    messages = [Message(t, 1, ts, body) for t, ts, body in tags]
    writer = ChunkWriter(4096)
    encoded = [writer.write(m) for m in messages]
    chunked = b"".join(encoded)
    figures: dict[str, float] = {}

    for piece in (1448, 16384):

        def parse(piece: int = piece) -> int:
            reader = ChunkReader()
            reader.chunk_size = 4096
            return sum(
                len(reader.feed(chunked[i : i + piece])) for i in range(0, len(chunked), piece)
            )

        figures[f"chunk parse ({piece} B reads)"] = _timed(parse)

    # What the agent reads from FFmpeg: each message's header on its own (FFmpeg writes
    # it with a call of its own, and the agent wakes for it), then the rest, each read
    # into one reused buffer as the agent's are.
    reads: list[bytes] = []
    for data, m in zip(encoded, messages, strict=True):
        header = len(data) - len(m.payload) - (len(m.payload) - 1) // 4096
        reads += [data[:header], data[header:]]
    shared = bytearray(1 << 20)

    def parse_ffmpeg_reads() -> int:
        reader = ChunkReader()
        reader.chunk_size = 4096
        view = memoryview(shared)
        count = 0
        for data in reads:
            view[: len(data)] = data
            count += len(reader.feed(view[: len(data)]))
        return count

    figures["chunk parse (FFmpeg's reads: header, rest)"] = _timed(parse_ffmpeg_reads)

    figures["classify"] = _timed(lambda: len([classify(t, body) for t, _, body in tags]))

    async def relay_feed() -> int:
        relay = StreamRelay("micro", [], EgressSettings())
        relay.start()
        for message in messages:
            relay.feed([message])
        relay.end("done")
        return len(messages)

    figures["relay bookkeeping (feed, no destinations)"] = _timed(lambda: asyncio.run(relay_feed()))
    media = [MediaMessage(t, ts, body) for t, ts, body in tags]

    def compressed() -> int:
        out = ChunkWriter(65536)
        for m in messages:
            out.write(m)
        return len(messages)

    figures["chunk, compressed headers, per destination"] = _timed(compressed)
    figures["chunk, stand-alone headers, per destination"] = _timed(
        lambda: len([encode([m], 1, 65536) for m in media])
    )

    async def once() -> int:
        # Real connections, never connected (compiled, `Chunked` takes nothing else):
        # what it reads of them is their chunk key.
        target = parse_target("rtmp://127.0.0.1/live", "micro")
        connections = [RtmpPublish(target, 65536, 5.0) for _ in range(D)]
        for connection in connections:
            connection.chunk_key = (1, 65536)
        for m in media:
            batch = Chunked([m])
            for connection in connections:
                batch.for_connection(connection)
        return len(media)

    figures[f"chunk once for {D} destinations"] = _timed(lambda: asyncio.run(once()))
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
        print(f"{name:<{width}}  {micros:6.2f} us/message")
    total = figures["chunk parse (16384 B reads)"]
    total += figures["relay bookkeeping (feed, no destinations)"]
    total += figures[f"chunk once for {D} destinations"]
    print(f"{f'sum per message, D = {D}':<{width}}  {total:6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
