"""What operators and integrators need around the API, installed by `install(app)`:

- request ids: `X-Request-Id` taken from the client (when valid) or generated, echoed on
  every response and attached to every log line of the request;
- `/metrics` (Prometheus), `/healthz` (liveness), `/readyz` (readiness: the database);
- `/openapi.json` (and `/docs`, rig/docs.py);
- abuse limits (rig/ratelimit.py) and a deadline per request (`RIG_REQUEST_TIMEOUT`);
- CORS for the configured origins (rig/cors.py).

Middleware order, outermost first: request id, metrics, the envelope (rig/errors.py),
deadline, rate limits, then the handler.
"""

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from rig.api import ApiRoutes
from rig.appkeys import POOL, RATE_LIMITS
from rig.background import dead_workers
from rig.cors import parse_origins, setup_cors
from rig.errors import FetchFailed, Handler
from rig.logs import request_id_var
from rig.metrics import RigMetrics, metrics_handler, metrics_middleware
from rig.ratelimit import RateLimits, rate_limit_middleware
from rig.settings import Settings
from rig.shapes import Alive, Ready

REQUEST_ID_HEADER = "X-Request-Id"
# The request id's key on the aiohttp request (typed keys since aiohttp 3.12).
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
READY_TIMEOUT = 2.0

METRICS = web.AppKey("metrics", RigMetrics)
DOCUMENT = web.AppKey("openapi_document", bytes)

routes = ApiRoutes()
OPERATIONS = {"tag": "operations"}


def request_id_of(request: web.BaseRequest) -> str:
    """The request's id (set by the request id middleware), or `-`."""
    return request.get(REQUEST_ID, "-")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take or make the request id; echo it; log with it."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and the like, which pass the envelope
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        request_id_var.reset(token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


def long_lived(handler: Handler) -> Handler:
    """Mark a handler whose response streams for as long as the client stays (server-sent
    events): the request deadline does not apply to it."""
    handler.rig_long_lived = True  # type: ignore[attr-defined]
    return handler


def deadline_middleware(seconds: float) -> Callable:
    """Answer 503 (1008) when a request takes longer than `seconds` (long-lived
    responses excepted)."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if seconds <= 0 or getattr(request.match_info.handler, "rig_long_lived", False):
            return await handler(request)
        try:
            async with asyncio.timeout(seconds) as scope:
                return await handler(request)
        except TimeoutError:
            if not scope.expired():
                raise
            raise FetchFailed("Request timed out", status=503) from None

    return deadline


@routes.get(
    "/healthz",
    "healthz",
    **OPERATIONS,
    summary="Liveness: the process answers and its background workers run",
    message="OK",
    payload=Alive,
    errors=("503",),
    description="200 while the database is unreachable too: that is readiness (`/readyz`),"
    " and restarting rig would not bring the database back. 503 (1008) only when a"
    " background worker (claim sweeper, webhook sender) has stopped: restart the process.",
)
async def healthz(request: web.Request) -> Alive:
    """Liveness: the event loop answers and no background worker died (rig/background.py).

    A database outage is not a liveness failure: rig pauses its workers, answers 503 on
    `/readyz` and on the routes that need the database, and recovers by itself when the
    database is back (tests/api/test_liveness.py).
    """
    dead = dead_workers(request.app)
    if dead:
        raise FetchFailed(
            "Not alive: a background worker stopped", details={"workers": dead}, status=503
        )
    return Alive(status="ok")


@routes.get(
    "/readyz",
    "readyz",
    **OPERATIONS,
    summary="Readiness: the database answers (503 when it does not)",
    message="Ready",
    payload=Ready,
)
async def readyz(request: web.Request) -> Ready:
    """Readiness: the database answers within READY_TIMEOUT seconds."""
    pool = request.app.get(POOL)
    try:
        if pool is None:
            raise ConnectionError("no database pool yet")
        async with asyncio.timeout(READY_TIMEOUT):
            await pool.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise FetchFailed(
            "Not ready: database unreachable",
            details={"database": "unreachable", "reason": type(exc).__name__},
            status=503,
        ) from None
    return Ready(status="ok", database="ok")


@routes.get(
    "/metrics",
    "metrics",
    **OPERATIONS,
    summary="Prometheus metrics: requests by route pattern and status, latency",
    message=None,
    payload=None,
    content_types=("text/plain",),
)
async def serve_metrics(request: web.Request) -> web.Response:
    return await metrics_handler(request, request.app[METRICS])


@routes.get(
    "/openapi.json",
    "openapi",
    **OPERATIONS,
    summary="This document",
    message=None,
    payload=None,
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT], content_type="application/json")


def install(app: web.Application, settings: Settings, document: dict[str, Any]) -> None:
    """Add the operational routes, middlewares and CORS to rig's app (after its routes);
    `document` is the OpenAPI document /openapi.json and /docs serve."""
    metrics = RigMetrics()
    app[METRICS] = metrics
    limits = RateLimits.create(
        settings.rate_limit_address,
        settings.rate_limit_address_username,
        settings.rate_limit_username,
        settings.rate_limit_agent_misses,
        settings.rate_limit_window,
        settings.trusted_proxies,
    )
    app[RATE_LIMITS] = limits
    app[DOCUMENT] = json.dumps(document).encode()

    app.middlewares.insert(0, request_id_middleware)
    app.middlewares.insert(1, metrics_middleware(metrics))
    app.middlewares.append(deadline_middleware(settings.request_timeout))
    app.middlewares.append(rate_limit_middleware(limits))

    app.add_routes(routes.table)
    setup_cors(app, parse_origins(settings.cors_origins))
