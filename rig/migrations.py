"""Apply the SQL files in `sql/` in order, once each, recorded in `schema_migrations`.

Each file runs in its own transaction. A session-level advisory lock serialises
concurrent runners, so two rig processes starting on a fresh database at the same
moment both come up: the second waits, then finds nothing left to do.
"""

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

# Arbitrary constant identifying "rig migrations" among advisory locks.
MIGRATION_LOCK_ID = 0x72_69_67_5F_6D_69_67  # "rig_mig"


def available_migrations() -> list[tuple[str, str]]:
    """(version, SQL) for every migration shipped with rig, in order."""
    files = resources.files("rig.sql")
    found = [
        (entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in files.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found)


async def applied_migrations(conn: asyncpg.Connection) -> list[str]:
    """Versions already applied, oldest first (empty on a fresh database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration; return the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text        PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        done = set(await applied_migrations(conn))
        applied = []
        for version, sql in available_migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
