"""Regenerate tests/data/ffmpeg_publish.bin: every byte a real FFmpeg publish sends.

Run from the repository root: ``python -m tests.unit.make_ffmpeg_fixture``. A one-shot
RTMP server on 127.0.0.1 (driven by :class:`ServerSession`) accepts the publish and
records what it receives; tests/unit/test_server_session.py replays it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from agent.rtmp import PublishRequested, ServerSession

OUT = Path(__file__).resolve().parent.parent / "data" / "ffmpeg_publish.bin"


def main() -> int:
    """Run FFmpeg against a local one-shot server and write the capture."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    ffmpeg = subprocess.Popen(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error",
            "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
            "-f", "lavfi", "-i", "sine", "-t", "2",
            "-c:v", "libx264", "-g", "30", "-c:a", "aac",
            "-f", "flv", f"rtmp://127.0.0.1:{port}/live/testkey",
        ]
    )  # fmt: skip
    conn, _ = listener.accept()
    session = ServerSession()
    received = bytearray()
    with conn:
        while data := conn.recv(65536):
            received += data
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    session.accept_publish()
            conn.sendall(session.data_to_send())
    listener.close()
    rc = ffmpeg.wait(timeout=30)
    OUT.write_bytes(bytes(received))
    print(f"ffmpeg exited {rc}; wrote {len(received)} bytes to {OUT}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
