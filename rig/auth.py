"""Who is calling: users (client routes) by bearer token or API key, agents by token.

A user token on an agent route, or an agent token on a client route, is refused with
1003 and HTTP 403 (the token is genuine but lacks the scope). Anything else wrong
with the token is 1003 with HTTP 401.

A user may also call with one of their API keys (rig/apikeys.py): `X-Api-Key: <secret>`,
or a token made from a key (`POST /accounts/token`). Such a caller carries the key's
grant: `read` keys may only read (a write is 403, 1003), a key restricted to one stream
sees only that stream, and account routes refuse keys (403, 1003). Every use looks the
key up, so a revoked or expired key (and its tokens) stops working at once.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from aiohttp import web

from rig.appkeys import POOL, TOKENS
from rig.errors import InvalidCredentials
from rig.tokens import Claims, TokenError, TokenType, hash_api_key

API_KEY_HEADER = "X-Api-Key"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
# lastUsedAt is written at most this often per key: a busy integration must not turn
# every request into a database write.
LAST_USED_RESOLUTION = "60 seconds"


@dataclass(frozen=True)
class Grant:
    """What an API key lets its holder do."""

    key_id: uuid.UUID
    scope: Literal["full", "read"]
    stream_id: uuid.UUID | None  # the one stream it may see and change; None: all
    expires_at: datetime | None


@dataclass(frozen=True)
class User:
    """The authenticated user of a client request (through `grant` when by API key)."""

    id: uuid.UUID
    username: str
    grant: Grant | None = None

    def may_see(self, stream_id: uuid.UUID) -> bool:
        """Whether this caller may see (and, with a full key, change) the stream."""
        return self.grant is None or self.grant.stream_id in (None, stream_id)


@dataclass(frozen=True)
class Agent:
    """The authenticated agent of an agent request."""

    id: uuid.UUID
    name: str


def _unauthorized(
    reason: str, message: str = "Missing, invalid or expired token"
) -> InvalidCredentials:
    return InvalidCredentials(
        message,
        details={"reason": reason},
        headers={"WWW-Authenticate": 'Bearer realm="rig"'},
    )


def _claims(request: web.Request, wanted: TokenType) -> Claims:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token")
    try:
        claims = request.app[TOKENS].verify(token.strip())
    except TokenError as exc:
        raise _unauthorized("invalid token") from exc
    if claims.token_type != wanted:
        raise InvalidCredentials(
            f"This route needs {'an' if wanted[0] in 'aeiou' else 'a'} {wanted} token",
            details={"reason": "wrong token type"},
            status=403,
        )
    return claims


def _subject(claims: Claims) -> uuid.UUID:
    try:
        return uuid.UUID(claims.subject)
    except ValueError as exc:
        raise _unauthorized("invalid token") from exc


def _forbidden(message: str, reason: str) -> InvalidCredentials:
    return InvalidCredentials(message, details={"reason": reason}, status=403)


# The key (by hash or by id) with its owner; an expired key is not found.
_KEY_QUERY = """SELECT k.id, k.scope, k.stream_id, k.expires_at, k.last_used_at IS NULL
                       OR k.last_used_at < now() - interval '{resolution}' AS stale,
                       u.id AS user_id, u.username
                  FROM api_keys k JOIN users u ON u.id = k.user_id
                 WHERE {where} AND (k.expires_at IS NULL OR k.expires_at > now())"""
KEY_BY_HASH = _KEY_QUERY.format(resolution=LAST_USED_RESOLUTION, where="k.key_hash = $1")
KEY_BY_ID = _KEY_QUERY.format(resolution=LAST_USED_RESOLUTION, where="k.id = $1")


async def key_user(pool: asyncpg.Pool, row: asyncpg.Record | None, reason: str) -> User:
    """The user behind an API key row (None: refused); records when it was used."""
    if row is None:
        raise _unauthorized(reason, "Invalid, expired or revoked API key")
    if row["stale"]:
        await pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", row["id"])
    grant = Grant(
        key_id=row["id"],
        scope=row["scope"],
        stream_id=row["stream_id"],
        expires_at=row["expires_at"],
    )
    return User(id=row["user_id"], username=row["username"], grant=grant)


async def _caller(request: web.Request) -> User:
    pool = request.app[POOL]
    if "Authorization" not in request.headers and API_KEY_HEADER in request.headers:
        secret = request.headers[API_KEY_HEADER].strip()
        row = await pool.fetchrow(KEY_BY_HASH, hash_api_key(secret)) if secret else None
        return await key_user(pool, row, "invalid or expired API key")
    claims = _claims(request, "user")
    if claims.api_key is not None:
        try:
            key_id = uuid.UUID(claims.api_key)
        except ValueError as exc:
            raise _unauthorized("invalid token") from exc
        return await key_user(pool, await pool.fetchrow(KEY_BY_ID, key_id), "API key revoked")
    row = await pool.fetchrow(
        "SELECT id, username, token_generation FROM users WHERE id = $1", _subject(claims)
    )
    if row is None or row["token_generation"] != claims.generation:
        raise _unauthorized("token revoked")
    return User(id=row["id"], username=row["username"])


async def require_user(request: web.Request, *, own_login: bool = False) -> User:
    """The user behind a client request: a login token (its generation still current),
    an API key or a token made from one, within what the key grants.

    `own_login`: the route manages the account itself and refuses API keys.
    """
    user = await _caller(request)
    if user.grant is not None:
        if own_login:
            raise _forbidden("This route needs your own login token, not an API key", "API key")
        if user.grant.scope == "read" and request.method not in READ_METHODS:
            raise _forbidden("This API key may only read", "read-only API key")
    return user


def require_any_stream(user: User) -> None:
    """Refuse a caller whose key is restricted to one stream (e.g. creating streams)."""
    if user.grant is not None and user.grant.stream_id is not None:
        raise _forbidden("This API key is restricted to one stream", "stream-restricted key")


async def require_agent(request: web.Request) -> Agent:
    """The agent behind an agent request; a revoked agent is refused at once."""
    claims = agent_claims(request)
    row = await request.app[POOL].fetchrow(
        "SELECT id, name FROM agents WHERE id = $1 AND revoked_at IS NULL", _subject(claims)
    )
    if row is None:
        raise agent_revoked()
    return Agent(id=row["id"], name=row["name"])


def agent_claims(request: web.Request) -> Claims:
    """The verified agent token of a request (whether the agent was revoked is the
    caller's question: `require_agent`, or a query of its own that checks it)."""
    return _claims(request, "agent")


def agent_subject(claims: Claims) -> uuid.UUID:
    """The agent id an agent token names."""
    return _subject(claims)


def agent_revoked() -> InvalidCredentials:
    """The error for a token of an agent revoked since it was issued."""
    return _unauthorized("agent revoked")
