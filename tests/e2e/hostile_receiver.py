"""A hostile RTMP destination: answers a publish with text no peer should be trusted with.

Run as a process:
    python hostile_receiver.py PORT MODE MARKER
MODE `status`: every publish is refused with a 100 KB onStatus code and description full
of CR, LF, NUL, terminal escapes and forged log lines (of a logger named MARKER).
MODE `stream-id`: createStream is answered with that same text as the stream id.
Each connection is reported on stdout.
"""

import socket
import sys
from typing import Any

from wire_recorder import accept_forever  # run as a script: its folder is on sys.path

from agent.rtmp import PublishRequested, ServerSession
from agent.rtmp._connection import decode_command


def hostile_text(marker: str) -> str:
    """100 KB of forged log lines, NUL, terminal escapes and line separators."""
    line = f"\r\n2026-01-01 00:00:00,000 ERROR agent.{marker}: rig was hacked\x00\x1b[2J\u2028"
    return (line * (100_000 // len(line) + 1))[:100_000]


HOSTILE = hostile_text(sys.argv[3] if len(sys.argv) > 3 else "FORGED")


class StreamIdSession(ServerSession):
    """Answers createStream with a string where a number belongs."""

    def _handle_command(self, message: Any, events: list) -> None:
        name, tx, _ = decode_command(message)
        if name == "createStream":
            self._send_command(0, "_result", tx, None, HOSTILE)
            return
        super()._handle_command(message, events)


def serve(conn: socket.socket, number: int, mode: str) -> None:
    print(f"connection {number}", flush=True)
    session = StreamIdSession() if mode == "stream-id" else ServerSession()
    try:
        while data := conn.recv(65536):
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    print(f"connection {number}: publish {event.stream_name!r}", flush=True)
                    session.reject_publish(HOSTILE, HOSTILE)
            conn.sendall(session.data_to_send())
            if session.closed:
                break
    except Exception as exc:  # a bad peer ends its connection only
        print(f"connection {number}: {exc!r}", flush=True)
    finally:
        conn.close()


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    accept_forever(port, lambda conn, number: serve(conn, number, mode))


if __name__ == "__main__":
    main()
