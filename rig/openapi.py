"""The OpenAPI 3.1 document of rig's HTTP API, served at `GET /openapi.json`.

Generated, never written by hand: the operations come from the routes as registered
(rig/api.py: summary, auth, body, answer of each), the schemas from the models that
also validate the requests and build the answers (rig/shapes.py). What stays here is
what no model says: the envelope around every answer, the errorCodes each HTTP status
carries, the path parameters and the security schemes.
"""

import json
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from rig import __version__
from rig.api import Operation
from rig.docs import ASSET_FILES

JSON = "application/json"
SCHEMA_REF = "#/components/schemas/{model}"

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
    return {"$ref": SCHEMA_REF.format(model=name)}


ERROR_SCHEMA = {
    "type": "object",
    "required": ["message", "errorCode", "details"],
    "properties": {
        "message": {"type": "string", "minLength": 1},
        "errorCode": {"type": "integer", "enum": sorted(ERROR_CODES)},
        "details": {"description": "null, or an object saying more (`field`, `reason`)"},
    },
    "additionalProperties": False,
    "description": "The error envelope. errorCode and HTTP status: see the API description.",
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
    "X-Total-Count": {
        "description": "how many items the whole list has (paged requests: with `limit`)",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
    },
    "Allow": {
        "description": "the methods of this route",
        "required": True,
        "schema": {"type": "string"},
    },
    "WWW-Authenticate": {
        "description": '`Bearer realm="rig"` when a token is missing or bad',
        "required": False,
        "schema": {"type": "string"},
    },
}

REQUEST_ID = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}


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


UUID = {"type": "string", "format": "uuid"}

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
    "asset": {
        "name": "asset",
        "in": "path",
        "required": True,
        "description": "a file of the explorer",
        "schema": {"type": "string", "enum": list(ASSET_FILES)},
    },
    "keyID": {
        "name": "keyID",
        "in": "path",
        "required": True,
        "description": "an API key's id",
        "schema": UUID,
    },
    "path": {
        "name": "path",
        "in": "path",
        "required": True,
        "description": "a file of the dashboard, e.g. `js/main.js`",
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

SECURITY: dict[str, list[dict[str, list]]] = {
    "user": [{"userToken": []}, {"apiKey": []}],
    "account": [{"userToken": []}],
    "agent": [{"agentToken": []}],
}


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema without a generated title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _models(payload: Any) -> list[type[BaseModel]]:
    """The models a payload type is made of (`list[Stream]` -> [Stream])."""
    if isinstance(payload, type) and issubclass(payload, BaseModel):
        return [payload]
    return [m for arg in typing.get_args(payload) for m in _models(arg)]


def _payload_schema(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {"type": "null"}
    if isinstance(payload, type) and issubclass(payload, BaseModel):
        return ref(payload.__name__)
    if typing.get_origin(payload) is list:
        return {"type": "array", "items": _payload_schema(typing.get_args(payload)[0])}
    if isinstance(payload, types.UnionType):
        return {"anyOf": [_payload_schema(arg) for arg in typing.get_args(payload)]}
    raise TypeError(f"no schema for payload type {payload!r}")


def component_schemas(operations: Iterable[Operation]) -> dict[str, Any]:
    """Every model the operations use: bodies as validated, answers as serialized."""
    wanted: dict[tuple[type[BaseModel], str], None] = {}
    for op in operations:
        for model in (op.body, op.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for model in _models(op.payload):
            wanted[(model, "serialization")] = None
    _, top = models_json_schema(list(wanted), ref_template=SCHEMA_REF, schema_generator=_Generator)
    return {"Error": ERROR_SCHEMA, **top.get("$defs", {})}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=SCHEMA_REF, schema_generator=_Generator)
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            **({"description": prop["description"]} if "description" in prop else {}),
            "schema": {k: v for k, v in prop.items() if k != "description"},
        }
        for name, prop in schema["properties"].items()
    ]


def _raw_schema(content_type: str) -> dict[str, Any]:
    """The schema of an answer that is not an envelope."""
    if content_type == JSON:
        return {"type": "object"}
    if content_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "contentMediaType": content_type}


def _success(op: Operation) -> dict[str, Any]:
    headers = dict(REQUEST_ID)
    for name in op.response_headers:
        headers[name] = {"$ref": f"#/components/headers/{name}"}
    if op.message is None:
        return {
            "description": op.summary,
            "headers": headers,
            "content": {kind: {"schema": _raw_schema(kind)} for kind in op.content_types},
        }
    envelope = {
        "type": "object",
        "required": ["message", "payload"],
        "properties": {"message": {"const": op.message}, "payload": _payload_schema(op.payload)},
        "additionalProperties": False,
    }
    return {"description": "Success", "headers": headers, "content": {JSON: {"schema": envelope}}}


def operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    """One operation: its 200 answer, every error status it can give, an example body
    and a curl command."""
    statuses = set(op.errors) | {"500", "503"}
    if op.auth:
        statuses |= {"401", "403"}
    if op.body is not None or op.raw_body is not None:
        statuses |= {"400", "413"}
    if op.query is not None:
        statuses.add("400")
    if op.conflicts:
        statuses.add("409")
    responses: dict[str, Any] = {"200": _success(op)}
    for status in sorted(statuses):
        responses[status] = error(status, list(op.conflicts) if status == "409" else None)
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
        "security": SECURITY.get(op.auth or "", []),
        "responses": responses,
    }
    body = example(ref(op.body.__name__), schemas) if op.body is not None else None
    command = curl(op, body)
    document["description"] = "\n\n".join(filter(None, [op.description, f"```sh\n{command}\n```"]))
    document["x-codeSamples"] = [{"lang": "Shell", "label": "curl", "source": command}]
    parameters = [PATH_PARAMETERS[name] for name in _path_names(op.path)]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: {"schema": ref(op.body.__name__), "example": body}},
        }
    if op.raw_body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {op.raw_body: {"schema": {"type": "string", "format": "binary"}}},
        }
    return document


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def example(schema: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """A value of `schema` made of the examples its fields declare (rig/shapes.py)."""
    if "examples" in schema:
        return schema["examples"][0]
    if "$ref" in schema:
        return example(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas)
    if "anyOf" in schema:
        members = [m for m in schema["anyOf"] if m.get("type") != "null"]
        return example(members[0], schemas) if members else None
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: example(prop, schemas)
            for name, prop in properties.items()
            if name in schema.get("required", ()) or _declares_example(prop)
        }
    if kind == "array":
        return [example(schema.get("items", {}), schemas)]
    return {"boolean": False, "integer": 1, "number": 1.0, "string": "string"}.get(kind)


def _declares_example(schema: dict[str, Any]) -> bool:
    """Optional fields appear in examples when they declare one of their own."""
    return "examples" in schema or "$ref" in schema


# The shell variables of the README's "Try it" section, for the curl snippets.
CURL_PATH_VARIABLES = {
    "streamID": "$STREAM_ID",
    "destinationID": "$DESTINATION_ID",
    "streamKey": "$STREAM_KEY",
    "claimID": "$CLAIM_ID",
    "keyID": "$KEY_ID",
}
CURL_AUTH = {
    "user": '-H "Authorization: Bearer $TOKEN"',
    "account": '-H "Authorization: Bearer $TOKEN"',
    "agent": '-H "Authorization: Bearer $AGENT_TOKEN"',
}


def curl(op: Operation, body: Any) -> str:
    """A curl command for the operation, with the README's shell variables."""
    path = op.path
    for name, variable in CURL_PATH_VARIABLES.items():
        path = path.replace("{" + name + "}", variable)
    parts = [f'curl -s -X {op.method.upper()} "$API{path}"']
    if op.auth:
        parts.append(CURL_AUTH[op.auth])
    if body is not None:
        parts.append('-H "Content-Type: application/json"')
        parts.append("-d '" + json.dumps(body) + "'")
    if op.raw_body is not None:
        parts.append(f'-H "Content-Type: {op.raw_body}"')
        parts.append("--data-binary @thumbnail.jpg")
    return " \\\n     ".join(parts)


DESCRIPTION = """\
rig is a self-hostable RTMP multistreaming relay. This is its control plane's HTTP API.

Every answer is a JSON envelope: `{"message", "payload"}` with HTTP 200 on success,
`{"message", "errorCode", "details"}` on error. Requests with a body must send
`Content-Type: application/json`; bodies are limited to 64 KiB. Client routes take a
user token, agent routes an agent token (`Authorization: Bearer <JWT>`).

Every operation shows a curl command. They use the shell variables of the README's
"Try it" section: `API` (rig's URL, e.g. `http://127.0.0.1:8080`), `TOKEN` (from
`POST /accounts/auth/local`), `AGENT_TOKEN` (from `POST /agents/auth`), `STREAM_ID`,
`STREAM_KEY`, `DESTINATION_ID`, `CLAIM_ID`. In this page, "Authorize" takes a token and
"Try it out" sends the request from your browser.

| errorCode | HTTP | meaning |
|---|---|---|
""" + "\n".join(f"| {code} | {http} | {text} |" for code, (http, text) in ERROR_CODES.items())


def build_document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations."""
    operations = list(operations)
    schemas = component_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = operation(op, schemas)
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
            {"name": "dashboard", "description": "the streamer's web page, a client of this API"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": HEADERS,
            "securitySchemes": {
                "userToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a user token from POST /accounts/auth/local",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Api-Key",
                    "description": "an API key from POST /accounts/apikeys, in place of a"
                    " user token on every user route but the account's own",
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
