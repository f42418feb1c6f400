"""Reading and validating JSON request bodies.

Order of checks, as clients expect: Content-Type (1002), JSON syntax (1005),
missing fields (1004, `details` names the field), then types and rules (1005).
"""

import json
import re
from typing import Any

from aiohttp import web

from rig.errors import InvalidInput, MissingInput, UnsupportedContentType

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024


async def read_json(request: web.Request, required: tuple[str, ...]) -> dict[str, Any]:
    """Return the body's JSON object, with every field in `required` present as a string."""
    if request.content_type != "application/json":
        raise UnsupportedContentType()
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("Body is not valid JSON", details={"reason": str(exc)}) from exc
    if not isinstance(body, dict):
        raise InvalidInput("Body must be a JSON object", details={"reason": "not an object"})
    for name in required:
        if body.get(name) is None:
            raise MissingInput(f"Missing required field: {name}", details={"field": name})
    for name in required:
        if not isinstance(body[name], str):
            raise InvalidInput(
                f"Field {name} must be a string", details={"field": name, "reason": "not a string"}
            )
        if "\x00" in body[name]:  # PostgreSQL text cannot hold NUL
            raise InvalidInput(
                f"Field {name} must not contain NUL", details={"field": name, "reason": "NUL"}
            )
    return body


def invalid(field: str, reason: str) -> InvalidInput:
    """A validation error naming the field."""
    return InvalidInput(f"Invalid {field}: {reason}", details={"field": field, "reason": reason})


def check_username(username: str) -> None:
    """3-64 characters: letters, digits, dot, dash, underscore."""
    if not USERNAME.match(username):
        raise invalid("username", "3 to 64 characters: letters, digits, '.', '-', '_'")


def check_email(email: str) -> None:
    """A plausible address: one @, a dot in the domain, no spaces, at most 254 characters."""
    if len(email) > 254 or not EMAIL.match(email):
        raise invalid("email", "not a valid email address")


def check_password(password: str, field: str = "password") -> None:
    """At least 8 characters; at most 1024 so hashing cannot be abused."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise invalid(field, f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
