"""Every JSON shape of the API, defined once: request bodies and answer payloads.

Request bodies are validated with these models (rig/body.py turns pydantic's errors into
the v1 error codes) and the OpenAPI document is generated from them (rig/openapi.py), so
what rig accepts and what it documents cannot drift apart. Answer payloads are built as
these models too, so what rig answers is what the document says.

Conventions: request models are strict (a number is not a string, 0 is not false) and
ignore unknown fields; a null where a value is required counts as missing, as in v1.
Answer models are closed (`additionalProperties: false`) and list every field as
required: rig always sends every field, null when there is nothing.
"""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from rig.services import CUSTOM, DEFAULT_SERVICE_URLS, MAX_URL_LENGTH, rtmp_server_url_problem

DESTINATION_KEY_MAX = 512
CALLBACK_URL_MAX = 2048
INGEST_URL_MAX = 512
HEARTBEAT_CLAIMS_MAX = 1000
GRACE_SECONDS_MAX = 600
PASSWORD_MIN, PASSWORD_MAX = 8, 1024

STREAM_KEY_EXAMPLE = "_mYrirpvU-OkH5LoVDci4g"
STREAM_ID_EXAMPLE = "953e9b7c-8f0e-4b4c-9a53-2f0b8cde5a11"
TIME_EXAMPLE = "2026-11-23T20:12:33.809Z"


# ------------------------------------------------------------------ rules


def rule(reason: str) -> PydanticCustomError:
    """A broken rule, said in words for the client (`details.reason`)."""
    return PydanticCustomError("rule", reason)


def because(reason: str) -> WrapValidator:
    """Report a failure of the wrapped value itself as `reason`; a wrong JSON type
    ("must be a string") and the failures of its fields are reported as they are."""

    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            errors = exc.errors()
            if any(error["type"] == "string_type" or error["loc"] for error in errors):
                raise
            raise rule(reason) from None

    return WrapValidator(validate)


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise PydanticCustomError("nul", "must not contain NUL")
    return value


def _printable(value: str) -> bool:
    return not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value)


def _checked(check: Callable[[Any], str | None]) -> AfterValidator:
    """An after-validator from a function that says what is wrong (None: nothing)."""

    def validate(value: Any) -> Any:
        problem = check(value)
        if problem:
            raise rule(problem)
        return value

    return AfterValidator(validate)


def _callback_url_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    reason = f"an http:// or https:// URL of at most {CALLBACK_URL_MAX} characters"
    if not url.startswith(("http://", "https://")) or not _printable(url):
        return reason
    try:
        return None if urlsplit(url).hostname else reason
    except ValueError:
        return reason


# ------------------------------------------------------------------ field types

Text = Annotated[str, AfterValidator(_no_nul)]
"""Any string PostgreSQL can store."""


def _in_utc(moment: datetime) -> datetime:
    """The moment in UTC; a time zone that pushes it past the year 9999 (or before 1)
    is refused, as neither Python nor PostgreSQL's drivers take such a date."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise rule("a date-time between the years 1 and 9999 in UTC") from None


Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A date-time with a time zone, as UTC."""

