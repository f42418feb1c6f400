"""The failed-publish throttle against a real rig (issue 12, item 4): only refused
publishes spend an address's budget, so many good publishes from one address at once (a
studio behind one NAT, the benchmark's 32 publishers) all get in, while guessing from
that address is throttled after its burst."""

import asyncio
import secrets

import aiohttp

from agent.rig_client import RigClient
from agent.rtmp.events import PublishRefused, PublishStarted
from agent.server import IngestServer
from agent.settings import AgentSettings
from rig.agents import create_agent
from rig.app import create_app
from tests.agent.test_agent_ops import Publisher
from tests.agent.test_heartbeat_scale import make_streams

STREAMS = 24  # more than the burst (10), fewer than the unauthenticated slots (32)


async def test_good_publishes_at_once_are_never_throttled(aiohttp_server, settings, db):
    rig_server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    rig_url = str(rig_server.make_url("")).rstrip("/")
    _agent_id, api_key = await create_agent(db, "studio-edge")
    async with aiohttp.ClientSession() as http:
        keys = await make_streams(http, rig_url, STREAMS)
    agent_settings = AgentSettings(rig_url=rig_url, agent_key=api_key, rtmp_listen="127.0.0.1:0")
    async with RigClient(rig_url, api_key) as rig:
        server = IngestServer(agent_settings, rig, agent_settings.egress())
        await server.start()
        publishers = [Publisher(server.port, key) for key in keys]
        try:
            answers = await asyncio.gather(*(p.publish() for p in publishers))
            assert all(isinstance(a, PublishStarted) for a in answers), answers
            assert server.stats.refused == {}
            # The same address guessing: a burst reaches rig, then it is throttled.
            guesses = []
            for _ in range(12):
                guesser = Publisher(server.port, secrets.token_urlsafe(16))
                guesses.append(await guesser.publish())
                await guesser.close()
            assert all(isinstance(g, PublishRefused) for g in guesses)
            assert server.stats.refused == {"unknown_key": 10, "throttled": 2}
        finally:
            for publisher in publishers:
                await publisher.close()
            await server.close()
