"""Password hashing with argon2id (argon2-cffi), run off the event loop.

Hashing costs tens of milliseconds of CPU on purpose, so it runs in a thread.
Login verifies against a dummy hash when the user does not exist, so the answer
and its timing do not reveal which usernames exist.
"""

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not a real password: used to equalise login timing")


async def hash_password(password: str) -> str:
    """Return the argon2id hash of `password`."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str | None, password: str) -> tuple[bool, bool]:
    target = password_hash if password_hash is not None else _dummy_hash()
    try:
        _hasher.verify(target, password)
    except (VerificationError, InvalidHashError):
        return False, False
    if password_hash is None:
        return False, False
    return True, _hasher.check_needs_rehash(password_hash)


async def verify_password(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """Check `password`; returns (matches, needs_rehash).

    Pass `None` as the hash for an unknown user: the work done is the same.
    """
    return await asyncio.to_thread(_verify, password_hash, password)