Username = Annotated[
    Text,
    Field(
        pattern=r"^[A-Za-z0-9_.-]{3,64}$",
        description="3-64 letters, digits, `.`, `-`, `_`; unique case-insensitively",
        examples=["alice"],
    ),
    because("3 to 64 characters: letters, digits, '.', '-', '_'"),
]
Password = Annotated[
    Text,
    Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, examples=["correct horse"]),
    because(f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
]
Email = Annotated[
    Text,
    Field(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="a plausible address: one @, a dot in the domain; unique",
        examples=["alice@example.com"],
    ),
    because("not a valid email address"),
]
Service = Literal[(*DEFAULT_SERVICE_URLS, CUSTOM)]
ServiceName = Annotated[
    Service,
    Field(description="the destination's service (case-sensitive)", examples=["YouTube"]),
    because(f"unknown service; one of {', '.join([*sorted(DEFAULT_SERVICE_URLS), CUSTOM])}"),
]
DestinationKey = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=DESTINATION_KEY_MAX,
        description="the service's stream key: no spaces or control characters",
        examples=["xxxx-xxxx-xxxx-xxxx"],
    ),
    _checked(lambda key: None if _printable(key) else "no spaces"),
    because(f"1 to {DESTINATION_KEY_MAX} characters, no spaces"),
]
RtmpServerUrl = Annotated[
    Text,
    Field(
        max_length=MAX_URL_LENGTH,
        pattern="^rtmps?://",
        description="Custom only: the server URL, rtmp:// or rtmps://, a host, an application"
        " path (as OBS's Server field); the destination's key is appended to it",
        examples=["rtmp://live.example.net/app"],
    ),
    # The pattern and length, said as rtmp_server_url_problem says the rest.
    because(f"an rtmp:// or rtmps:// URL of at most {MAX_URL_LENGTH} characters"),
    _checked(rtmp_server_url_problem),
    AfterValidator(lambda url: url.rstrip("/")),
]
IngestUrl = Annotated[
    Text,
    Field(
        max_length=INGEST_URL_MAX,
        pattern="^rtmps?://",
        description="where the publisher is connected: the agent's public RTMP URL",
        examples=["rtmp://ingest-1.example.net/live"],
    ),
    because(f"an rtmp:// or rtmps:// URL of at most {INGEST_URL_MAX} characters"),
]
CallbackUrl = Annotated[
    Text,
    Field(max_length=CALLBACK_URL_MAX, pattern="^https?://", examples=["https://example.com/hook"]),
    _checked(_callback_url_problem),
    because(f"an http:// or https:// URL of at most {CALLBACK_URL_MAX} characters"),
]
GraceSeconds = Annotated[
    int,
    Field(
        ge=0,
        le=GRACE_SECONDS_MAX,
        description="how long the destinations are held (with a slate) for the publisher"
        " to come back, seconds",
        examples=[30],
    ),
    because(f"an integer from 0 to {GRACE_SECONDS_MAX}"),
]
IngestState = Literal["live", "backup", "holding"]
"""What feeds a live stream's destinations: the primary, the backup, or the slate."""


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as web clients parse it."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


StreamName = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=100,
        description="1-100 characters, no control characters",
        examples=["Friday night speedruns"],
    ),
    _checked(lambda name: None if name.isprintable() else "no control characters"),
    because("1 to 100 characters, no control characters"),
]


Time = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": [TIME_EXAMPLE]}),
]
StreamId = Annotated[uuid.UUID, Field(examples=[STREAM_ID_EXAMPLE])]


# ------------------------------------------------------------------ request bodies

HEALTH_EXAMPLE = {
    "ingestUrl": "rtmp://ingest-1.example.net/live",
    "ingest": {
        "bytesIn": 1687500,
        "bitrate": 4500000,
        "uptime": 3.0,
        "frameRate": 30.0,
        "keyframeInterval": 2.0,
        "videoCodec": "h264",
        "width": 1280,
        "height": 720,
        "audioCodec": "aac",
        "audioSampleRate": 48000,
        "audioChannels": 2,
    },
    "destinations": [
        {
            "id": 1,
            "service": "YouTube",
            "state": "live",
            "lastError": None,
            "retryIn": None,
            "bytesSent": 1680000,
            "reconnects": 0,
            "liveSeconds": 2.9,
            "droppedPackets": 0,
        }
    ],
}


