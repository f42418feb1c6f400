"""Heartbeats to rig: every claim of this agent renewed, in batches, with bounded health.

One request for every claim does not scale: rig refuses a body over its limit (its 64 KiB
held about 110 ordinary streams), and then every stream of the agent goes offline at
once. So each heartbeat round (`HeartbeatSender.send`):

- bounds each claim's health (`bounded`): every string cleaned (control characters
  removed, at most 200 characters: `agent.logsafe.clean`), arrays cut to 64 items,
  numbers that JSON cannot carry (NaN, infinity) made null
  (docs/agent-protocol.md#heartbeat-health);
- packs the claims into batches of at most 100 claims (docs/agent-protocol.md#heartbeat)
  and at most 1 MiB (half of the 2 MiB rig's heartbeat route takes: 100 claims with ten
  destinations each are about 420 KB);
- sends the batches concurrently, at most 4 at a time: 2,000 claims are 20 or so
  batches, and one after the other they take 1.7 times as long (measured:
  docs/api.md#live-state-claims-and-heartbeats), while 4 at a time use a few of rig's
  database connections, not all;
- a batch that fails leaves the others alone; a batch rig refuses as a whole (invalid
  input, or over an older rig's 64 KiB body limit) is sent again with each claim's
  health cut down to what renews the claim (`ingestUrl`, `ingestState`), and so is
  every claim rig answers `invalid` (docs/agent-protocol.md#heartbeat): statistics are
  worth less than staying live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from agent.logsafe import clean, escape
from agent.rig_client import RigClient, RigRefused, RigUnavailable, StreamInUse, StreamNotFound

log = logging.getLogger(__name__)

MAX_CLAIMS_PER_BATCH = 100
MAX_BATCH_BYTES = 1024 * 1024
CONCURRENT_BATCHES = 4
MAX_ARRAY_ITEMS = 64
_MAX_DEPTH = 8
# The ingest states (docs/agent-protocol.md#heartbeat-health).
INGEST_STATES = ("live", "backup", "holding")


def bounded(value: Any, depth: int = 0) -> Any:
    """A copy of a health object (or any JSON value) fit to send: strings cleaned and cut,
    arrays cut, non-finite numbers null, nothing nested deeper than 8 levels."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if depth >= _MAX_DEPTH:
        return None if isinstance(value, dict | list | tuple) else value
    if isinstance(value, dict):
        return {str(k): bounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(v, depth + 1) for v in value[:MAX_ARRAY_ITEMS]]
    return value


def essential(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its health cut down to what renews the claim: the ingest URL, and
    the ingest state if it is one (absent means `live`)."""
    health = entry.get("health") or {}
    cut = {"ingestUrl": health["ingestUrl"]} if "ingestUrl" in health else {}
    if health.get("ingestState") in INGEST_STATES:
        cut["ingestState"] = health["ingestState"]
    return {**entry, "health": cut}


def encode(entry: dict[str, Any]) -> bytes:
    """One claim entry as compact JSON."""
    return json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()


@dataclass
class _Claim:
    entry: dict[str, Any]
    data: bytes


def batches(claims: list[_Claim]) -> list[list[_Claim]]:
    """Claims packed in order into batches of at most MAX_CLAIMS_PER_BATCH claims and
    MAX_BATCH_BYTES bytes (a claim larger than that alone goes in a batch of its own)."""
    out: list[list[_Claim]] = []
    batch: list[_Claim] = []
    size = 0
    for claim in claims:
        length = len(claim.data) + 1
        if batch and (len(batch) >= MAX_CLAIMS_PER_BATCH or size + length > MAX_BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append(claim)
        size += length
    if batch:
        out.append(batch)
    return out


@dataclass
class HeartbeatRound:
    """What one round achieved: rig's answers, and the batches that failed."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    failed: list[str] = field(default_factory=list)  # why, per failed batch
    cut_down: int = 0  # claims renewed with their health cut down
    invalid: int = 0  # claims rig refused even so


class HeartbeatSender:
    """Sends one round of heartbeats for every claim given."""

    def __init__(self, rig: RigClient, concurrency: int = CONCURRENT_BATCHES) -> None:
        self.rig = rig
        self._concurrency = concurrency
        self._invalid_before = False  # warned about invalid claims in the last round

    async def send(self, entries: list[dict[str, Any]]) -> HeartbeatRound:
        """Renew the claims of `entries` ({"claimId", "streamKey", "health", ...})."""
        result = HeartbeatRound()
        claims = []
        for entry in entries:
            entry = bounded(entry)
            claims.append(_Claim(entry, encode(entry)))
        await self._send_all(claims, result, cut_down=False)
        refused = {a.get("claimId"): a for a in result.answers if a.get("status") == "invalid"}
        if refused and not self._invalid_before:  # once while it lasts, not every round
            reason = next(iter(refused.values())).get("reason") or "no reason given"
            log.warning(
                "rig refused the health of %d claim(s) (%s); renewing them without it",
                len(refused),
                escape(reason),
            )
        self._invalid_before = bool(refused)
        if refused:
            # Once more with only what renews them (the other claims are renewed already).
            result.answers = [a for a in result.answers if a.get("claimId") not in refused]
            again = [essential(c.entry) for c in claims if c.entry.get("claimId") in refused]
            await self._send_all([_Claim(e, encode(e)) for e in again], result, cut_down=True)
        result.invalid = sum(1 for a in result.answers if a.get("status") == "invalid")
        return result

    async def _send_all(self, claims: list[_Claim], result: HeartbeatRound, cut_down: bool) -> None:
        limit = asyncio.Semaphore(self._concurrency)
        groups = batches(claims)
        result.batches += len(groups)

        async def one(batch: list[_Claim]) -> None:
            async with limit:
                await self._send_batch(batch, result, cut_down)

        await asyncio.gather(*(one(batch) for batch in groups))

    async def _send_batch(
        self, batch: list[_Claim], result: HeartbeatRound, cut_down: bool
    ) -> None:
        try:
            try:
                answers = await self.rig.heartbeat([c.data for c in batch])
            except RigRefused:
                if cut_down:
                    raise
                # The batch as a whole was refused: the same claims, health cut down.
                cut = [encode(essential(c.entry)) for c in batch]
                answers = await self.rig.heartbeat(cut)
                result.cut_down += len(batch)
            else:
                if cut_down:
                    result.cut_down += len(batch)
        except (RigUnavailable, StreamNotFound, StreamInUse) as exc:
            result.failed.append(str(exc) or type(exc).__name__)
            return
        result.answers.extend(answers)
