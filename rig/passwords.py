"""Password hashing with argon2id (argon2-cffi), run off the event loop.

Hashing costs tens of milliseconds of CPU and 64 MiB of memory on purpose, so it runs
in a thread, and the API bounds how many run at once (`PasswordWork`): a flood of
password requests waits its turn instead of taking every core and hundreds of MB.
Login verifies against a dummy hash when the user does not exist, so the answer
and its timing do not reveal which usernames exist.
"""

import asyncio
import os
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


def cpu_count() -> int:
    """CPUs this process may run on: more argon2 hashes at once gain no speed, only memory."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class PasswordWork:
    """Hashing and verifying with at most `slots` argon2 computations at once."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._slots = asyncio.Semaphore(slots)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await hash_password(password)

    async def verify(self, password_hash: str | None, password: str) -> tuple[bool, bool]:
        async with self._slots:
            return await verify_password(password_hash, password)