class Body(BaseModel):
    """A request body: strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class NewAccount(Body):
    username: Username
    password: Password
    email: Email


class Login(Body):
    username: Annotated[Text, Field(examples=["alice"])]
    password: Annotated[Text, Field(examples=["correct horse"])]


class PasswordChange(Body):
    oldPassword: Annotated[Text, Field(examples=["correct horse"])]
    newPassword: Annotated[Password, Field(examples=["battery staple"])]


class DisconnectProtectionChange(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"graceSeconds": 60}]})

    enabled: bool | None = None
    graceSeconds: GraceSeconds | None = None


class NewStream(Body):
    """The optional body of `POST /streams/` (no body: a stream without a name)."""

    name: Annotated[StreamName | None, Field(examples=["Friday night speedruns"])] = None


class StreamChange(Body):
    name: Annotated[
        StreamName | None,
        Field(description="null removes the name", examples=["Friday night speedruns"]),
    ] = None
    isActive: Annotated[
        bool | None,
        Field(
            description="false deactivates (a live publish is ended), true reactivates",
            examples=[False],
        ),
    ] = None
    disconnectProtection: Annotated[
        DisconnectProtectionChange | None,
        Field(
            description="either field or both; a live stream's agent applies it within a heartbeat"
        ),
        because("an object with enabled and/or graceSeconds"),
    ] = None


class NewDestination(Body):
    service: ServiceName
    streamKey: DestinationKey
    rtmpUrl: RtmpServerUrl | None = None


class DestinationChange(Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"isActive": False}]})

    streamKey: DestinationKey | None = None
    isActive: bool | None = None
    rtmpUrl: RtmpServerUrl | None = None


class WebhookChange(Body):
    callbackUrl: Annotated[
        CallbackUrl | None, Field(description="where events are POSTed; null removes the webhook")
    ]


class AgentAuth(Body):
    apiKey: Annotated[
        Text,
        Field(description="from `rig agents create NAME`", examples=["rigagent_3q2-Xk..."]),
    ]


class ClaimRequest(Body):
    ingestUrl: IngestUrl


def _claims_list(value: Any) -> Any:
    """Checked before the items, so a huge list costs nothing to refuse."""
    if value is not None and (not isinstance(value, list) or len(value) > HEARTBEAT_CLAIMS_MAX):
        raise rule(f"an array of at most {HEARTBEAT_CLAIMS_MAX} claims")
    return value


class ClaimBeat(Body):
    claimId: Annotated[
        uuid.UUID,
        Field(
            strict=False,
            description="from the claim answer",
            examples=["2b0c6e0e-5d7a-4a52-9a1c-6b8d0f3e4a17"],
        ),
        because("a claim id from the claim answer"),
    ]
    streamKey: Annotated[Text, Field(examples=[STREAM_KEY_EXAMPLE])]
    health: Annotated[
        dict[str, Any] | None,
        Field(
            description="the stream's statistics, as the agent measures them"
            " (docs/agent-protocol.md#heartbeat-health)",
            examples=[HEALTH_EXAMPLE],
        ),
        because("an object"),
    ] = None
    backupStreamKey: Annotated[
        Text | None,
        Field(
            description="the key of the backup publisher attached to this claim's broadcast,"
            " if one is; answered with backupStatus",
            examples=[STREAM_KEY_EXAMPLE],
        ),
    ] = None


AgentEndReason = Literal["ended", "kicked", "idle", "error", "shutdown", "grace expired"]


class Release(Body):
    """The optional body of `DELETE /agents/claims/{claimID}` (none: reason `ended`)."""

    reason: Annotated[
        AgentEndReason,
        Field(description="why the publish ended", examples=["ended"]),
        because("ended, kicked, idle, error, shutdown or grace expired"),
    ] = "ended"
    health: Annotated[
        dict[str, Any] | None,
        Field(
            description="the final figures, as in a heartbeat: stored before the session ends",
            examples=[HEALTH_EXAMPLE],
        ),
        because("an object"),
    ] = None


class Heartbeat(Body):
    """Each entry is read on its own (rig/live.py): an entry that is not a ClaimBeat is
    answered `invalid` while the others are renewed, so the batch as a whole only needs
    to be an array of at most HEARTBEAT_CLAIMS_MAX entries."""

    claims: Annotated[
        list[
            Annotated[
                ClaimBeat | Any,
                Field(
                    description="a ClaimBeat; an entry that is not one is answered"
                    " {claimId, status: invalid, reason}, and the others are renewed"
                ),
            ]
        ],
        Field(max_length=HEARTBEAT_CLAIMS_MAX),
        BeforeValidator(_claims_list),
    ]


API_KEY_EXAMPLE = "rigkey_Zr3q2-Xk8pQeW1tYbN4vL0sD7fGhJ2mC5aR9uI6oE3w"


class NewApiKey(Body):
    name: Annotated[
        Text,
        Field(min_length=1, max_length=64, examples=["stream deck"]),
        because("1 to 64 characters"),
    ]
    scope: Annotated[
        Literal["full", "read"],
        Field(description="`read`: GET routes only", examples=["read"]),
        because("full or read"),
    ] = "full"
    streamId: Annotated[
        uuid.UUID | None,
        Field(
            strict=False,
            description="the one stream the key may see and change (null: all; creating"
            " streams is then refused)",
        ),
        because("a stream id"),
    ] = None
    expiresAt: Annotated[
        Moment | None,
        Field(
            strict=False,
            description="when the key stops working (ISO 8601 with a time zone; null: never)",
        ),
        because("a future date-time with a time zone, e.g. 2030-01-01T00:00:00Z"),
    ] = None


class TokenRequest(Body):
    apiKey: Annotated[Text, Field(description="an API key's secret", examples=[API_KEY_EXAMPLE])]


class Query(BaseModel):
    """Query parameters: text from the URL, so numbers are parsed (lax), extras ignored."""

    model_config = ConfigDict(extra="ignore")


class Page(Query):
    limit: Annotated[
        int | None,
        Field(ge=1, le=100, description="items per page, 1-100 (without it: everything)"),
        because("an integer from 1 to 100"),
    ] = None
    page: Annotated[
        int | None,
        Field(ge=1, le=1_000_000, description="which page, from 1 (needs limit)"),
        because("an integer from 1"),
    ] = None


# ------------------------------------------------------------------ answers


class Answer(BaseModel):
    """An answer payload: every field always present, nothing else."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class AccountCreated(Answer):
    userID: uuid.UUID
    username: str
    email: str


