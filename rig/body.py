"""Reading a JSON request body into its model (rig/shapes.py), with the v1 error codes.

Order of checks, as clients expect: Content-Type (1002), JSON syntax and text (1005),
missing fields (1004, `details.field` names the first one), then types and rules (1005,
`details.field` and `details.reason`). A null where a value is required is missing.

This is the one place rig reads JSON from a client, so what no JSON value may hold for
us is refused here, once: a lone UTF-16 surrogate (`"\\ud800"`) is valid JSON syntax but
not Unicode text (nothing can encode it: PostgreSQL, logs, answers), so it is 1005.
"""

import json
import math
import re
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rig.errors import ApiError, InvalidInput, MissingInput, UnsupportedContentType

M = TypeVar("M", bound=BaseModel)

# json.loads joins a well-formed pair into one character: whatever surrogate is left is lone.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body validated as `model`."""
    if request.content_type != "application/json":
        raise UnsupportedContentType()
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("Body is not valid JSON", details={"reason": str(exc)}) from exc
    if not isinstance(body, dict):
        raise InvalidInput("Body must be a JSON object", details={"reason": "not an object"})
    field = lone_surrogate_field(body)
    if field is not None:  # never quote the value: it cannot even be logged
        raise InvalidInput(
            "Body is not valid Unicode text",
            details={
                "field": field,
                "reason": "a lone UTF-16 surrogate (\\ud800-\\udfff) is not Unicode text",
            },
        )
    return validate(model, body)


def _not_a_number(name: str) -> float:
    # Python reads NaN and Infinity, which JSON does not have (nor PostgreSQL's jsonb).
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON, but no number can hold it
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def lone_surrogate_field(body: dict[str, Any]) -> str | None:
    """The top-level field whose value (or a key in it) holds a lone surrogate; `body`
    for a top-level key; None when there is none. Iterative: JSON nests deep."""
    stack: list[tuple[Any, str]] = [(body, "body")]
    while stack:
        item, field = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return field
        elif isinstance(item, dict):
            for key, value in item.items():
                if LONE_SURROGATE.search(key):
                    return field
                stack.append((value, key if item is body else field))
        elif isinstance(item, list):
            stack.extend((value, field) for value in item)
    return None


def read_query(request: web.Request, model: type[M]) -> M:
    """The request's query parameters validated as `model` (the first of repeated ones)."""
    return validate(model, {name: request.query.getone(name) for name in request.query})


async def read_optional_body(request: web.Request, model: type[M]) -> M | None:
    """`model` from the body if the request has one, else None (an empty body counts as
    none: a v1 client posting nothing must not need a Content-Type)."""
    if not request.body_exists or not await request.read():
        return None
    return await read_body(request, model)


def validate(model: type[M], data: Any) -> M:
    """`data` as `model`, or the ApiError for its first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise api_error(exc.errors()) from None


def invalid(field: str, reason: str) -> InvalidInput:
    """A validation error naming the field."""
    return InvalidInput(f"Invalid {field}: {reason}", details={"field": field, "reason": reason})


def missing(field: str) -> MissingInput:
    """A missing required field."""
    return MissingInput(f"Missing required field: {field}", details={"field": field})


def _is_missing(error: ErrorDetails) -> bool:
    # v1 treats a null like an absent field; pydantic calls it a type error.
    return error["type"] == "missing" or (
        error["type"].endswith("_type") and error["input"] is None
    )


def _field(error: ErrorDetails) -> str:
    """The innermost field an error is about (`claims.0.claimId` -> `claimId`)."""
    names = [part for part in error["loc"] if isinstance(part, str)]
    return names[-1] if names else "body"


def api_error(errors: list[ErrorDetails]) -> ApiError:
    """The error to answer for pydantic's list: the first missing field, else the first
    problem, in the order the model declares its fields."""
    first_missing = next((e for e in errors if _is_missing(e)), None)
    if first_missing is not None:
        return missing(_field(first_missing))
    error = errors[0]
    field = _field(error)
    if error["type"] == "string_type":
        return InvalidInput(
            f"Field {field} must be a string", details={"field": field, "reason": "not a string"}
        )
    if error["type"] == "nul":
        return InvalidInput(
            f"Field {field} must not contain NUL", details={"field": field, "reason": "NUL"}
        )
    if error["type"] == "bool_type":
        return invalid(field, "must be true or false")
    return invalid(field, error["msg"])
