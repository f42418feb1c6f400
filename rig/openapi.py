"""The OpenAPI 3.1 document of rig's HTTP API, served at `GET /openapi.json`.

Written by hand next to the code it describes (one entry per route), and kept true by
tests: every registered route is documented and every documented operation is
registered (tests/api/test_openapi.py), and schemathesis checks live responses
against it (tests/api/test_schemathesis.py).
"""

from typing import Any

from rig import __version__
from rig.streams import CALLBACK_URL_MAX, DESTINATION_KEY_MAX

JSON = "application/json"

ERROR_CODES: dict[int, tuple[str, str]] = {
    1000: ("404", "not found: unknown route or resource, or someone else's resource"),
    1001: ("405", "method not allowed on a known route (`Allow` lists the methods)"),
    1002: ("400", "Content-Type must be application/json"),
    1003: (
        "401",
        "bad credentials, or a missing, invalid, expired or revoked token;"
        " HTTP 403 when a user token calls an agent route or the reverse",
    ),
    1004: ("400", "missing required input (`details.field` names it)"),
    1005: ("400", "invalid input (`details.reason` says why); 413 for a body over 64 KiB"),
    1006: ("409", "cannot create: duplicate (`details.field`)"),
    1007: ("409", "cannot update"),
    1008: (
        "500",
        "server-side failure; 503 when the database is unreachable or the request timed out",
    ),
    1009: ("409", "in use: the stream key is live on another agent"),
    1010: ("429", "too many requests (extension): `Retry-After` says when to try again"),
}

# errorCode values each HTTP status can carry.
STATUS_CODES: dict[str, list[int]] = {
    "400": [1002, 1004, 1005],
    "401": [1003],
    "403": [1003],
    "404": [1000],
    "405": [1001],
    "413": [1005],
    "429": [1010],
    "500": [1008],
    "503": [1008],
}

STATUS_TEXT = {
    "400": "Bad request",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflict",
    "413": "Request body over 64 KiB",
    "429": "Too many requests",
    "500": "Server-side failure",
    "503": "Database unreachable or request timed out",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any) -> dict:
    """A closed object schema: `required` properties always present."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
        **extra,
    }


def body(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict:
    """A request body schema: extra properties are ignored by rig, so allowed."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


STRING = {"type": "string"}
UUID = {"type": "string", "format": "uuid"}
DATETIME = {"type": "string", "format": "date-time"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {
            "message": {"type": "string", "minLength": 1},
            "errorCode": {"type": "integer", "enum": sorted(ERROR_CODES)},
            "details": {"description": "null, or an object saying more (`field`, `reason`)"},
        },
        description="The error envelope. errorCode and HTTP status: see the API description.",
    ),
    "Destination": obj(
        {
            "id": INTEGER,
            "service": {"type": "string", "examples": ["YouTube", "Twitch", "Custom"]},
            "streamKey": STRING,
            "rtmpUrl": nullable(
                {"type": "string", "description": "the full ingest URL, key included"}
            ),
            "isActive": BOOLEAN,
        }
    ),
    "ProvisionStatus": obj(
        {"agent": nullable(STRING), "ingestUrl": STRING, "since": DATETIME},
        description="Where the stream is live (from the live claim).",
    ),
    "Stream": obj(
        {
            "id": UUID,
            "streamKey": {"type": "string", "description": "the ingest key OBS uses"},
            "destinations": nullable({"type": "array", "items": ref("Destination")}),
            "provisionStatus": nullable(ref("ProvisionStatus")),
            "isStreaming": BOOLEAN,
            "isActive": BOOLEAN,
        }
    ),
    "StreamDetail": obj(
        {
            "id": UUID,
            "streamKey": STRING,
            "destinations": nullable({"type": "array", "items": ref("Destination")}),
            "provisionStatus": nullable(ref("ProvisionStatus")),
            "isStreaming": BOOLEAN,
            "isActive": BOOLEAN,
            "health": nullable(
                {"type": "object", "description": "the last heartbeat's statistics"}
            ),
        }
    ),
    "DestinationStats": obj(
        {
            "id": INTEGER,
            "service": STRING,
            "isActive": BOOLEAN,
            "state": {
                "type": "string",
                "examples": ["off", "connecting", "live", "backoff", "failed"],
            },
            "lastError": nullable(STRING),
            "bytesSent": INTEGER,
            "reconnects": INTEGER,
        }
    ),
    "StreamStats": obj(
        {
            "isStreaming": BOOLEAN,
            "provisionStatus": nullable(ref("ProvisionStatus")),
            "ingest": nullable(
                {
                    "type": "object",
                    "description": "bitrate, frameRate, videoCodec, audioCodec, width,"
                    " height, uptime, bytesIn",
                }
            ),
            "destinations": {"type": "array", "items": ref("DestinationStats")},
        }
    ),
    "Webhook": obj(
        {
            "callbackUrl": nullable(STRING),
            "secret": nullable(
                {"type": "string", "description": "signs each event (X-Rig-Signature)"}
            ),
        }
    ),
    "ClaimAnswer": obj(
        {
            "claimId": UUID,
            "status": {"type": "string", "enum": ["live", "revoked"]},
        },
        {"destinations": {"type": "array", "items": ref("Destination")}},
    ),
}

