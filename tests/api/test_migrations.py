"""Migrations: applied once each, in order, also when two runners start together."""

import asyncio

import asyncpg

from rig.migrations import applied_migrations, available_migrations, migrate

TABLES = {"users", "streams", "destinations", "agents", "schema_migrations"}


async def tables(conn) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


async def test_shipped_migrations_are_found():
    versions = [version for version, _sql in available_migrations()]
    assert versions, "no migrations shipped"
    assert versions[0] == "0001_initial"
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)


async def test_migrate_fresh_database_then_nothing_left(make_database):
    versions = [version for version, _sql in available_migrations()]
    conn = await asyncpg.connect(make_database())
    try:
        assert await applied_migrations(conn) == []
        assert await migrate(conn) == versions
        assert await tables(conn) >= TABLES
        assert await migrate(conn) == []
        assert await applied_migrations(conn) == versions
        rows = await conn.fetch("SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1")
        assert sorted((row["version"], row["n"]) for row in rows) == [(v, 1) for v in versions]
    finally:
        await conn.close()


async def test_two_concurrent_migrations_apply_the_schema_once(make_database):
    versions = [version for version, _sql in available_migrations()]
    url = make_database()
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        results = await asyncio.wait_for(asyncio.gather(migrate(first), migrate(second)), 30)
        assert sorted(results) == [[], versions]
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
        assert await tables(first) >= TABLES
    finally:
        await first.close()
        await second.close()
    # The lock was released: a third runner is not blocked and finds nothing to do.
    third = await asyncpg.connect(url)
    try:
        assert await asyncio.wait_for(migrate(third), 10) == []
        lock_holders = await third.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert lock_holders == 0
    finally:
        await third.close()


async def test_many_concurrent_migrations(make_database):
    versions = [version for version, _sql in available_migrations()]
    url = make_database()
    conns = [await asyncpg.connect(url) for _ in range(5)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(migrate(c) for c in conns)), 30)
        assert sorted(results) == [[]] * 4 + [versions]
        assert await applied_migrations(conns[0]) == versions
    finally:
        for conn in conns:
            await conn.close()
