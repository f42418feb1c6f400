"""A claim's health report (docs/agent-protocol.md#heartbeat-health), bounded and sanitised by rig.

The agent truncates and cleans what came from its peers; rig does it again, because a
report is the agent's word and may come from a hostile destination's bytes or another
version of the agent: only the contract's fields are kept, each with its JSON type (a
field of the wrong type is dropped), every string is cut to 200 characters without
control characters (rig.sessions.fact), the destinations are capped at
HEALTH_DESTINATIONS_MAX. Whatever a report holds, what rig stores and shows is small
and well formed, so one odd report can never fail a heartbeat or spoil the statistics.
"""

from typing import Any

from rig.sessions import fact

INGEST_STATES = ("live", "backup", "holding")
DESTINATION_STATES = ("connecting", "live", "backoff", "failed", "off")
INGEST_URL_MAX = 512
# A stream has at most RIG_MAX_DESTINATIONS (10 by default) now; destinations removed
# while live are still reported until they drain.
HEALTH_DESTINATIONS_MAX = 100

# Field -> JSON type (`str` keeps numbers as text: a level may be 41 or "4.1").
INGEST_FIELDS: dict[str, type] = {
    "bytesIn": int,
    "bitrate": int,
    "uptime": float,
    "frameRate": float,
    "keyframeInterval": float,
    "videoCodec": str,
    "width": int,
    "height": int,
    "pixelFormat": str,
    "profile": str,
    "level": str,
    "audioCodec": str,
    "audioSampleRate": int,
    "audioChannels": int,
    "unclassifiedMessages": int,
}
DESTINATION_FIELDS: dict[str, type] = {
    "service": str,
    "bytesSent": int,
    "reconnects": int,
    "liveSeconds": float,
    "droppedPackets": int,
}
# Always present in a destination's entry, null when absent or unusable.
DESTINATION_NULLABLE: dict[str, type] = {"lastError": str, "retryIn": float}


def _known(source: dict[str, Any], fields: dict[str, type]) -> dict[str, Any]:
    picked = {name: fact(source.get(name), kind) for name, kind in fields.items()}
    return {name: value for name, value in picked.items() if value is not None}


def _destination(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    dest_id = item.get("id")
    if isinstance(dest_id, bool) or not isinstance(dest_id, int):
        return None  # only rig's destination ids mean anything
    entry: dict[str, Any] = {"id": dest_id}
    if item.get("state") in DESTINATION_STATES:
        entry["state"] = item["state"]
    entry.update(_known(item, DESTINATION_FIELDS))
    entry.update({name: fact(item.get(name), kind) for name, kind in DESTINATION_NULLABLE.items()})
    return entry


def sanitise_health(report: Any) -> dict[str, Any]:
    """The part of an agent's health report rig keeps (see the module docstring)."""
    if not isinstance(report, dict):
        return {}
    health: dict[str, Any] = {}
    url = report.get("ingestUrl")
    if (
        isinstance(url, str)
        and url.startswith(("rtmp://", "rtmps://"))
        and len(url) <= INGEST_URL_MAX
        and url.isprintable()
    ):
        health["ingestUrl"] = url
    if report.get("ingestState") in INGEST_STATES:
        health["ingestState"] = report["ingestState"]
    if isinstance(report.get("ingest"), dict):
        health["ingest"] = _known(report["ingest"], INGEST_FIELDS)
    destinations = report.get("destinations")
    if isinstance(destinations, list):
        entries = (_destination(item) for item in destinations[:HEALTH_DESTINATIONS_MAX])
        health["destinations"] = [entry for entry in entries if entry is not None]
    return health
