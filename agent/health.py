"""The agent's small HTTP listener (RIG_AGENT_HTTP_LISTEN, default 127.0.0.1:9935).

- `GET /metrics`: Prometheus metrics (agent/metrics.py; with workers, every worker's
  summed: agent/metrics_merge.py);
- `GET /healthz`: liveness: 200 while the RTMP listener is up and the loop answers (with
  workers: while one of them listens; the supervisor restarts the others by itself);
- `GET /readyz`: readiness: 200 when rig answers and accepts this agent's key (new
  publishes can be authorised), 503 otherwise and while shutting down.

Answers are JSON (`{"status": ...}`) except /metrics. No secret is ever in them. A
request aiohttp cannot parse is answered 400 in rig's error envelope and logged in one
line without its bytes (rig/unparsable.py).
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from agent.metrics import registry_for
from agent.rig_client import RigClient, RigUnavailable
from rig.unparsable import answer_unparsable_requests

if TYPE_CHECKING:
    from agent.server import IngestServer
    from agent.supervisor import Supervisor

log = logging.getLogger(__name__)

READY_TIMEOUT = 3.0


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


async def start_health(
    listen: str,
    server: "IngestServer | Supervisor",
    rig: RigClient,
    metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> "HealthServer | None":
    """The agent's listener, started; None when `listen` is `off` or taken (relaying
    matters more than metrics: the agent carries on, and says so)."""
    if listen.lower() == "off":
        return None
    health = HealthServer(listen, server, rig, metrics)
    try:
        await health.start()
    except OSError as exc:
        logging.getLogger("agent").warning(
            "no metrics/health listener on %s (%s); set RIG_AGENT_HTTP_LISTEN",
            listen,
            exc.strerror or exc,
        )
        await health.close()
        return None
    return health


class HealthServer:
    """Serves /metrics, /healthz and /readyz for one agent."""

    def __init__(
        self,
        listen: str,
        server: "IngestServer | Supervisor",
        rig: RigClient,
        metrics: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.host, self._port = split_listen(listen)
        self.server = server
        self.rig = rig
        self.draining = False
        # A single agent's metrics come from its server; a multi-worker agent's from
        # its workers, gathered by the supervisor (`metrics`).
        self._metrics = metrics
        self.registry = registry_for(server) if metrics is None else None  # type: ignore[arg-type]
        self._runner: web.AppRunner | None = None
        self._socket: socket.socket | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    async def start(self) -> None:
        answer_unparsable_requests()  # in rig's error envelope, logged without the bytes
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, self._port), family=family)
        await web.SockSite(self._runner, self._socket).start()
        log.info("metrics and health on http://%s:%s", self.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._socket is not None, "start() first"
        return self._socket.getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        if self._metrics is not None:
            body = await self._metrics()
        else:
            body = generate_latest(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        details = self.server.health_details() if hasattr(self.server, "health_details") else {}
        if not self.server.serving and not self.draining:
            body = {"status": "down", "rtmp": "not listening", **details}
            return web.json_response(body, status=503)
        return web.json_response({"status": "ok", **details})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not self.server.serving:
            return web.json_response({"status": "not ready", "rtmp": "not listening"}, status=503)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.rig.check()
        except (RigUnavailable, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            return web.json_response({"status": "not ready", "rig": reason}, status=503)
        return web.json_response({"status": "ok", "rig": "ok"})
