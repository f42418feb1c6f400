"""Where streamers push: `GET /ingest`, the public RTMP ingest URLs of this rig's agents.

OBS needs a server URL before the stream is live, when no agent has announced itself
for it yet (once live, `provisionStatus.ingestUrl` says which agent took it). Agents may
sit behind DNS round robin or a TCP load balancer that only the operator knows of, so
the operator names the public URLs (`RIG_INGEST_URLS`); the first is the default.
"""

from aiohttp import web

from rig.api import ApiRoutes
from rig.appkeys import SETTINGS
from rig.auth import require_user
from rig.services import parse_ingest_urls
from rig.shapes import IngestServers

routes = ApiRoutes()


@routes.get(
    "/ingest",
    "getIngestServers",
    tag="streams",
    auth="user",
    summary="Where streamers push: the public RTMP ingest URLs (extension)",
    message="Ingest servers",
    payload=IngestServers,
)
async def ingest_servers(request: web.Request) -> IngestServers:
    """Extension: the RTMP ingest URLs streamers push to (empty when not configured)."""
    await require_user(request)
    return IngestServers(ingestUrls=parse_ingest_urls(request.app[SETTINGS].ingest_urls))
