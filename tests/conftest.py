"""Shared fixtures: one embedded PostgreSQL for the whole session, rig apps on it."""

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from agent.scheduling import demote_real_time_threads
from rig.app import create_app
from rig.embedded_db import embedded_server, ensure_database
from rig.migrations import migrate
from rig.services import DEFAULT_SERVICE_URLS
from rig.settings import Settings
from tests.chromium import CLOSE_TIMEOUT_S, kill_marked, launch_options

TABLES = ("webhook_deliveries", "stream_claims", "destinations", "streams", "agents", "users")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server (pgserver), started once per test session."""
    server = embedded_server(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def make_database(postgres_server: object) -> Callable[[], str]:
    """Factory: a new empty database on the session server; returns its URL."""
    counter = itertools.count()

    def make() -> str:
        return ensure_database(postgres_server, f"rig_test_{next(counter)}")

    return make


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[], str]) -> str:
    """The migrated database most tests share (emptied after each test)."""
    url = make_database()

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the shared database; every table is emptied after the test."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
    await conn.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for an app on the shared database, services pointing nowhere real."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        jwt_secret=secrets.token_urlsafe(48),
        service_urls=dict(DEFAULT_SERVICE_URLS),
        background_tasks=False,  # tests run the claim sweeper and webhook sender by hand
        # Webhook receivers and Custom destinations of the tests listen on 127.0.0.1;
        # tests/api/test_destination_policy.py turns this off to test the policy.
        allow_private_destinations=True,
    )


@pytest.fixture
async def client(aiohttp_client, settings: Settings, db: asyncpg.Connection):
    """A test client for a rig app on the shared, emptied-after-use database."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture(autouse=True)
def no_real_time_threads() -> Iterator[None]:
    """No test leaves a thread of pytest real-time. libsvtav1 makes the thread that opens
    it SCHED_FIFO 99 where it may (CI runs as root): pytest's main thread, then every
    process it started afterwards (rig, agents, Chromium) ran above the kernel's own
    threads, and one spinning Chromium process stalled a CI run. Encoders are opened
    inside agent.scheduling.ordinary_scheduling(); this catches one that is not."""
    yield
    demoted = demote_real_time_threads()
    assert demoted == 0, f"the test left {demoted} thread(s) real-time (now demoted)"


# ---------------------------------------------------------------- a real browser


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Headless Chromium driven by Playwright (async API: the tests' loop runs rig too)."""
    from playwright.async_api import async_playwright

    mark, options = launch_options()
    try:
        async with async_playwright() as playwright:
            chromium = await playwright.chromium.launch(**options)
            try:
                yield chromium
            finally:
                await asyncio.wait_for(chromium.close(), CLOSE_TIMEOUT_S)
    finally:
        kill_marked(mark)
