"""Agent credentials and the agent routes (`/agents/...`).

An operator creates an agent with `rig agents create NAME`, which prints an API key
once. The agent exchanges that key for a short-lived agent JWT at `POST /agents/auth`
and asks `GET /agents/config/{streamKey}` what to do with each publish.
"""

import secrets
import uuid
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from rig.api import ApiRoutes
from rig.appkeys import POOL, RATE_LIMITS, SETTINGS, TOKENS
from rig.auth import agent_claims, agent_revoked, agent_subject
from rig.body import read_body
from rig.errors import InvalidCredentials, NotFound
from rig.payloads import destination_payload
from rig.shapes import AgentAuth, AgentToken, Destination
from rig.tokens import hash_api_key

routes = ApiRoutes()

API_KEY_PREFIX = "rigagent_"


async def create_agent(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> tuple[uuid.UUID, str]:
    """Register an agent; return its id and API key. Only the key's hash is stored."""
    agent_id = uuid.uuid4()
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO agents (id, name, key_hash) VALUES ($1, $2, $3)",
        agent_id,
        name,
        hash_api_key(api_key),
    )
    return agent_id, api_key


@routes.post(
    "/agents/auth",
    "authenticateAgent",
    tag="agents",
    summary="Exchange an agent API key for a short-lived agent token",
    message="Agent authenticated",
    payload=AgentToken,
    body=AgentAuth,
    errors=("401", "429"),
    description="Rate limited per client address (429).",
)
async def authenticate_agent(request: web.Request) -> AgentToken:
    """Exchange an agent API key for a short-lived agent token."""
    body = await read_body(request, AgentAuth)
    row = await request.app[POOL].fetchrow(
        "SELECT id FROM agents WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_api_key(body.apiKey),
    )
    if row is None:
        raise InvalidCredentials("Invalid agent API key")
    token, expires = request.app[TOKENS].issue(
        str(row["id"]), "agent", request.app[SETTINGS].agent_token_ttl
    )
    return AgentToken(token=token, expiresAt=datetime.fromtimestamp(expires, UTC))


@routes.get(
    "/agents/config/{streamKey}",
    "getStreamConfig",
    tag="agents",
    auth="agent",
    summary="The destinations of the active stream with this ingest key",
    message="Stream Config",
    payload=list[Destination],
    errors=("404", "429"),
    description="Unknown keys are limited per agent (429: RIG_RATE_LIMIT_AGENT_MISSES).",
)
async def stream_config(request: web.Request) -> list[Destination]:
    """The destinations of the active stream with this ingest key (the agents' hot path).

    One statement answers both questions (is the agent still allowed, what is the stream):
    one round trip to PostgreSQL per request.
    """
    claims = agent_claims(request)
    lookup = request.app[RATE_LIMITS].key_lookup(claims.subject)
    stream_key = request.match_info["streamKey"]
    if "\x00" in stream_key:  # PostgreSQL text cannot hold NUL: no stream has this key
        stream_key = ""  # no stream has an empty key; the agent is still checked
    rows = await request.app[POOL].fetch(
        """SELECT a.id AS agent_id, s.id AS stream_id,
                  d.id, d.service, d.stream_key, d.is_active, d.server_url
             FROM (SELECT 1) AS one
             LEFT JOIN agents a ON a.id = $1 AND a.revoked_at IS NULL
             LEFT JOIN streams s ON s.stream_key = $2 AND s.is_active
             LEFT JOIN destinations d ON d.stream_id = s.id
            ORDER BY d.id""",
        agent_subject(claims),
        stream_key,
    )
    if rows[0]["agent_id"] is None:
        raise agent_revoked()
    if rows[0]["stream_id"] is None:
        raise NotFound("Stream not found")
    request.app[RATE_LIMITS].guessed_right(lookup)
    service_urls = request.app[SETTINGS].service_urls
    return [destination_payload(row, service_urls) for row in rows if row["id"]]
