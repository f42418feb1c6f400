"""The rig aiohttp application, built by one factory used by `rig serve` and the tests."""

import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from rig import (
    accounts,
    agents,
    apikeys,
    dashboard,
    docs,
    events,
    ingest,
    live,
    operations,
    streams,
    thumbnails,
    webhooks,
)
from rig.appkeys import LOGIN_HASHING, PASSWORD_CHANGE_HASHING, POOL, SETTINGS, TOKENS
from rig.background import WORKERS
from rig.errors import envelope_middleware, route_of
from rig.openapi import build_document
from rig.passwords import PasswordWork, cpu_count
from rig.settings import Settings
from rig.tokens import TokenIssuer
from rig.unparsable import answer_unparsable_requests

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # every request body of the API is a small JSON object

# Every route of the API, in the order the document lists them.
ROUTE_TABLES = (
    accounts.routes,
    apikeys.routes,
    streams.routes,
    events.routes,
    ingest.routes,
    agents.routes,
    live.routes,
    thumbnails.routes,
    dashboard.routes,
    operations.routes,
    docs.routes,
)


def openapi_document() -> dict:
    """The OpenAPI document of every route rig serves."""
    return build_document(op for table in ROUTE_TABLES for op in table.operations)


# The agents' routine requests: heartbeats every few seconds (every second while a
# broadcast is held) and a thumbnail every 10 s per stream. Answered without an error,
# they are logged at DEBUG, so that INFO shows what people and publishes did.
ROUTINE_ROUTES = {
    ("POST", "/agents/heartbeat"),
    ("PUT", "/agents/claims/{claimID}/thumbnail"),
}


class AccessLogger(AbstractAccessLogger):
    """One line per request naming the route pattern, never the path (it may hold a key)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = route_of(request) if isinstance(request, web.Request) else "<unknown route>"
        request_id = operations.request_id_of(request)
        routine = response.status < 400 and (request.method, route) in ROUTINE_ROUTES
        self.logger.log(
            logging.DEBUG if routine else logging.INFO,
            "%s %s -> %s in %.1f ms [%s]",
            request.method,
            route,
            response.status,
            time * 1000,
            request_id,
            extra={
                "request_id": request_id,
                "method": request.method,
                "route": route,
                "status": response.status,
                "duration_ms": round(time * 1000, 1),
            },
        )


async def reset_connection(conn: asyncpg.Connection) -> None:
    """Nothing beyond what asyncpg always does on release (drop listeners, roll back an
    open transaction, e.g. of a request cancelled inside one).

    asyncpg's default reset also runs advisory-unlock-all, CLOSE ALL, UNLISTEN * and
    RESET ALL on every release: one more round trip per query, measured at a third of
    rig's CPU on the agents' hot path. rig's pooled connections keep no session state
    (no LISTEN, SET, advisory locks or cursors; migrations use a connection of their
    own), so there is nothing for it to undo.
    """


async def database_pool(app: web.Application) -> AsyncIterator[None]:
    """Create the asyncpg pool on start; close it on the way out."""
    settings = app[SETTINGS]
    # min_size 0: no floor for asyncpg to restore in the background, which logs a
    # traceback every few seconds while the database is away. The workers use the pool
    # every second, so a connection stays warm anyway.
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.database_pool_size,
        reset=reset_connection,
    )
    app[POOL] = pool
    yield
    await pool.close()


def create_app(settings: Settings) -> web.Application:
    """Build the application. `settings.database_url` and `jwt_secret` must be set."""
    if not settings.database_url or not settings.jwt_secret:
        raise ValueError("create_app needs a database URL and a JWT secret")
    answer_unparsable_requests()  # before any route: aiohttp answers those itself
    app = web.Application(middlewares=[envelope_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[TOKENS] = TokenIssuer(settings.jwt_secret)
    app[LOGIN_HASHING] = PasswordWork(cpu_count())
    app[PASSWORD_CHANGE_HASHING] = PasswordWork(1)
    app[WORKERS] = {}
    app.cleanup_ctx.append(database_pool)
    app.cleanup_ctx.append(events.stream_watchers)
    if settings.background_tasks:
        app.cleanup_ctx.append(live.claim_sweeper)
        app.cleanup_ctx.append(webhooks.webhook_sender)
    for table in (
        accounts.routes,
        apikeys.routes,
        streams.routes,
        events.routes,
        ingest.routes,
        agents.routes,
        live.routes,
        thumbnails.routes,
    ):
        app.add_routes(table.table)
    docs.install(app)
    dashboard.install(app)
    # health, metrics, docs, limits, CORS: after the routes
    operations.install(app, settings, openapi_document())
    return app
