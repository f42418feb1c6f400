"""Routes that describe themselves: each handler is registered with what the OpenAPI
document needs to say about it (rig/openapi.py builds the document from these).

A handler returns its payload (a model from rig/shapes.py, a list of them, or None) and
the route wraps it in the success envelope with the route's one message; a handler
that answers something else (an image, extra headers) returns a web.StreamResponse.
"""

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from rig.errors import success

Auth = Literal["user", "agent", "account"] | None
"""Who may call: a user (token or API key), an agent, a user's own login only
(`account`: the routes that manage the account itself), or anyone (None)."""


@dataclass(frozen=True)
class Operation:
    """One route as the OpenAPI document describes it."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    message: str | None  # the success envelope's message; None: not an envelope
    payload: Any  # the payload's type (a model, list[model], None)
    auth: Auth = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    raw_body: str | None = None  # the content type of a body that is not JSON
    query: type[BaseModel] | None = None
    errors: tuple[str, ...] = ()  # HTTP statuses beyond the ones every route can give
    conflicts: tuple[int, ...] = ()  # errorCodes of a 409
    description: str = ""
    content_types: tuple[str, ...] = ("application/json",)  # of the 200 answer
    response_headers: tuple[str, ...] = ()  # components/headers the 200 answer carries


Handler = Callable[[web.Request], Awaitable[Any]]


@dataclass
class ApiRoutes:
    """A route table whose entries carry their Operation (see module docstring)."""

    table: web.RouteTableDef = field(default_factory=web.RouteTableDef)
    operations: list[Operation] = field(default_factory=list)

    def route(self, method: str, path: str, operation_id: str, **meta: Any) -> Callable:
        """Register a handler. A path parameter may carry aiohttp's pattern
        (`{path:.+}`: one matching slashes); the document names it plainly (`{path}`)."""

        def register(handler: Handler) -> Handler:
            documented = re.sub(r"{(\w+):[^}]*}", r"{\1}", path)
            operation = Operation(method.lower(), documented, operation_id, **meta)
            self.operations.append(operation)

            @functools.wraps(handler)
            async def answer(request: web.Request) -> web.StreamResponse:
                result = await handler(request)
                if isinstance(result, web.StreamResponse):
                    return result
                return success(operation.message or "", result)

            self.table.route(method, path)(answer)
            return handler

        return register

    def get(self, path: str, operation_id: str, **meta: Any) -> Callable:
        return self.route("GET", path, operation_id, **meta)

    def post(self, path: str, operation_id: str, **meta: Any) -> Callable:
        return self.route("POST", path, operation_id, **meta)

    def put(self, path: str, operation_id: str, **meta: Any) -> Callable:
        return self.route("PUT", path, operation_id, **meta)

    def patch(self, path: str, operation_id: str, **meta: Any) -> Callable:
        return self.route("PATCH", path, operation_id, **meta)

    def delete(self, path: str, operation_id: str, **meta: Any) -> Callable:
        return self.route("DELETE", path, operation_id, **meta)
