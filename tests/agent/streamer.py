"""A streamer at a real rig (the in-process agent tests): an account, its login, a stream."""

from __future__ import annotations

import aiohttp


async def new_stream(http: aiohttp.ClientSession, rig_url: str) -> tuple[dict[str, str], dict]:
    """Sign up and log in a streamer, create a stream: (the login's headers, the stream)."""
    user = {"username": "streamer", "password": "a long password", "email": "s@example.org"}
    async with http.post(f"{rig_url}/accounts/", json=user) as resp:
        assert resp.status == 200
    async with http.post(f"{rig_url}/accounts/auth/local", json=user) as resp:
        headers = {"Authorization": f"Bearer {(await resp.json())['payload']['token']}"}
    async with http.post(f"{rig_url}/streams/", headers=headers) as resp:
        stream = (await resp.json())["payload"]
    return headers, stream
