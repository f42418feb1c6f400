"""Who is calling: bearer tokens checked for users (client routes) and agents.

A user token on an agent route, or an agent token on a client route, is refused with
1003 and HTTP 403 (the token is genuine but lacks the scope). Anything else wrong
with the token is 1003 with HTTP 401.
"""

import uuid
from dataclasses import dataclass

from aiohttp import web

from rig.appkeys import POOL, TOKENS
from rig.errors import InvalidCredentials
from rig.tokens import Claims, TokenError, TokenType


@dataclass(frozen=True)
class User:
    """The authenticated user of a client request."""

    id: uuid.UUID
    username: str


@dataclass(frozen=True)
class Agent:
    """The authenticated agent of an agent request."""

    id: uuid.UUID
    name: str


def _unauthorized(reason: str) -> InvalidCredentials:
    return InvalidCredentials(
        "Missing, invalid or expired token",
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
            f"This route needs a {wanted} token",
            details={"reason": "wrong token type"},
            status=403,
        )
    return claims


def _subject(claims: Claims) -> uuid.UUID:
    try:
        return uuid.UUID(claims.subject)
    except ValueError as exc:
        raise _unauthorized("invalid token") from exc


async def require_user(request: web.Request) -> User:
    """The user behind a client request; the token's generation must still be current."""
    claims = _claims(request, "user")
    row = await request.app[POOL].fetchrow(
        "SELECT id, username, token_generation FROM users WHERE id = $1", _subject(claims)
    )
    if row is None or row["token_generation"] != claims.generation:
        raise _unauthorized("token revoked")
    return User(id=row["id"], username=row["username"])


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
