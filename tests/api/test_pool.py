"""rig's connection pool: a connection goes back clean without asyncpg's full reset."""

import asyncpg

from rig.app import reset_connection


async def test_a_connection_left_in_a_transaction_is_rolled_back(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, reset=reset_connection)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMPORARY TABLE pool_probe (x int)")
            assert conn.is_in_transaction()
        async with pool.acquire() as conn:  # the same, only connection
            assert not conn.is_in_transaction()
            exists = await conn.fetchval("SELECT to_regclass('pool_probe') IS NOT NULL")
            assert exists is False  # the table was created in the rolled-back transaction
    finally:
        await pool.close()