HEADERS: dict[str, Any] = {
    "X-Request-Id": {
        "description": "the request's id (the client's X-Request-Id if it sent a valid one),"
        " also in rig's access log line",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "Allow": {
        "description": "the methods of this route",
        "required": True,
        "schema": STRING,
    },
    "WWW-Authenticate": {
        "description": '`Bearer realm="rig"` when a token is missing or bad',
        "required": False,
        "schema": STRING,
    },
}

REQUEST_ID = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}


def success(message: str, payload: dict[str, Any], description: str = "Success") -> dict:
    """The 200 response: the success envelope with this message and payload schema."""
    return {
        "description": description,
        "headers": REQUEST_ID,
        "content": {
            JSON: {
                "schema": obj({"message": {"const": message}, "payload": payload}),
            }
        },
    }


def error(status: str, codes: list[int] | None = None) -> dict:
    """An error response: the envelope, with the errorCodes this status carries."""
    codes = codes or STATUS_CODES[status]
    headers = dict(REQUEST_ID)
    if status == "429":
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    if status == "401":
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
    described = "; ".join(f"{c} {ERROR_CODES[c][1]}" for c in codes)
    return {
        "description": f"{STATUS_TEXT[status]}: errorCode {described}",
        "headers": headers,
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        ref("Error"),
                        {"properties": {"errorCode": {"enum": codes}}},
                    ]
                }
            }
        },
    }


PATH_PARAMETERS = {
    "streamID": {
        "name": "streamID",
        "in": "path",
        "required": True,
        "description": "a stream's id (a malformed or foreign id answers 1000)",
        "schema": UUID,
    },
    "destinationID": {
        "name": "destinationID",
        "in": "path",
        "required": True,
        "description": "a destination's id",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    },
    "streamKey": {
        "name": "streamKey",
        "in": "path",
        "required": True,
        "description": "a stream's ingest key",
        "schema": {"type": "string", "minLength": 1},
    },
    "claimID": {
        "name": "claimID",
        "in": "path",
        "required": True,
        "description": "a claim's id, from the claim answer",
        "schema": UUID,
    },
}

USER = [{"userToken": []}]
AGENT = [{"agentToken": []}]
ANONYMOUS: list = []


def operation(
    op_id: str,
    tag: str,
    summary: str,
    ok: dict,
    *,
    security: list = ANONYMOUS,
    request: dict | None = None,
    errors: tuple[str, ...] = (),
    conflicts: list[int] | None = None,
    params: tuple[str, ...] = (),
    description: str = "",
) -> dict:
    """One operation: its 200 answer and every error status it can give."""
    statuses = set(errors) | {"500", "503"}
    if security:
        statuses |= {"401", "403"}
    if request is not None:
        statuses |= {"400", "413"}
    responses: dict[str, Any] = {"200": ok}
    for status in sorted(statuses | ({"409"} if conflicts else set())):
        responses[status] = error(status, conflicts if status == "409" else None)
    op: dict[str, Any] = {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "security": security,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = [PATH_PARAMETERS[p] for p in params]
    if request is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": request}}}
    return op


USERNAME = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_.-]{3,64}$",
    "description": "3-64 letters, digits, `.`, `-`, `_`; unique case-insensitively",
}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 1024}
DESTINATION_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": DESTINATION_KEY_MAX,
    "description": "the service's stream key: no spaces or control characters",
}
RTMP_URL = {
    "type": "string",
    "maxLength": 512,
    "pattern": "^rtmps?://",
    "description": "Custom only: the server URL, rtmp:// or rtmps://, host, application path",
}
STREAM = ref("Stream")
DESTINATION = ref("Destination")
STREAM_SAMPLE = "_mYrirpvU-OkH5LoVDci4g"


