"""Refuse placeholder and guessable secrets at start (RIG_JWT_SECRET, the database password).

Whoever knows the JWT signing key can mint a token for any user or agent, so a key
copied from an example (`CHANGE-ME-...` in deploy/) or made up by a person must stop
rig before it serves a request. Strength is zxcvbn's estimate of the guesses an
attacker needs (dictionary words, repetitions, sequences, keyboard patterns and dates
are cheap for it); a random string from a generator is far above the bar.
"""

import re
from urllib.parse import urlsplit

from zxcvbn import zxcvbn

# Words of the placeholders in deploy/ and of the usual ones in examples elsewhere.
PLACEHOLDER = re.compile(
    r"change[-_ ]?me|replace[-_ ]?me|changeit|placeholder|your[-_ ]?secret|example|dummy",
    re.IGNORECASE,
)
MIN_LENGTH = 32
# 10^25 guesses (~83 bits). Measured: 2,000 random 32-hex-digit strings (128 bits)
# scored at least 10^27; "rig-jwt-secret-for-production-2024" style phrases ~10^20-10^28
# and the deploy/ placeholder 10^26.7 (refused as a placeholder anyway).
MIN_GUESSES_LOG10 = 25.0
ZXCVBN_MAX_LENGTH = 72  # zxcvbn's own limit; a strong head makes the whole strong
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class SecretRefused(Exception):
    """A secret setting that must not be used; the message says what to do instead."""


def secret_problem(secret: str) -> str | None:
    """Why `secret` must not sign tokens (None when it may). Never quotes the secret."""
    if PLACEHOLDER.search(secret):
        return "it is a placeholder from an example"
    if len(secret) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if zxcvbn(secret[:ZXCVBN_MAX_LENGTH])["guesses_log10"] < MIN_GUESSES_LOG10:
        return "it is easy to guess (words, repetitions or sequences), not random"
    return None


def check_jwt_secret(secret: str) -> None:
    """Raise SecretRefused, saying what to do, when RIG_JWT_SECRET must not be used."""
    problem = secret_problem(secret)
    if problem:
        raise SecretRefused(
            f"RIG_JWT_SECRET refused: {problem}. Anyone who guesses it can forge tokens."
            f" Generate one: {GENERATE} (or unset it: rig then generates one in the data dir)"
        )


def check_database_url(url: str) -> None:
    """Raise SecretRefused when the database URL's password is a placeholder (deploy/
    examples: `postgresql://rig:CHANGE-ME@...`, `change-me-to-a-long-random-password`)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return  # not ours to parse further: asyncpg says what is wrong with it
    if password and PLACEHOLDER.search(password):
        raise SecretRefused(
            "RIG_DATABASE_URL refused: its password is a placeholder from an example."
            f" Set a random one on the database and in the URL: {GENERATE}"
        )
