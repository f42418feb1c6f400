"""`GET /docs`: an API explorer (Swagger UI) over `GET /openapi.json`.

Swagger UI is vendored in rig/static/swagger-ui/ (pinned npm release with its licence;
scripts/vendor-swagger-ui refreshes it) and served by rig itself, so the page works on
an isolated network and its Content-Security-Policy allows nothing from elsewhere.
It lists every route with its parameters, bodies (with examples), answers and errors;
"Try it out" sends a request from the browser, and each operation shows a curl command.
"""

from importlib import resources

from aiohttp import web

from rig.api import ApiRoutes
from rig.errors import NotFound

routes = ApiRoutes()

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rig API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/docs.js"></script>
</body>
</html>
"""

# What the page may load: only rig's own files and API. Swagger UI sets element styles
# and uses data: images in its stylesheet.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; connect-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# name -> (package file, content type)
ASSET_FILES = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css"),
    "docs.js": ("docs.js", "text/javascript"),
    "LICENSE": ("swagger-ui/LICENSE", "text/plain"),
    "NOTICE": ("swagger-ui/NOTICE", "text/plain"),
}
ASSETS = web.AppKey("docs_assets", dict)
CACHE = "public, max-age=3600"


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The explorer's files, read once (rig keeps them in memory: ~2 MB)."""
    static = resources.files("rig") / "static"
    return {
        name: ((static / path).read_bytes(), content_type)
        for name, (path, content_type) in ASSET_FILES.items()
    }


@routes.get(
    "/docs",
    "docs",
    tag="operations",
    summary="This document in an API explorer (Swagger UI): try every route from the browser",
    message=None,
    payload=None,
    content_types=("text/html",),
)
async def docs_page(request: web.Request) -> web.Response:
    response = web.Response(text=PAGE, content_type="text/html")
    response.headers["Content-Security-Policy"] = CSP
    return response


@routes.get(
    "/docs/{asset}",
    "docsAsset",
    tag="operations",
    summary="The explorer's files (Swagger UI's script, stylesheet, licence)",
    message=None,
    payload=None,
    content_types=tuple(sorted({kind for _path, kind in ASSET_FILES.values()})),
    errors=("404",),
)
async def docs_asset(request: web.Request) -> web.Response:
    found = request.app[ASSETS].get(request.match_info["asset"])
    if found is None:
        raise NotFound("No such file")
    body, content_type = found
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": CACHE})


def install(app: web.Application) -> None:
    """Load the explorer's files and add its routes."""
    app[ASSETS] = load_assets()
    app.add_routes(routes.table)
