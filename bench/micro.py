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
from agent.flv import AUDIO, VIDEO, FlvTagReader
from agent.media_queue import MediaMessage
from agent.relay import StreamRelay
from agent.rtmp.chunk import ChunkReader, ChunkWriter
from agent.rtmp.message import Message
from agent.tags import classify

OUT = Path(__file__).resolve().parent / "out"
D = 2  # destinations per stream in the workload benchmark


class _Connection:
    """What `Chunked` reads of a destination's connection."""

    def __init__(self, stream_id: int, chunk_size: int) -> None:
        self.chunk_key = (stream_id, chunk_size)


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
    chunked = b"".join(writer.write(m) for m in messages)
    figures: dict[str, float] = {}

    for piece in (1448, 16384):

        def parse(piece: int = piece) -> int:
            reader = ChunkReader()
            reader.chunk_size = 4096
            return sum(
                len(reader.feed(chunked[i : i + piece])) for i in range(0, len(chunked), piece)
            )

        figures[f"chunk parse ({piece} B reads)"] = _timed(parse)

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

    def once() -> int:
        connections = [_Connection(1, 65536) for _ in range(D)]
        for m in media:
            batch = Chunked([m])
            for connection in connections:
                batch.for_connection(connection)  # type: ignore[arg-type]
        return len(media)

    figures[f"chunk once for {D} destinations"] = _timed(once)
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
