"""The streamer's dashboard: static files served by rig at `/` and under `/dashboard/`.

A web page that is a client of the public REST API only (the same calls any client
makes); everything it shows comes from those calls. No build step: the files in
`static/` are served as they are (ES modules, CSS, one vendored library listed in
`static/vendor/manifest.json`). Only files that exist in `static/` when rig starts are
served, so no path can reach anything else. Every answer forbids other origins' scripts,
frames and connections (Content-Security-Policy), so an injected string can neither
run code nor send the token elsewhere.
"""

from pathlib import Path

from aiohttp import web

from rig.api import ApiRoutes
from rig.errors import NotFound

STATIC = Path(__file__).with_name("static")
ASSET_PREFIX = "/dashboard/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:;"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Always revalidate (ETag / Last-Modified): an upgraded rig serves its new files at once.
    "Cache-Control": "no-cache",
}

ASSETS = web.AppKey("dashboard_assets", dict)
routes = ApiRoutes()
PAGE = {"tag": "dashboard", "message": None, "payload": None}


def find_assets(root: Path = STATIC) -> dict[str, Path]:
    """Every servable file under `root`, by its path relative to it (`js/api.js`)."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def _file(path: Path) -> web.FileResponse:
    response = web.FileResponse(path, headers=SECURITY_HEADERS)
    response.content_type = CONTENT_TYPES[path.suffix].split(";")[0]
    response.charset = "utf-8" if "charset" in CONTENT_TYPES[path.suffix] else None
    return response


@routes.get(
    "/",
    "dashboard",
    **PAGE,
    summary="The streamer's dashboard: a web page using this API",
    content_types=("text/html",),
)
async def index(request: web.Request) -> web.FileResponse:
    """The dashboard's page (its screens are routed in the page, after `#`)."""
    return _file(request.app[ASSETS]["index.html"])


@routes.get(
    ASSET_PREFIX + "{path:.+}",
    "dashboardFile",
    **PAGE,
    summary="One of the dashboard's files (scripts, styles, its vendored library)",
    content_types=tuple(sorted({kind.split(";")[0] for kind in CONTENT_TYPES.values()})),
    errors=("404",),
)
async def asset(request: web.Request) -> web.FileResponse:
    """One of the dashboard's files; anything else is 1000."""
    path = request.app[ASSETS].get(request.match_info["path"])
    if path is None:
        raise NotFound("No such dashboard file")
    return _file(path)


def install(app: web.Application) -> None:
    """Find the dashboard's files once and add its routes."""
    app[ASSETS] = find_assets()
    app.add_routes(routes.table)
