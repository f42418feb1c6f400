"""The agent's client of rig's agent API: authenticate, then ask what each key is for.

The agent exchanges its API key for a short-lived agent token and refreshes it before
it expires (or at once when rig answers 1003). Errors never carry URLs: the config
URL contains the ingest stream key.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from agent.destination import Destination

log = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # seconds before expiry at which the token is renewed


class StreamNotFound(Exception):
    """rig does not know this key, or the stream is inactive (errorCode 1000)."""


class StreamInUse(Exception):
    """Another agent holds a live claim on this key (errorCode 1009). `details` is rig's
    word on where (`reason`, `agent`, `ingestUrl`, `ingestState`:
    docs/agent-protocol.md#disconnect-protection-claim-rules), or empty."""

    def __init__(self, details: object = None) -> None:
        super().__init__("the stream is live on another agent")
        self.details: dict[str, Any] = details if isinstance(details, dict) else {}


class RigUnavailable(Exception):
    """rig could not be reached or answered with an error we cannot act on."""


class RigUnreachable(RigUnavailable):
    """No answer from rig at all (refused, unresolvable, timed out): `reason` says which,
    in a few words (never a URL)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"rig unreachable ({reason})")
        self.reason = reason


def unreachable_reason(exc: BaseException, timeout: float | None) -> str:
    """Why a request got no answer, without the URL (str(exc) may hold a stream key)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "no answer in time"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, socket.gaierror) and os_error.strerror:
        return os_error.strerror[:1].lower() + os_error.strerror[1:]
    if isinstance(os_error, OSError) and os_error.errno and os_error.errno > 0:
        words = os.strerror(os_error.errno)
        return words[:1].lower() + words[1:]
    return type(exc).__name__


