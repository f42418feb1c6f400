"""The API's errors and the one middleware that turns every failure into the envelope.

Success: HTTP 200 `{"message", "payload"}`. Error: `{"message", "errorCode", "details"}`
with the HTTP status the spec gives for each errorCode. Clients never see a stack trace
or an HTML page: unexpected exceptions are logged here and answered with 1008, and a
request aiohttp cannot parse is answered 1005 too (rig/unparsable.py).
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from pydantic_core import to_json

from rig.unparsable import BAD_REQUEST_ROUTE, UNPARSABLE

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client in the envelope."""

    status = 400
    error_code = 1005
    default_message = "Invalid input"

    def __init__(
        self,
        message: str | None = None,
        details: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        self.headers = headers
        if status is not None:
            self.status = status


class NotFound(ApiError):
    status, error_code, default_message = 404, 1000, "Not found"


class MethodNotAllowed(ApiError):
    status, error_code, default_message = 405, 1001, "Method not allowed"


class UnsupportedContentType(ApiError):
    status, error_code, default_message = 400, 1002, "Content-Type must be application/json"


class InvalidCredentials(ApiError):
    status, error_code, default_message = 401, 1003, "Invalid credentials"


class MissingInput(ApiError):
    status, error_code, default_message = 400, 1004, "Missing required input"


class InvalidInput(ApiError):
    status, error_code, default_message = 400, 1005, "Invalid input"


class CreateFailed(ApiError):
    status, error_code, default_message = 409, 1006, "Unable to create resource"


class UpdateFailed(ApiError):
    status, error_code, default_message = 409, 1007, "Unable to update resource"


class FetchFailed(ApiError):
    status, error_code, default_message = 500, 1008, "Unable to fetch resource"


class InUse(ApiError):
    status, error_code, default_message = 409, 1009, "Resource already in use"


def success(message: str, payload: Any = None) -> web.Response:
    """The success envelope; the payload may hold models of rig/shapes.py."""
    body = to_json({"message": message, "payload": payload})
    return web.Response(body=body, content_type="application/json")


def error_envelope(error: ApiError) -> dict[str, Any]:
    """The error envelope's body for one of our errors."""
    return {"message": error.message, "errorCode": error.error_code, "details": error.details}


def error_response(error: ApiError) -> web.Response:
    """The error envelope for one of our errors."""
    return web.json_response(error_envelope(error), status=error.status, headers=error.headers)


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    """Map aiohttp's own routing and body errors onto our codes."""
    if exc.status == 404:
        return NotFound()
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        return MethodNotAllowed(
            details={"allowed": sorted(filter(None, allow.split(",")))}, headers={"Allow": allow}
        )
    if exc.status == 413:
        return InvalidInput("Request body too large", status=413)
    if exc.status >= 500:
        return FetchFailed(status=exc.status)
    return InvalidInput(exc.reason, status=exc.status)


def route_of(request: web.Request) -> str:
    """The route pattern of a request, e.g. `/agents/config/{streamKey}`.

    Logs name the pattern, never the path: paths can carry stream keys.
    """
    if request.get(UNPARSABLE):
        return BAD_REQUEST_ROUTE
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    if resource is None:
        return "<unknown route>"
    return resource.canonical


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure, expected or not, in the JSON error envelope."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc))
    except (
        OSError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.CannotConnectNowError,
    ) as exc:
        # The database is unreachable or restarting: a server-side failure, retryable.
        log.error("database unavailable on %s %s: %s", request.method, route_of(request), exc)
        return error_response(FetchFailed("Service temporarily unavailable", status=503))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route_of(request))
        return error_response(FetchFailed("Internal server error"))