class LoggedIn(Answer):
    username: str
    token: str


class PasswordChanged(Answer):
    username: str


class Destination(Answer):
    id: int
    service: Annotated[str, Field(examples=["YouTube"])]
    streamKey: str
    rtmpUrl: Annotated[str | None, Field(description="the full ingest URL, key included")]
    isActive: bool


class ProvisionStatus(Answer):
    """Where the stream is live (from the live claim)."""

    agent: str | None
    ingestUrl: str
    since: Time


class DisconnectProtection(Answer):
    """Hold the destinations (with a slate) when the publisher drops without unpublishing."""

    enabled: bool
    graceSeconds: Annotated[int, Field(ge=0, le=GRACE_SECONDS_MAX, examples=[30])]


StreamIngestState = Annotated[
    Literal["offline", "live", "backup", "holding"],
    Field(
        description="offline: no live claim; live: the primary feeds the destinations;"
        " backup: the backup does; holding: the slate does, waiting for a publisher"
    ),
]


class Stream(Answer):
    id: StreamId
    name: Annotated[str | None, Field(description="null when unnamed")]
    streamKey: Annotated[str, Field(description="the ingest key OBS uses")]
    destinations: list[Destination] | None
    provisionStatus: ProvisionStatus | None
    isStreaming: bool
    isActive: bool
    backupStreamKey: Annotated[
        str | None,
        Field(description="the second ingest key (POST .../backupKey); null until created"),
    ]
    disconnectProtection: DisconnectProtection
    ingestState: StreamIngestState


class StreamDetail(Stream):
    health: Annotated[dict[str, Any] | None, Field(description="the last heartbeat's statistics")]


class StreamDeleted(Answer):
    streamID: uuid.UUID


class DestinationDeleted(Answer):
    id: int


class KeyChanged(Answer):
    key: str
    streamID: uuid.UUID


class DestinationStats(Answer):
    id: int
    service: str
    isActive: bool
    state: Annotated[str, Field(examples=["off", "connecting", "live", "backoff", "failed"])]
    lastError: str | None
    bytesSent: int
    reconnects: int
    retryIn: Annotated[
        float | None, Field(description="seconds until the next attempt while in backoff")
    ]
    liveSeconds: Annotated[
        float | None, Field(description="seconds live in this session (null: not reported)")
    ]
    droppedPackets: Annotated[int, Field(description="media dropped while it lagged behind")]


class Diagnostic(Answer):
    """Something the streamer should change for a destination's service (rig/diagnostics.py)."""

    service: Annotated[str, Field(examples=["Twitch"])]
    severity: Annotated[
        Literal["warning", "info"],
        Field(description="warning: the service requires otherwise; info: it recommends"),
    ]
    code: Annotated[
        str,
        Field(
            description="keyframe-interval, bitrate-high, bitrate-low, resolution, frame-rate,"
            " video-codec, audio-codec or audio-sample-rate",
            examples=["keyframe-interval"],
        ),
    ]
    message: Annotated[
        str,
        Field(
            examples=[
                "A keyframe every 8.3 s; Twitch needs one at least every 2 s: set the"
                " keyframe interval to 2 s (OBS: Settings, Output, Keyframe Interval)."
            ]
        ),
    ]


class StreamStats(Answer):
    isStreaming: bool
    provisionStatus: ProvisionStatus | None
    ingestState: StreamIngestState
    ingest: Annotated[
        dict[str, Any] | None,
        Field(
            description="bitrate, frameRate, videoCodec, audioCodec, width, height, uptime, bytesIn"
        ),
    ]
    destinations: list[DestinationStats]
    diagnostics: Annotated[
        list[Diagnostic],
        Field(description="the live ingest against each active destination's service"),
    ]


class IngestServers(Answer):
    ingestUrls: Annotated[
        list[str],
        Field(
            description="RTMP server URLs streamers push to (OBS's Server), the default first;"
            " empty when the operator has not set RIG_INGEST_URLS",
            examples=[["rtmp://live.example.com/live"]],
        ),
    ]


class Webhook(Answer):
    callbackUrl: str | None
    secret: Annotated[str | None, Field(description="signs each event (X-Rig-Signature)")]


class AgentToken(Answer):
    token: str
    expiresAt: Time


