"""Helpers for the API tests: envelope checks, accounts, streams, agents, rig processes."""

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from rig.agents import create_agent
from rig.appkeys import SETTINGS, TOKENS
from rig.passwords import hash_password

ERROR_FIELDS = {"message", "errorCode", "details"}
PASSWORD = "correct horse battery"

_names = itertools.count()
_hash_cache: list[str] = []


async def _password_hash() -> str:
    """The argon2 hash of PASSWORD, computed once per session."""
    if not _hash_cache:
        _hash_cache.append(await hash_password(PASSWORD))
    return _hash_cache[0]


async def expect_ok(resp: Any, message: str) -> Any:
    """Check a success envelope (HTTP 200, exactly message + payload); return the payload."""
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "application/json", text
    body = await resp.json()
    assert isinstance(body, dict), text
    assert set(body) == {"message", "payload"}, body
    assert body["message"] == message, body
    return body["payload"]


async def expect_error(resp: Any, code: int, status: int | tuple[int, ...]) -> dict[str, Any]:
    """Check an error envelope (exactly message, errorCode, details); return the body."""
    text = await resp.text()
    assert resp.content_type == "application/json", f"{resp.status} {text}"
    body = await resp.json()
    assert isinstance(body, dict), text
    assert set(body) == ERROR_FIELDS, body
    assert body["errorCode"] == code, body
    allowed = status if isinstance(status, tuple) else (status,)
    assert resp.status in allowed, f"{resp.status} {body}"
    assert isinstance(body["message"], str), body
    assert body["message"], body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class Api:
    """Client-bound shortcuts for the flows most tests need."""

    client: Any
    db: asyncpg.Connection
    agent_keys: list[str] = field(default_factory=list)

    async def register(
        self, username: str | None = None, password: str = PASSWORD, email: str | None = None
    ) -> dict[str, Any]:
        n = next(_names)
        username = username or f"user{n}"
        email = email or f"{username.lower()}.{n}@example.org"
        resp = await self.client.post(
            "/accounts/", json={"username": username, "password": password, "email": email}
        )
        return await expect_ok(resp, "User created")

    async def login(self, username: str, password: str = PASSWORD) -> str:
        resp = await self.client.post(
            "/accounts/auth/local", json={"username": username, "password": password}
        )
        payload = await expect_ok(resp, "Authentication successful")
        return payload["token"]

    async def account(self, username: str | None = None, via_api: bool = False) -> Account:
        """A user with password PASSWORD and a token.

        By default the row is inserted directly (with a hash of PASSWORD made once) and the
        token issued by the app's own issuer, as login would: argon2 costs ~0.1 s a call.
        """
        if via_api:
            created = await self.register(username)
            token = await self.login(created["username"])
            return Account(
                created["userID"], created["username"], created["email"], PASSWORD, token
            )
        n = next(_names)
        username = username or f"user{n}"
        email = f"{username.lower()}.{n}@example.org"
        user_id = uuid.uuid4()
        await self.db.execute(
            "INSERT INTO users (id, username, email, password_hash) VALUES ($1, $2, $3, $4)",
            user_id,
            username,
            email,
            await _password_hash(),
        )
        app = self.client.server.app
        token, _ = app[TOKENS].issue(str(user_id), "user", app[SETTINGS].token_ttl, 0)
        return Account(str(user_id), username, email, PASSWORD, token)

    async def stream(self, account: Account) -> dict[str, Any]:
        resp = await self.client.post("/streams/", headers=account.headers)
        return await expect_ok(resp, "New stream created")

    async def destination(
        self, account: Account, stream_id: str, service: str = "YouTube", key: str = "dest-key"
    ) -> dict[str, Any]:
        resp = await self.client.post(
            f"/streams/{stream_id}/destination",
            json={"service": service, "streamKey": key},
            headers=account.headers,
        )
        return await expect_ok(resp, "Stream destination added")

    async def detail(self, account: Account, stream_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/streams/{stream_id}", headers=account.headers)
        return await expect_ok(resp, "Stream detail")

    async def api_key(self, account: Account, **fields: Any) -> dict[str, Any]:
        """A new API key of the account (`name` "bot" unless given); the answer has
        its secret in `apiKey`."""
        resp = await self.client.post(
            "/accounts/apikeys", json={"name": "bot", **fields}, headers=account.headers
        )
        return await expect_ok(resp, "API key created")

    async def access_token(self, api_key: str) -> dict[str, Any]:
        """`POST /accounts/token`: {"token", "expiresAt"} for an API key's secret."""
        resp = await self.client.post("/accounts/token", json={"apiKey": api_key})
        return await expect_ok(resp, "Access token created")

    async def agent_key(self, name: str | None = None) -> str:
        _agent_id, key = await create_agent(self.db, name or f"agent{next(_names)}")
        return key

    async def agent_token(self, api_key: str | None = None) -> str:
        resp = await self.client.post(
            "/agents/auth", json={"apiKey": api_key or await self.agent_key()}
        )
        return (await expect_ok(resp, "Agent authenticated"))["token"]


@pytest.fixture
def api(client: Any, db: asyncpg.Connection) -> Api:
    """Shortcuts bound to the `client` app and the `db` connection."""
    return Api(client, db)


@pytest.fixture(name="expect_ok")
def expect_ok_fixture() -> Any:
    """`await expect_ok(resp, message)`: check a success envelope, return its payload."""
    return expect_ok


@pytest.fixture(name="expect_error")
def expect_error_fixture() -> Any:
    """`await expect_error(resp, code, status)`: check an error envelope, return its body."""
    return expect_error


# ---------------------------------------------------------------- rig processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rig_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a rig subprocess: no RIG_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env


def run_rig(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> Any:
    """Run `python -m rig ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "rig", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class RigProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM; the process must exit within `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Poll `GET /streams/` until rig answers (1003 in the JSON envelope)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"rig exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    async with session.get(f"{self.url}/streams/") as resp:
                        await expect_error(resp, 1003, 401)
                        return
                except aiohttp.ClientConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"rig did not come up in {timeout} s:\n{self.log()}")
                await asyncio.sleep(0.1)


@pytest.fixture(name="free_port")
def free_port_fixture() -> Any:
    return free_port


@pytest.fixture(name="rig_env")
def rig_env_fixture() -> Any:
    return rig_env


@pytest.fixture(name="run_rig")
def run_rig_fixture() -> Any:
    return run_rig


@pytest.fixture
def spawn_rig(tmp_path: Path) -> Iterator[Any]:
    """Start `python -m rig serve --port P` subprocesses; every one is killed afterwards."""
    started: list[RigProcess] = []

    def spawn(env: dict[str, str]) -> RigProcess:
        port = free_port()
        while port in {rig.port for rig in started}:
            port = free_port()
        log_path = tmp_path / f"rig-{port}-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rig", "serve", "--port", str(port)],
                env=env,
                cwd=tmp_path,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        rig = RigProcess(proc, port, log_path)
        started.append(rig)
        return rig

    yield spawn
    for rig in started:
        if rig.proc.poll() is None:
            rig.proc.kill()
            rig.proc.wait(timeout=10)


# ---------------------------------------------------------------- live state: agents, webhooks


@dataclass
class LiveAgent:
    """An agent with a token, bound to one test client: claim, heartbeat, release."""

    client: Any
    id: uuid.UUID
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    async def claim(self, stream_key: str, ingest_url: str = "rtmp://edge.example/live") -> Any:
        """POST the claim; returns the response."""
        return await self.client.post(
            f"/agents/streams/{stream_key}/claim",
            json={"ingestUrl": ingest_url},
            headers=self.headers,
        )

    async def claimed(self, stream_key: str, ingest_url: str = "rtmp://edge.example/live") -> Any:
        """Claim and expect success; returns the payload."""
        return await expect_ok(await self.claim(stream_key, ingest_url), "Stream claimed")

    async def heartbeat(self, claims: list[dict[str, Any]]) -> Any:
        """POST a heartbeat; returns the response."""
        return await self.client.post(
            "/agents/heartbeat", json={"claims": claims}, headers=self.headers
        )

    async def beat(self, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Heartbeat and expect success; returns the per-claim answers."""
        payload = await expect_ok(await self.heartbeat(claims), "Heartbeat accepted")
        assert set(payload) == {"claims"}, payload
        return payload["claims"]

    async def release(self, claim_id: str, body: dict[str, Any] | None = None) -> Any:
        """DELETE the claim, with a JSON body (reason, final health) when given."""
        return await self.client.delete(
            f"/agents/claims/{claim_id}", headers=self.headers, json=body
        )


@pytest.fixture
def make_agent(client: Any, db: asyncpg.Connection) -> Any:
    """`await make_agent(name=None, client=None)`: a registered agent with a fresh token
    minted by the client's app (default: the `client` fixture's app)."""
    default_client = client

    async def make(name: str | None = None, client: Any = None) -> LiveAgent:
        bound = client or default_client
        name = name or f"agent{next(_names)}"
        agent_id, _key = await create_agent(db, name)
        app = bound.server.app
        token, _ = app[TOKENS].issue(str(agent_id), "agent", app[SETTINGS].agent_token_ttl)
        return LiveAgent(bound, agent_id, name, token)

    return make


@dataclass
class ReceivedHook:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint recording every POST; answers `statuses` in turn, then 200."""

    url: str
    received: list[ReceivedHook] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


@pytest.fixture
async def webhook_receiver(aiohttp_server: Any) -> WebhookReceiver:
    """A real aiohttp server on 127.0.0.1 (free port) standing in for a callbackUrl."""
    from aiohttp import web

    receiver = WebhookReceiver(url="")

    async def hook(request: web.Request) -> web.Response:
        receiver.received.append(ReceivedHook(dict(request.headers), await request.read()))
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = str(server.make_url("/hook"))
    return receiver


@pytest.fixture(name="case")
def case_fixture() -> Any:
    """`with case(value):` names the table case an assertion failed for (many cases, one app:
    one test per case would pay for an app and a database cleanup each)."""

    @contextlib.contextmanager
    def case(value: Any) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"case {value!r}: {exc}") from exc

    return case
