"""API keys and access tokens for integrations (`/accounts/apikeys`, `/accounts/token`).

A user creates a key (the secret is answered once; only its SHA-256 is stored), then
sends it as `X-Api-Key` on any user route, or exchanges it for an access token of at
most 24 h. A key has a scope (`full`, or `read`: GET routes only), may be restricted to
one stream, and may expire. Revoking deletes it: the key and every token made from it
stop working at once, because each use looks the key up (rig/auth.py). Keys are
managed with the user's own login only: a key cannot make or revoke keys.
"""

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web

from rig.api import ApiRoutes
from rig.appkeys import POOL, TOKENS
from rig.auth import KEY_BY_HASH, key_user, require_user
from rig.body import read_body
from rig.errors import CreateFailed, InvalidInput, NotFound
from rig.shapes import AccessToken, ApiKey, ApiKeyCreated, ApiKeyRevoked, NewApiKey, TokenRequest
from rig.streams import parse_uuid
from rig.tokens import hash_api_key

routes = ApiRoutes()

API_KEY_PREFIX = "rigkey_"  # tells a user key from an agent key (`rigagent_`) at a glance
KEYS_PER_USER = 100
ACCESS_TOKEN_TTL = 24 * 3600  # the spec's "at most 24 h"
KEY_COLUMNS = "id, name, scope, stream_id, created_at, expires_at, last_used_at"
ACCOUNT = {"tag": "accounts", "auth": "account"}


def new_api_key() -> str:
    """256 bits from the OS CSPRNG, URL-safe, with a recognisable prefix."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_payload(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=row["scope"],
        streamId=row["stream_id"],
        createdAt=row["created_at"],
        expiresAt=row["expires_at"],
        lastUsedAt=row["last_used_at"],
    )


@routes.post(
    "/accounts/apikeys",
    "createApiKey",
    **ACCOUNT,
    summary="Create an API key; its secret (`apiKey`) is in this answer only",
    message="API key created",
    payload=ApiKeyCreated,
    body=NewApiKey,
    errors=("404",),
    conflicts=(1006,),
    description="`streamId` must be one of your streams (else 1000). At most"
    f" {KEYS_PER_USER} keys per user (else 1006). Needs your own login token.",
)
async def create_api_key(request: web.Request) -> ApiKeyCreated:
    user = await require_user(request, own_login=True)
    body = await read_body(request, NewApiKey)
    if body.expiresAt is not None and body.expiresAt <= datetime.now(UTC):
        raise InvalidInput(
            "Invalid expiresAt: must be in the future",
            details={"field": "expiresAt", "reason": "must be in the future"},
        )
    secret = new_api_key()
    pool = request.app[POOL]
    async with pool.acquire() as conn, conn.transaction():
        # One user's key creations run one at a time, so the cap holds under races.
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
        if await conn.fetchval("SELECT count(*) FROM api_keys WHERE user_id = $1", user.id) >= (
            KEYS_PER_USER
        ):
            raise CreateFailed(
                f"Unable to create API key: at most {KEYS_PER_USER} per user",
                details={"field": "name", "reason": "too many API keys"},
            )
        if body.streamId is not None and not await conn.fetchval(
            "SELECT 1 FROM streams WHERE id = $1 AND user_id = $2", body.streamId, user.id
        ):
            raise NotFound("Stream not found", details={"field": "streamId"})
        row = await conn.fetchrow(
            "INSERT INTO api_keys (id, user_id, name, scope, stream_id, key_hash, expires_at)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}",
            uuid.uuid4(),
            user.id,
            body.name,
            body.scope,
            body.streamId,
            hash_api_key(secret),
            body.expiresAt,
        )
    return ApiKeyCreated(**api_key_payload(row).model_dump(), apiKey=secret)


@routes.get(
    "/accounts/apikeys",
    "listApiKeys",
    **ACCOUNT,
    summary="Your API keys, newest first (never their secrets)",
    message="API keys",
    payload=list[ApiKey],
)
async def list_api_keys(request: web.Request) -> list[ApiKey]:
    user = await require_user(request, own_login=True)
    rows = await request.app[POOL].fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
        user.id,
    )
    return [api_key_payload(row) for row in rows]


@routes.delete(
    "/accounts/apikeys/{keyID}",
    "revokeApiKey",
    **ACCOUNT,
    summary="Revoke an API key: it and every token made from it stop working at once",
    message="API key revoked",
    payload=ApiKeyRevoked,
    errors=("404",),
)
async def revoke_api_key(request: web.Request) -> ApiKeyRevoked:
    user = await require_user(request, own_login=True)
    key_id = parse_uuid(request, "keyID", "API key")
    revoked = await request.app[POOL].fetchval(
        "DELETE FROM api_keys WHERE id = $1 AND user_id = $2 RETURNING id", key_id, user.id
    )
    if revoked is None:
        raise NotFound("API key not found")
    return ApiKeyRevoked(id=revoked)


@routes.post(
    "/accounts/token",
    "createAccessToken",
    tag="accounts",
    summary="Exchange an API key for an access token (at most 24 h, the key's scope)",
    message="Access token created",
    payload=AccessToken,
    body=TokenRequest,
    errors=("401", "429"),
    description="The token ends with its key: when the key is revoked or expires, or"
    " after 24 h, whichever comes first. Rate limited per client address (429).",
)
async def create_access_token(request: web.Request) -> AccessToken:
    body = await read_body(request, TokenRequest)
    pool = request.app[POOL]
    row = await pool.fetchrow(KEY_BY_HASH, hash_api_key(body.apiKey))
    grant = (await key_user(pool, row, "invalid or expired API key")).grant
    if grant is None:  # pragma: no cover (key_user always grants)
        raise RuntimeError("an API key without a grant")
    ttl = ACCESS_TOKEN_TTL
    if grant.expires_at is not None:
        ttl = min(ttl, int((grant.expires_at - datetime.now(UTC)) / timedelta(seconds=1)))
    token, expires = request.app[TOKENS].issue(
        str(row["user_id"]), "user", max(ttl, 1), api_key=str(grant.key_id)
    )
    return AccessToken(token=token, expiresAt=datetime.fromtimestamp(expires, UTC))
