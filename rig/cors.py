"""CORS for web clients (aiohttp-cors), off unless RIG_CORS_ORIGINS names origins.

Each allowed origin may call every route with the methods that route has, sending
`Authorization`, `Content-Type`, `X-Api-Key` and `X-Request-Id`; it may read
`X-Request-Id`, `Retry-After`, `Allow`, `WWW-Authenticate` and `X-Total-Count`. No
cookies are involved (tokens travel in `Authorization`), so credentials are not allowed.
A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
allowed origin is answered 200 with `Access-Control-Allow-Origin`, `-Methods`,
`-Headers` and `-Max-Age`; from any other origin, or for a method the route does not
have, 403 in the error envelope.
"""

from collections import defaultdict

import aiohttp_cors
from aiohttp import web

ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Api-Key", "X-Request-Id")
EXPOSE_HEADERS = (
    "X-Request-Id",
    "Retry-After",
    "Allow",
    "WWW-Authenticate",
    "X-Total-Count",
)
MAX_AGE = 600


def parse_origins(text: str) -> list[str]:
    """`https://a.example, https://b.example` -> origins, without trailing slashes."""
    origins = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"CORS origin must be * or start with http:// or https://: {origin}")
    return origins


def setup_cors(app: web.Application, origins: list[str]) -> None:
    """Enable CORS on every route of `app` for `origins` (call after adding routes)."""
    if not origins:
        return
    methods: dict[web.AbstractResource, set[str]] = defaultdict(set)
    for route in app.router.routes():
        if route.method not in ("HEAD", "OPTIONS"):
            methods[route.resource].add(route.method)  # type: ignore[index]
    cors = aiohttp_cors.setup(app)
    for resource, allowed in methods.items():
        options = aiohttp_cors.ResourceOptions(
            allow_credentials=False,
            expose_headers=EXPOSE_HEADERS,
            allow_headers=ALLOW_HEADERS,
            allow_methods=sorted(allowed),
            max_age=MAX_AGE,
        )
        cors.add(resource, {origin: options for origin in origins})


def origins_setting(text: str) -> str:
    """RIG_CORS_ORIGINS as an option type: validated, kept as given."""
    parse_origins(text)
    return text
