"""Why a publish ended: the agent's causes, and the reason rig's session keeps
(docs/agent-protocol.md#release: `ended`, `kicked`, `idle`, `error`, `shutdown`, `grace expired`).

The ingest names each cause it ends a publish for (these constants, or a protocol
error's own words); `end_reason` says which of rig's reasons it is:

- `ended`: the publisher ended it: `FCUnpublish`, `deleteStream`, `closeStream`, or it
  closed its connection (a FIN: OBS and ffmpeg close after unpublishing; a crashed
  encoder's FIN cannot be told apart, and nginx-rtmp and SRS do not try either);
- `idle`: no data for `RIG_AGENT_IDLE_TIMEOUT`;
- `kicked`: rig revoked the claim (it ends the session itself; the agent does not
  release a revoked claim);
- `shutdown`: the agent is stopping;
- `grace expired`: disconnect protection held the destinations and no publisher came
  back in time (issue 15);
- `error`: anything else: the connection broke (reset), malformed RTMP, a publisher that
  stopped reading what the agent sends.
"""

from __future__ import annotations

# Causes the ingest ends a publish for (also the words in its log).
UNPUBLISHED = "unpublished"
CONNECTION_CLOSED = "connection closed"
PROTOCOL_CLOSED = "closed by the protocol"
CONNECTION_LOST = "connection lost"
NO_DATA = "no data in time"
STOPPED_READING = "the publisher stopped reading"
KICKED = "kicked"
SHUTDOWN = "shutdown"
GRACE_EXPIRED = "grace expired"
# A publisher of a broadcast ends, the broadcast goes on (agent/broadcast.py):
REPLACED = "replaced by a new connection"  # a stalled one, by the same key's new publish
BACKUP_REVOKED = "backup key revoked"  # rig: the backup key was rotated

_REASONS = {
    UNPUBLISHED: "ended",
    "FCUnpublish": "ended",
    "deleteStream": "ended",
    "closeStream": "ended",
    CONNECTION_CLOSED: "ended",
    PROTOCOL_CLOSED: "ended",
    NO_DATA: "idle",
    KICKED: "kicked",
    SHUTDOWN: "shutdown",
    GRACE_EXPIRED: "grace expired",
    BACKUP_REVOKED: "kicked",
}


def end_reason(cause: str) -> str:
    """rig's reason for a cause the ingest gave (`error` for any cause not listed)."""
    return _REASONS.get(cause, "error")
