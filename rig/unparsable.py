"""Requests aiohttp cannot parse, answered in rig's error envelope and logged in one line.

A module of its own, with nothing but aiohttp, so that the agent's HTTP listener can use
it without loading rig's database driver and models.
"""

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

# Set on a request aiohttp could not parse: it was never routed, and its `match_info`
# must not be read (aiohttp asserts it is there); rig/errors.py `route_of` names it so.
UNPARSABLE: Any = web.RequestKey("unparsable", bool) if hasattr(web, "RequestKey") else "unparsable"
BAD_REQUEST_ROUTE = "<bad request>"


def answer_unparsable_requests() -> None:
    """Answer a request aiohttp cannot parse in the envelope; log it in one line.

    aiohttp answers such a request (a control byte in a header or in the request line, a
    header line over 8190 bytes, ...) itself, before any route or middleware, in
    `RequestHandler.handle_error`: it logs the parse error at ERROR with its traceback
    and answers it in text/plain, and both hold the parser's message, which quotes the
    raw line: often a header or a path carrying an API key, a token or a stream key.
    aiohttp has no hook for this (aio-libs/aiohttp#3287), so this wraps that one public
    method, for every server of the process (rig's API, the agent's listener); any other
    error still goes to aiohttp's own handling. Idempotent.
    """
    original = web.RequestHandler.handle_error
    if getattr(original, "answers_unparsable", False):
        return

    def handle_error(
        self: web.RequestHandler,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size:
            return original(self, request, status, exc, message)
        # The class name and the status, never the message or the bytes. Non-HTTP
        # traffic (TLS on the HTTP port, scanners) at DEBUG, as aiohttp does.
        self.logger.log(
            logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO,
            "bad HTTP request from %s: %s, %s",
            request.remote,
            type(exc).__name__,
            status,
        )
        request[UNPARSABLE] = True
        # rig's error envelope (rig/errors.py): 1005 invalid input, 1008 for a 5xx.
        code, what = (1005, "Malformed HTTP request") if status < 500 else (1008, "Server error")
        body = {"message": what, "errorCode": code, "details": None}
        response = web.json_response(body, status=status)
        response.force_close()
        return response

    handle_error.answers_unparsable = True  # type: ignore[attr-defined]
    web.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