def without_credentials(url: str) -> str:
    """The URL for a log line: any user:password@ left out."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class RigRefused(RigUnavailable):
    """rig refused the request itself (invalid input, 1005, or a body too large, HTTP
    413): sending the same again will not help, sending less may."""


@dataclass(frozen=True)
class Claim:
    """A granted claim: this agent is where the stream is live. A claim of a stream this
    agent holds already is that same broadcast
    (docs/agent-protocol.md#disconnect-protection-claim-rules): `stream_id` names it,
    `role` says which of its keys the publisher used."""

    claim_id: str
    destinations: list[Destination]
    stream_id: str = ""  # the broadcast: one per stream, whichever key claimed it
    role: str = "primary"  # or "backup": which of the stream's keys
    protection: dict[str, Any] | None = None  # rig's disconnectProtection
    # Whether rig wants pictures of it (someone looks); True from a rig that does not say.
    thumbnail_wanted: bool = True


def thumbnail_wanted(answer: dict[str, Any]) -> bool:
    """rig's `thumbnailWanted` in a claim or heartbeat answer: only an explicit false
    stops the pictures (a rig from before it was there wants them all)."""
    return answer.get("thumbnailWanted") is not False


def server_url_of(rtmp_url: str, stream_key: str) -> str:
    """The server part of a destination's `rtmpUrl`, which is the server URL, `/` and the
    key (rig-api-v1): the key is cut off the end as the whole string it is, never looked
    for inside the URL. "" when the URL does not end with the key (the destination then
    fails with a clear error instead of publishing a wrong key)."""
    suffix = "/" + stream_key
    if stream_key and rtmp_url.endswith(suffix):
        return rtmp_url[: -len(suffix)]
    return ""


def destinations_from(payload: list[dict[str, Any]] | None) -> list[Destination]:
    """The active destinations among rig's destination objects."""
    return [
        Destination(
            id=d["id"],
            service=d["service"],
            server_url=server_url_of(d["rtmpUrl"], d.get("streamKey") or ""),
            stream_key=d.get("streamKey") or "",
        )
        for d in payload or []
        if d.get("isActive") and d.get("rtmpUrl")
    ]


class RigClient:
    """Talks to rig's `/agents/...` routes with an agent token."""

    def __init__(
        self, base_url: str, api_key: str, timeout: float = 5.0, *, report_key: bool = True
    ) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        # Say in the log when rig refuses the key, and when it accepts it again (each
        # change once, not every call); a multi-worker agent's workers leave it to the
        # supervisor process (`report_key` False).
        self._report_key = report_key
        self._key_refused = False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> "RigClient":
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(self, method: str, path: str, **kwargs: object) -> tuple[int, dict]:
        assert self._session is not None, "use RigClient as an async context manager"
        try:
            async with self._session.request(method, self._base + path, **kwargs) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = {}
                return resp.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            # str(exc) may contain the URL (and so a key): name the kind of failure only.
            raise RigUnreachable(unreachable_reason(exc, self._timeout.total)) from None

    async def token(self, *, force: bool = False) -> str:
        """A valid agent token, renewed shortly before it expires."""
        async with self._lock:
            if force or self._token is None or time.time() > self._token_expires - REFRESH_MARGIN:
                status, body = await self._request(
                    "POST", "/agents/auth", json={"apiKey": self._api_key}
                )
                if status != 200:
                    words = f"agent authentication failed: errorCode {body.get('errorCode')}"
                    if status == 401:  # the key itself: unknown, or revoked
                        self._key_verdict(refused=True, words=words)
                    raise RigUnavailable(words)
                self._key_verdict(refused=False)
                payload = body["payload"]
                self._token = payload["token"]
                expires = datetime.fromisoformat(payload["expiresAt"].replace("Z", "+00:00"))
                self._token_expires = expires.timestamp()
            return self._token

    def _key_verdict(self, *, refused: bool, words: str = "") -> None:
        """Log a change of rig's answer to this agent's key (never the key itself)."""
        if refused != self._key_refused and self._report_key:
            if refused:
                log.error(
                    "rig refused this agent's key (RIG_AGENT_KEY): %s; publishes are refused"
                    " until rig accepts it (a key comes from: rig agents create NAME)",
                    words,
                )
            else:
                log.info("rig accepts this agent's key (RIG_AGENT_KEY) again")
        self._key_refused = refused

    async def check_key(self, retry: float = 5.0) -> None:
        """Ask rig for a token once it answers (every `retry` seconds until then): a key
        rig refuses is in the log at start, not only at the first publish. A rig that
        does not answer the first time is one WARNING, and one INFO once it does (not a
        line per retry)."""
        where = without_credentials(self._base)
        warned = False
        while True:
            try:
                await self.token()
                answered = True
            except RigUnreachable as exc:
                answered = False
                words = f"rig unreachable at {where}: {exc.reason}"
            except RigUnavailable as exc:
                answered = self._key_refused  # logged as an ERROR by token()
                words = f"rig at {where} cannot authenticate this agent now: {exc}"
            if answered:
                if warned:
                    log.info("rig answers at %s now", where)
                return
            if not warned:
                log.warning("%s; publishes are refused until it answers", words)
                warned = True
            await asyncio.sleep(retry)

    async def check(self) -> None:
        """Raise RigUnavailable unless rig is ready and accepts this agent's key (the
        agent's readiness probe). The token is the cached one while it is valid."""
        await self.token()
        status, body = await self._request("GET", "/readyz")
        if status != 200:
            raise RigUnavailable(f"rig not ready: HTTP {status}, errorCode {body.get('errorCode')}")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        **kwargs: Any,
    ) -> Any:
        """An agent-token request; returns the payload, raises on errors. `data` is a body
        already encoded (as JSON, unless `content_type` says otherwise).

        A 1003 answer (token expired or rig's key rotated) gets one retry with a new token.
        """
        for attempt in range(2):
            token = await self.token(force=attempt > 0)
            headers = {"Authorization": f"Bearer {token}"}
            if data is not None:
                headers["Content-Type"] = content_type
                kwargs["data"] = data
            status, body = await self._request(method, path, headers=headers, **kwargs)
            if status == 200:
                return body.get("payload")
            code = body.get("errorCode")
            if code == 1000:
                raise StreamNotFound()
            if code == 1009:
                raise StreamInUse(body.get("details"))
            if code != 1003:
                break
        words = f"rig answered HTTP {status}, errorCode {body.get('errorCode')}"
        if status in (400, 413):
            raise RigRefused(words)
        raise RigUnavailable(words)

    async def stream_config(self, stream_key: str) -> list[Destination]:
        """The active destinations of the stream with this ingest key."""
        payload = await self._call("GET", "/agents/config/" + quote(stream_key, safe=""))
        return destinations_from(payload)

    async def put_thumbnail(self, claim_id: str, jpeg: bytes) -> bool:
        """A live stream's picture (docs/agent-protocol.md#thumbnail-upload); False when
        rig did not take it because the claim is gone. A picture too soon after the last
        is RigUnavailable."""
        path = f"/agents/claims/{quote(claim_id, safe='')}/thumbnail"
        try:
            await self._call("PUT", path, data=jpeg, content_type="image/jpeg")
        except StreamNotFound:
            return False
        return True

    async def claim(self, stream_key: str, ingest_url: str) -> Claim:
        """Claim the key for a publish starting here; raises StreamInUse if live elsewhere."""
        path = f"/agents/streams/{quote(stream_key, safe='')}/claim"
        payload = await self._call("POST", path, json={"ingestUrl": ingest_url})
        role = payload.get("role")
        return Claim(
            payload["claimId"],
            destinations_from(payload["destinations"]),
            str(payload.get("streamId") or ""),
            role if role in ("primary", "backup") else "primary",
            payload.get("disconnectProtection"),
            thumbnail_wanted(payload),
        )

    async def heartbeat(self, claims: list[bytes]) -> list[dict[str, Any]]:
        """Renew the claims of one batch (each already encoded as a JSON object); returns
        rig's answer per claim (status, destinations). `agent.heartbeat` makes batches."""
        body = b'{"claims":[' + b",".join(claims) + b"]}"
        payload = await self._call("POST", "/agents/heartbeat", data=body)
        answers = payload.get("claims") if isinstance(payload, dict) else None
        if not isinstance(answers, list):
            raise RigUnavailable("rig's heartbeat answer has no claims")
        return [a for a in answers if isinstance(a, dict)]

    async def release(
        self, claim_id: str, reason: str | None = None, health: dict[str, Any] | None = None
    ) -> None:
        """The publish ended: release the claim (an unknown claim is already gone), saying
        why and with the final figures when given (docs/agent-protocol.md#release)."""
        path = f"/agents/claims/{quote(claim_id, safe='')}"
        with contextlib.suppress(StreamNotFound):
            if reason is None:
                await self._call("DELETE", path)
                return
            body = {"reason": reason} if health is None else {"reason": reason, "health": health}
            try:
                await self._call("DELETE", path, data=json.dumps(body).encode())
            except RigRefused:
                # rig refused the body (its health, say): the release matters more.
                await self._call("DELETE", path)