def paths() -> dict[str, dict[str, Any]]:
    """Every route of rig, by canonical path and method."""
    return {
        "/accounts/": {
            "post": operation(
                "createAccount",
                "accounts",
                "Create an account",
                success(
                    "User created",
                    obj({"userID": UUID, "username": STRING, "email": STRING}),
                ),
                request=body(
                    {
                        "username": USERNAME,
                        "password": PASSWORD,
                        "email": {
                            "type": "string",
                            "maxLength": 254,
                            "description": "a plausible address: one @, a dot in the domain",
                        },
                    }
                ),
                errors=("429",),
                conflicts=[1006],
                description="Rate limited per client address and per username (429).",
            )
        },
        "/accounts/auth/local": {
            "post": operation(
                "login",
                "accounts",
                "Log in: exchange username and password for a user token",
                success("Authentication successful", obj({"username": STRING, "token": STRING})),
                request=body({"username": STRING, "password": STRING}),
                errors=("401", "429"),
                description="A wrong username and a wrong password get the same answer"
                " (1003). Rate limited per client address and per username (429).",
            )
        },
        "/accounts/password": {
            "post": operation(
                "changePassword",
                "accounts",
                "Change the caller's password; earlier tokens stop working",
                success("User password changed", obj({"username": STRING})),
                security=USER,
                request=body({"oldPassword": STRING, "newPassword": PASSWORD}),
                conflicts=[1007],
            )
        },
        "/streams/": {
            "post": operation(
                "createStream",
                "streams",
                "Create a stream with a fresh 128-bit ingest key (no body)",
                success("New stream created", STREAM),
                security=USER,
            ),
            "get": operation(
                "listStreams",
                "streams",
                "The caller's streams, oldest first (without destinations)",
                success("Stream list for user", {"type": "array", "items": STREAM}),
                security=USER,
            ),
        },
        "/streams/{streamID}": {
            "get": operation(
                "getStream",
                "streams",
                "One stream with its destinations and live health",
                success("Stream detail", ref("StreamDetail")),
                security=USER,
                params=("streamID",),
                errors=("404",),
            ),
            "patch": operation(
                "updateStream",
                "streams",
                "Activate or deactivate a stream (extension)",
                success("Stream updated", STREAM),
                security=USER,
                params=("streamID",),
                request=body({"isActive": BOOLEAN}),
                errors=("404",),
                description="Deactivating ends a live publish within one agent heartbeat.",
            ),
            "delete": operation(
                "deleteStream",
                "streams",
                "Delete a stream and its destinations (extension)",
                success("Stream deleted", obj({"streamID": UUID})),
                security=USER,
                params=("streamID",),
                errors=("404",),
            ),
        },
        "/streams/{streamID}/destination": {
            "post": operation(
                "addDestination",
                "streams",
                "Add a destination: a service and its stream key (Custom: + rtmpUrl)",
                success("Stream destination added", DESTINATION),
                security=USER,
                params=("streamID",),
                request=body(
                    {"service": STRING, "streamKey": DESTINATION_KEY},
                    {"rtmpUrl": RTMP_URL},
                ),
                errors=("404",),
                conflicts=[1006],
            )
        },
        "/streams/{streamID}/destination/{destinationID}": {
            "patch": operation(
                "updateDestination",
                "streams",
                "Change a destination's streamKey, isActive or (Custom) rtmpUrl (extension)",
                success("Stream destination updated", DESTINATION),
                security=USER,
                params=("streamID", "destinationID"),
                request=body(
                    {},
                    {"streamKey": DESTINATION_KEY, "isActive": BOOLEAN, "rtmpUrl": RTMP_URL},
                ),
                errors=("404",),
                conflicts=[1007],
                description="A live stream's agent applies the change within one heartbeat.",
            ),
            "delete": operation(
                "deleteDestination",
                "streams",
                "Remove a destination (extension)",
                success("Stream destination deleted", obj({"id": INTEGER})),
                security=USER,
                params=("streamID", "destinationID"),
                errors=("404",),
            ),
        },
        "/streams/{streamID}/changeKey": {
            "post": operation(
                "changeStreamKey",
                "streams",
                "Rotate the ingest key; a live publish with the old key is ended",
                success("New stream key", obj({"key": STRING, "streamID": UUID})),
                security=USER,
                params=("streamID",),
                errors=("404",),
            )
        },
        "/streams/{streamID}/stats": {
            "get": operation(
                "getStreamStats",
                "streams",
                "Live statistics: ingest and per destination (extension)",
                success("Stream statistics", ref("StreamStats")),
                security=USER,
                params=("streamID",),
                errors=("404",),
            )
        },
        "/streams/{streamID}/webhook": {
            "get": operation(
                "getWebhook",
                "streams",
                "The stream's callbackUrl and the secret that signs its events (extension)",
                success("Stream webhook", ref("Webhook")),
                security=USER,
                params=("streamID",),
                errors=("404",),
            ),
            "put": operation(
                "setWebhook",
                "streams",
                "Set (or, with null, remove) the stream's callbackUrl (extension)",
                success("Stream webhook", ref("Webhook")),
                security=USER,
                params=("streamID",),
                request=body(
                    {
                        "callbackUrl": nullable(
                            {
                                "type": "string",
                                "maxLength": CALLBACK_URL_MAX,
                                "pattern": "^https?://",
                            }
                        )
                    }
                ),
                errors=("404",),
            ),
        },
        "/agents/auth": {
            "post": operation(
                "authenticateAgent",
                "agents",
                "Exchange an agent API key for a short-lived agent token",
                success("Agent authenticated", obj({"token": STRING, "expiresAt": DATETIME})),
                request=body({"apiKey": STRING}),
                errors=("401", "429"),
                description="Rate limited per client address (429).",
            )
        },
        "/agents/config/{streamKey}": {
            "get": operation(
                "getStreamConfig",
                "agents",
                "The destinations of the active stream with this ingest key",
                success("Stream Config", {"type": "array", "items": DESTINATION}),
                security=AGENT,
                params=("streamKey",),
                errors=("404",),
            )
        },
        "/agents/streams/{streamKey}/claim": {
            "post": operation(
                "claimStream",
                "agents",
                "Claim a stream key for a publish starting on this agent (extension)",
                success(
                    "Stream claimed",
                    obj(
                        {
                            "claimId": UUID,
                            "streamId": UUID,
                            "expiresAt": DATETIME,
                            "destinations": {"type": "array", "items": DESTINATION},
                        }
                    ),
                ),
                security=AGENT,
                params=("streamKey",),
                request=body(
                    {
                        "ingestUrl": {
                            "type": "string",
                            "maxLength": 512,
                            "pattern": "^rtmps?://",
                        }
                    }
                ),
                errors=("404",),
                conflicts=[1009],
            )
        },
        "/agents/heartbeat": {
            "post": operation(
                "heartbeat",
                "agents",
                "Renew every claim of this agent, with each stream's health (extension)",
                success(
                    "Heartbeat accepted",
                    obj({"claims": {"type": "array", "items": ref("ClaimAnswer")}}),
                ),
                security=AGENT,
                request=body(
                    {
                        "claims": {
                            "type": "array",
                            "maxItems": 1000,
                            "items": body(
                                {"claimId": UUID, "streamKey": STRING},
                                {"health": nullable({"type": "object"})},
                            ),
                        }
                    }
                ),
            )
        },
        "/agents/claims/{claimID}": {
            "delete": operation(
                "releaseClaim",
                "agents",
                "The publish ended: release the claim (extension)",
                success("Claim released", {"type": "null"}),
                security=AGENT,
                params=("claimID",),
                errors=("404",),
            )
        },
        "/healthz": {
            "get": operation(
                "healthz",
                "operations",
                "Liveness: the process answers",
                success("OK", obj({"status": {"const": "ok"}})),
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "operations",
                "Readiness: the database answers (503 when it does not)",
                success("Ready", obj({"status": {"const": "ok"}, "database": {"const": "ok"}})),
            )
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics: requests by route pattern and status, latency",
                "security": ANONYMOUS,
                "responses": {
                    "200": {
                        "description": "the Prometheus text exposition format",
                        "headers": REQUEST_ID,
                        "content": {"text/plain": {"schema": STRING}},
                    },
                    "500": error("500"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "security": ANONYMOUS,
                "responses": {
                    "200": {
                        "description": "the OpenAPI 3.1 document",
                        "headers": REQUEST_ID,
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    "500": error("500"),
                },
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "tags": ["operations"],
                "summary": "This document as a web page",
                "security": ANONYMOUS,
                "responses": {
                    "200": {
                        "description": "an HTML page",
                        "headers": REQUEST_ID,
                        "content": {"text/html": {"schema": STRING}},
                    },
                    "500": error("500"),
                },
            }
        },
    }


DESCRIPTION = """\
rig is a self-hostable RTMP multistreaming relay. This is its control plane's HTTP API.

Every answer is a JSON envelope: `{"message", "payload"}` with HTTP 200 on success,
`{"message", "errorCode", "details"}` on error. Requests with a body must send
`Content-Type: application/json`; bodies are limited to 64 KiB. Client routes take a
user token, agent routes an agent token (`Authorization: Bearer <JWT>`).

| errorCode | HTTP | meaning |
|---|---|---|
""" + "\n".join(f"| {code} | {http} | {text} |" for code, (http, text) in ERROR_CODES.items())


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of rig's API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rig",
            "version": __version__,
            "summary": "RTMP multistreaming relay: control plane API",
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": "accounts", "description": "users: sign up, log in, change password"},
            {"name": "streams", "description": "a user's streams and their destinations"},
            {"name": "agents", "description": "ingest agents: credentials, config, live state"},
            {"name": "operations", "description": "health, readiness, metrics, this document"},
        ],
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "headers": HEADERS,
            "securitySchemes": {
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a user token from POST /accounts/auth/local",
                },
                "agentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "an agent token from POST /agents/auth",
                },
            },
        },
    }
