"""A publishing connection handed from one worker to another, mid-session.

When a publish arrives at a worker whose stream another worker relays (a replacement of
a hung connection, a returning or a backup publisher: `agent.placement`), the connection
moves to the holder: its socket (SCM_RIGHTS, `agent.channel`) and the state of its RTMP
session, so the holder answers the `publish` and reads the media as if the connection
had been its own from the start.

The state is the sans-I/O `ServerSession` itself, pickled: plain Python objects (the
handshake, the chunk reader with any incomplete chunk and partial messages, the chunk
writer's per-stream headers, media held since `publish`, the counters). Everything the
sending worker read from the socket went into the session, so nothing read is lost;
what it has not read yet waits in the kernel's socket buffer, which travels with the
socket; what it wrote had left its buffer before the hand-over (`IngestConnection`
waits for that). Pickling keeps the two sides in step whatever the session grows, which
an explicit serialisation would not.

Both ends are the same program, and the socket between them is a `socketpair()` only
they hold; still, the unpickler resolves nothing but the RTMP classes (`agent.rtmp`),
`os.urandom` (the handshake's random source) and the builtin containers, and the result
must be a session with a `publish` pending: anything else is refused like a malformed
frame.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from agent.rtmp import ServerSession

# A session holds at most: media since `publish` (max message size) and partial messages
# (twice that); bounded again here so a frame never grows past the channel's limit.
MAX_STATE = 48 * 1024 * 1024
_ALLOWED = {
    ("posix", "urandom"),
    ("os", "urandom"),
    ("nt", "urandom"),
    ("builtins", "bytearray"),  # how pickle protocols before 5 write a bytearray
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class HandoffError(Exception):
    """The state cannot be packed or is not a valid session to continue."""


class _SessionUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "agent.rtmp" or module.startswith("agent.rtmp."):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an RTMP session")


def pack(session: ServerSession) -> bytes:
    """The state of a session whose `publish` is pending."""
    if not session.publish_pending:
        raise HandoffError("only a session with a publish pending can be handed over")
    try:
        state = pickle.dumps(session, protocol=5)
    except (pickle.PicklingError, TypeError) as exc:
        raise HandoffError(f"the session cannot be packed: {exc}") from None
    if len(state) > MAX_STATE:
        raise HandoffError(f"the session's state is too large ({len(state)} B)")
    return state


def unpack(state: bytes) -> ServerSession:
    """The session packed by `pack`; HandoffError for anything else."""
    if len(state) > MAX_STATE:
        raise HandoffError(f"the session's state is too large ({len(state)} B)")
    try:
        session = _SessionUnpickler(io.BytesIO(state)).load()
    except Exception as exc:  # a malformed pickle raises many kinds
        raise HandoffError(f"the session's state does not unpack: {type(exc).__name__}") from None
    if not isinstance(session, ServerSession) or not session.publish_pending:
        raise HandoffError("the state is not a session with a publish pending")
    return session
