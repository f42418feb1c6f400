"""An RTMP receiver that records exactly what it is sent: one FLV file per publish.

nginx-rtmp's recorder is not a faithful witness of what a client sent: it skips video
until the first keyframe and writes codec headers of its own. This one writes every
audio, video and data message as one FLV tag, bytes and timestamps as received.

Run as a process (so a test can SIGKILL it):
    python wire_recorder.py PORT DIR RUN
Files are DIR/<stream name>-<RUN>-<connection number>.flv, written tag by tag (a `/` of
the name becomes `_`); each publish's application and stream name, exactly as received,
are printed (`publish N: 'app' 'name'`), and each unpublish ("connection N: unpublished").
"""

import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from agent.flv import FLV_HEADER, flv_tag, strip_set_data_frame
from agent.rtmp import MediaReceived, PublishEnded, PublishRequested, ServerSession

AUDIO, VIDEO, DATA = 8, 9, 18


def serve(conn: socket.socket, number: int, records: Path, run: str) -> None:
    session = ServerSession()
    out = None
    try:
        while data := conn.recv(65536):
            for event in session.receive_data(data):
                if isinstance(event, PublishRequested):
                    session.accept_publish()
                    # Exactly what arrived (a test reads it back with ast.literal_eval).
                    print(f"publish {number}: {session.app!r} {event.stream_name!r}", flush=True)
                    name = event.stream_name.replace("/", "_")
                    out = (records / f"{name}-{run}-{number:03d}.flv").open("wb", buffering=0)
                    out.write(FLV_HEADER)
                elif isinstance(event, PublishEnded):
                    print(f"connection {number}: unpublished ({event.reason})", flush=True)
                elif isinstance(event, MediaReceived) and out is not None:
                    message = event.message
                    if message.type_id not in (AUDIO, VIDEO, DATA):
                        continue
                    payload = bytes(message.payload)
                    if message.type_id == DATA:
                        payload = strip_set_data_frame(payload)
                    out.write(flv_tag(message.type_id, message.timestamp, payload))
            conn.sendall(session.data_to_send())
            if session.closed:
                break
    except Exception as exc:  # a bad peer ends its connection only
        print(f"connection {number}: {exc!r}", flush=True)
    finally:
        if out is not None:
            out.close()
        conn.close()


def accept_forever(port: int, serve: Callable[[socket.socket, int], None]) -> None:
    """Accept connections on 127.0.0.1:`port` forever; each is served by `serve(conn,
    number)` in a thread of its own (numbers from 1)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    number = 0
    while True:
        conn, _ = listener.accept()
        number += 1
        threading.Thread(target=serve, args=(conn, number), daemon=True).start()


def main() -> None:
    port, records, run = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    accept_forever(port, lambda conn, number: serve(conn, number, records, run))


if __name__ == "__main__":
    main()
