"""rig's Prometheus metrics: requests by route pattern and status, and their latency.

Labels carry the route *pattern* (`/agents/config/{streamKey}`), never the path: paths
hold stream keys, and one label value per key would also explode the series count.
Requests that match no route are counted under `route="<unmatched>"`. Each application
has its own registry, so several apps in one process (the tests) never collide.
"""

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from rig.errors import Handler, route_of

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"


class RigMetrics:
    """The metrics of one rig application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rig_http_requests",
            "HTTP requests answered, by method, route pattern and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rig_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route pattern",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rig_http_requests_in_flight", "Requests being handled", registry=self.registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    route = route_of(request)
    return UNMATCHED if route == "<unknown route>" else route


def metrics_middleware(metrics: RigMetrics) -> Callable:
    """Outermost middleware: time and count every request, whatever its outcome."""

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        metrics.in_flight.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.in_flight.dec()
            metrics.observe(
                request.method, route_label(request), status, time.perf_counter() - start
            )

    return measure


async def metrics_handler(request: web.Request, metrics: RigMetrics) -> web.Response:
    """`GET /metrics`: the Prometheus text format."""
    response = web.Response(body=metrics.exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