class Claimed(Answer):
    claimId: Annotated[
        uuid.UUID,
        Field(
            description="the stream's broadcast on this agent: the same id when this agent"
            " already holds the stream (a backup joining, the primary coming back)"
        ),
    ]
    streamId: uuid.UUID
    expiresAt: Time
    destinations: list[Destination]
    role: Annotated[
        Literal["primary", "backup"], Field(description="which of the stream's keys was claimed")
    ]
    disconnectProtection: DisconnectProtection
    thumbnailWanted: Annotated[
        bool,
        Field(
            description="someone asked for the stream's picture within the last minute:"
            " make its thumbnails (docs/agent-protocol.md#thumbnail-upload)"
        ),
    ] = False


def _is_none(value: Any) -> bool:
    return value is None


class ClaimAnswer(Answer):
    claimId: uuid.UUID
    status: Annotated[
        Literal["live", "revoked"], Field(description="revoked: end that publish at once")
    ]
    destinations: Annotated[
        list[Destination] | None,
        Field(description="the current destinations (live claims only)", exclude_if=_is_none),
    ] = None
    disconnectProtection: Annotated[
        DisconnectProtection | None,
        Field(description="the current setting (live claims only)", exclude_if=_is_none),
    ] = None
    backupStatus: Annotated[
        Literal["live", "revoked"] | None,
        Field(
            description="only when the entry named a backupStreamKey: revoked when that key is"
            " no longer the stream's backup key (end the backup publisher, keep the broadcast)",
            exclude_if=_is_none,
        ),
    ] = None
    thumbnailWanted: Annotated[
        bool | None,
        Field(
            description="someone asked for the stream's picture within the last minute:"
            " make its thumbnails (live claims only)",
            exclude_if=_is_none,
        ),
    ] = None


class ApiKey(Answer):
    """An API key, never its secret."""

    id: uuid.UUID
    name: str
    scope: Literal["full", "read"]
    streamId: uuid.UUID | None
    createdAt: Time
    expiresAt: Time | None
    lastUsedAt: Annotated[Time | None, Field(description="to the minute")]


class ApiKeyCreated(ApiKey):
    apiKey: Annotated[
        str,
        Field(
            description="the secret: shown this once (rig keeps only a hash)",
            examples=[API_KEY_EXAMPLE],
        ),
    ]


class ApiKeyRevoked(Answer):
    id: uuid.UUID


class AccessToken(Answer):
    token: Annotated[str, Field(description="send as `Authorization: Bearer <token>`")]
    expiresAt: Time


EndReason = Literal[AgentEndReason, "expired", "key changed", "deactivated", "taken over"]


class SessionIngest(Answer):
    """The ingest's facts as its agent last reported them (null: never reported)."""

    videoCodec: Annotated[str | None, Field(examples=["h264"])]
    audioCodec: Annotated[str | None, Field(examples=["aac"])]
    width: int | None
    height: int | None
    frameRate: float | None
    audioSampleRate: int | None
    audioChannels: int | None
    keyframeInterval: Annotated[float | None, Field(description="seconds, measured")]
    bytesIn: int
    averageBitrate: Annotated[int, Field(description="bit/s: bytesIn * 8 / the duration")]


class SessionDestination(Answer):
    id: int
    service: str | None
    bytesSent: int
    liveSeconds: float
    reconnects: int
    lastError: str | None


class Session(Answer):
    id: uuid.UUID
    startedAt: Time
    endedAt: Annotated[Time | None, Field(description="null: the session is live now")]
    endReason: Annotated[
        EndReason | None,
        Field(
            description="the agent's (ended, kicked, idle, error, shutdown, grace expired)"
            " or rig's (expired, key changed, deactivated, taken over); null while live"
        ),
    ]
    agent: Annotated[str | None, Field(description="the agent's name")]
    ingest: SessionIngest
    destinations: list[SessionDestination]
    holdingSeconds: Annotated[float, Field(description="seconds the slate fed the destinations")]
    diagnostics: Annotated[
        list[Diagnostic],
        Field(description="the session's ingest (average bitrate) against its services"),
    ]


class ThumbnailStored(Answer):
    width: int
    height: int
    takenAt: Time


class InvalidClaimAnswer(Answer):
    """A heartbeat entry rig could not read: that claim was not renewed."""

    claimId: Annotated[
        str | None, Field(description="as the entry gave it (cut to 200 characters), if text")
    ]
    status: Literal["invalid"]
    reason: Annotated[str, Field(description="what is wrong with the entry")]


class HeartbeatAnswer(Answer):
    claims: Annotated[
        list[ClaimAnswer | InvalidClaimAnswer],
        Field(description="one answer per entry, in the order of the entries"),
    ]


class Alive(Answer):
    status: Literal["ok"]


class Ready(Answer):
    status: Literal["ok"]
    database: Literal["ok"]
