"""JSON Web Tokens for users and agents (pyjwt, HS256).

Every token carries subject, issue and expiry times, audience, issuer and its type.
User tokens also carry the user's token generation, bumped on password change, so a
password change invalidates every earlier token.
"""

import hashlib
import time
from dataclasses import dataclass
from typing import Literal

import jwt

ALGORITHM = "HS256"
ISSUER = "rig"
AUDIENCE = "rig-api"
TokenType = Literal["user", "agent"]
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    token_type: TokenType
    issued_at: int
    expires_at: int
    generation: int = 0
    api_key: str | None = None  # the API key a user token was made from (its id)


def hash_api_key(api_key: str) -> bytes:
    """SHA-256 of an API key (agents' and users'): 256 random bits need no slow hash,
    and this is indexable. Only this is stored."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).digest()


class TokenError(Exception):
    """The token is missing, malformed, forged, expired or of the wrong kind."""


class TokenIssuer:
    """Issues and verifies tokens with one signing key."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        # Tokens already verified, by their exact text: an agent or a web client sends
        # the same token on every request, and verifying it again (base64, JSON, HMAC,
        # claim checks) was a tenth of rig's CPU per request. A hit is valid until the
        # token's own expiry; the same text can only carry the same signed claims.
        self._verified: dict[str, Claims] = {}

    def issue(
        self,
        subject: str,
        token_type: TokenType,
        ttl: int,
        generation: int = 0,
        api_key: str | None = None,
    ) -> tuple[str, int]:
        """Return (token, expiry as a Unix time). A user token made from an API key
        names the key (`key`) instead of a password generation: it lives and dies with
        the key, not with the password."""
        now = int(time.time())
        claims = {
            "sub": subject,
            "typ": token_type,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "aud": AUDIENCE,
            "iss": ISSUER,
        }
        if api_key is not None:
            claims["key"] = api_key
        elif token_type == "user":
            claims["gen"] = generation
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), now + ttl

    def verify(self, token: str) -> Claims:
        """Verify signature, algorithm, audience, issuer and times; raise TokenError."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached.expires_at:
                return cached
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # never "none", never whatever the header says
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["sub", "typ", "iat", "exp", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from exc
        token_type = claims["typ"]
        generation = claims.get("gen", 0)
        api_key = claims.get("key")
        if (
            token_type not in ("user", "agent")
            or not isinstance(generation, int)
            or not isinstance(api_key, str | None)
        ):
            raise TokenError("unknown token type")
        return Claims(
            subject=str(claims["sub"]),
            token_type=token_type,
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            generation=generation,
            api_key=api_key,
        )
