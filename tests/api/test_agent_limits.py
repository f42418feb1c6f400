"""Wrong stream keys are not free to guess through an agent (issue 12, item 4, rig's
side): each agent's unknown-key lookups (claim, config) are limited, before any database
work; known keys cost nothing, so a busy agent's bursts pass."""

import secrets
from dataclasses import replace

import pytest

from rig.app import create_app
from rig.appkeys import POOL

LIMIT = 5


@pytest.fixture
async def limited(aiohttp_client, settings, db):
    return await aiohttp_client(create_app(replace(settings, rate_limit_agent_misses=LIMIT)))


async def test_unknown_keys_are_limited_per_agent(limited, api, make_agent, expect_error):
    agent = await make_agent(client=limited)
    other = await make_agent(client=limited)
    for _ in range(LIMIT):
        await expect_error(await agent.claim(secrets.token_urlsafe(16)), 1000, 404)
    resp = await agent.claim(secrets.token_urlsafe(16))
    body = await expect_error(resp, 1010, 429)
    assert body["details"]["reason"] == "too many unknown stream keys from this agent"
    assert int(resp.headers["Retry-After"]) >= 1
    resp = await limited.get(f"/agents/config/{secrets.token_urlsafe(16)}", headers=agent.headers)
    await expect_error(resp, 1010, 429)  # the same allowance
    # Another agent has its own.
    await expect_error(await other.claim(secrets.token_urlsafe(16)), 1000, 404)
    # Once spent, the refusal costs rig no database work at all.
    await limited.server.app[POOL].close()
    await expect_error(await agent.claim(secrets.token_urlsafe(16)), 1010, 429)


async def test_a_busy_agents_known_keys_are_never_limited(limited, api, make_agent, expect_ok):
    account = await api.account()
    agent = await make_agent(client=limited)
    streams = [await api.stream(account) for _ in range(LIMIT * 4)]
    for stream in streams:  # a restart re-claiming every stream at once
        await agent.claimed(stream["streamKey"])
        resp = await limited.get(f"/agents/config/{stream['streamKey']}", headers=agent.headers)
        await expect_ok(resp, "Stream Config")
