"""Operations: health, readiness, metrics, request ids, CORS, abuse limits, deadlines, logs."""

import asyncio
import json
import logging
import re
import secrets
from dataclasses import replace

import pytest
from aiohttp import web

from rig.app import create_app
from rig.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    log_format,
    request_id_var,
    setup_logging,
)
from rig.networks import parse_networks
from rig.operations import deadline_middleware
from rig.ratelimit import KNOWN_GOOD_SECONDS, KnownGood, client_address
from rig.settings import Settings
from rig.token_bucket import TokenBucket

# ---------------------------------------------------------------- health and readiness


async def test_healthz_and_readyz(client, expect_ok):
    assert await expect_ok(await client.get("/healthz"), "OK") == {"status": "ok"}
    ready = await expect_ok(await client.get("/readyz"), "Ready")
    assert ready == {"status": "ok", "database": "ok"}


async def test_readyz_is_503_when_the_database_is_unreachable(aiohttp_client, tmp_path):
    """An app whose database never answered (no pool): alive, but not ready."""
    settings = Settings(
        database_url="postgresql://rig@127.0.0.1:1/rig",
        data_dir=tmp_path,
        jwt_secret=secrets.token_urlsafe(48),
        background_tasks=False,
    )
    app = create_app(settings)
    app.cleanup_ctx.clear()  # no pool at all: the database never answered
    client = await aiohttp_client(app)
    live = await client.get("/healthz")
    assert live.status == 200  # alive: restarting would not help
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["errorCode"] == 1008
    assert body["details"]["database"] == "unreachable"


async def test_readyz_is_503_when_the_pool_is_closed(client):
    from rig.appkeys import POOL

    await client.server.app[POOL].close()
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["errorCode"] == 1008


# ---------------------------------------------------------------- metrics


def samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a Prometheus exposition, by label string."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


async def test_metrics_count_requests_by_route_pattern_and_status(client, api):
    account = await api.account()
    stream = await api.stream(account)
    key = stream["streamKey"]
    await client.get(f"/streams/{stream['id']}", headers=account.headers)
    await client.get(f"/streams/{stream['id']}", headers=account.headers)
    await client.get("/streams/not-a-uuid", headers=account.headers)
    await client.get(f"/agents/config/{key}")  # 401: no agent token
    await client.get(f"/no/such/{key}")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    requests = samples(text, "rig_http_requests_total")
    assert requests['{method="GET",route="/streams/{streamID}",status="200"}'] == 2
    assert requests['{method="GET",route="/streams/{streamID}",status="404"}'] == 1
    assert requests['{method="POST",route="/streams/",status="200"}'] == 1
    assert requests['{method="GET",route="/agents/config/{streamKey}",status="401"}'] == 1
    assert requests['{method="GET",route="<unmatched>",status="404"}'] == 1
    counts = samples(text, "rig_http_request_duration_seconds_count")
    assert counts['{method="GET",route="/streams/{streamID}"}'] == 3
    assert "rig_http_request_duration_seconds_bucket" in text
    assert samples(text, "rig_http_requests_in_flight")[""] == 1  # this scrape
    # Route patterns only: no key, id or path in any label.
    for secret in (key, stream["id"], "not-a-uuid", "/no/such"):
        assert secret not in text


# ---------------------------------------------------------------- request ids


async def test_request_id_is_echoed_or_generated(client):
    resp = await client.get("/healthz", headers={"X-Request-Id": "abc-123.x"})
    assert resp.headers["X-Request-Id"] == "abc-123.x"
    generated = {(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(3)}
    assert len(generated) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", g) for g in generated)
    # Not a usable id (spaces, too long): replaced, never echoed into logs or headers.
    for bad in ("has space", "x" * 129, "a\tb"):
        resp = await client.get("/healthz", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])
    # Errors carry one too.
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.headers["X-Request-Id"]


class Lines(logging.Handler):
    """Formats records as setup_logging's handler would (with its request id filter)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_request_id_reaches_log_lines_of_the_request(aiohttp_client, settings):
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        logging.getLogger("rig.test").warning("inside the handler")
        raise RuntimeError("boom")

    app.router.add_get("/test-boom", boom)  # a test route beside the real ones
    client = await aiohttp_client(app)
    text, as_json = Lines(TextFormatter()), Lines(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(text)
    root.addHandler(as_json)
    try:
        resp = await client.get("/test-boom", headers={"X-Request-Id": "req-42"})
    finally:
        root.removeHandler(text)
        root.removeHandler(as_json)
    assert resp.status == 500
    assert resp.headers["X-Request-Id"] == "req-42"
    inside = [line for line in text.lines if "inside the handler" in line]
    assert inside and inside[0].endswith(" [req-42]"), text.lines
    failed = [line for line in text.lines if "unhandled error" in line]
    assert failed and "[req-42]" in failed[0].splitlines()[0], text.lines
    entries = [json.loads(line) for line in as_json.lines]
    assert {e["request_id"] for e in entries if "handler" in e["message"]} == {"req-42"}
    assert request_id_var.get() is None  # reset after the request


# ---------------------------------------------------------------- CORS


async def test_cors_is_off_by_default(client):
    resp = await client.options(
        "/streams/",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    body = await resp.json()
    assert resp.status == 405, body
    assert body["errorCode"] == 1001
    resp = await client.get("/streams/", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.fixture
async def cors_client(aiohttp_client, settings, db):
    app = create_app(replace(settings, cors_origins="https://app.example, https://admin.example/"))
    return await aiohttp_client(app)


async def test_preflight_from_an_allowed_origin(cors_client):
    resp = await cors_client.options(
        "/streams/{x}/destination".replace("{x}", "0b1c"),
        headers={
            "Origin": "https://admin.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "https://admin.example"
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type"}
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.example", "GET", ""),  # origin not allowed
        ("https://app.example", "DELETE", ""),  # /streams/ has no DELETE
        ("https://app.example", "GET", "x-secret-header"),  # header not allowed
    ],
)
async def test_preflight_refused(cors_client, origin, method, headers):
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    resp = await cors_client.options("/streams/", headers=request_headers)
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    body = await resp.json()
    assert set(body) == {"message", "errorCode", "details"}


async def test_actual_requests_get_cors_headers_errors_included(cors_client, api):
    origin = {"Origin": "https://app.example"}
    resp = await cors_client.get("/streams/", headers=origin)  # 401: no token
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-Id", "Retry-After", "WWW-Authenticate"} <= exposed
    resp = await cors_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_any_origin(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(replace(settings, cors_origins="*")))
    resp = await client.options(
        "/accounts/auth/local",
        headers={"Origin": "https://anything.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://anything.example"


def test_bad_cors_origins_are_refused():
    from rig.cors import parse_origins

    assert parse_origins("") == []
    assert parse_origins(" https://a.example/ ,http://b.example:8080") == [
        "https://a.example",
        "http://b.example:8080",
    ]
    with pytest.raises(ValueError, match="origin"):
        parse_origins("app.example")


# ---------------------------------------------------------------- abuse limits


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(3, 60.0, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(20.0)  # one token per 20 s
    assert bucket.take("b") == 0.0  # another key has its own
    now[0] = 19.0
    assert bucket.take("a") == pytest.approx(1.0)
    now[0] = 20.0
    assert bucket.take("a") == 0.0
    assert bucket.take("a") > 0
    now[0] = 1000.0
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # never more than 3
    assert bucket.take("a") > 0
    assert TokenBucket(0, 60.0).take("x") == 0.0  # 0: no limit


def test_token_bucket_memory_is_bounded():
    now = [0.0]
    bucket = TokenBucket(2, 10.0, clock=lambda: now[0], max_keys=100)
    for i in range(1000):
        bucket.take(f"k{i}")
    assert len(bucket) <= 100
    # The most recent key is kept, so its allowance is not reset by the trimming.
    bucket.take("hot")
    bucket.take("hot")
    for i in range(50):
        bucket.take(f"x{i}")
    assert bucket.take("hot") > 0


def test_token_bucket_give_back():
    now = [0.0]
    bucket = TokenBucket(2, 60.0, clock=lambda: now[0])
    for _ in range(5):  # spent and given back: never refused
        assert bucket.take("a") == 0.0
        bucket.give_back("a")
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") > 0
    bucket.give_back("a")
    bucket.give_back("a")
    bucket.give_back("a")  # never above the limit
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") > 0


def test_known_good_addresses_expire_and_are_bounded(monkeypatch):
    import rig.ratelimit

    now = [0.0]
    known = KnownGood(clock=lambda: now[0])
    known.add("alice", "198.51.100.1")
    assert ("alice", "198.51.100.1") in known
    assert ("alice", "198.51.100.2") not in known
    assert ("bob", "198.51.100.1") not in known
    now[0] = KNOWN_GOOD_SECONDS + 1
    assert ("alice", "198.51.100.1") not in known
    monkeypatch.setattr(rig.ratelimit, "MAX_KEYS", 10)
    for i in range(100):
        known.add("alice", f"203.0.113.{i}")
    assert ("alice", "203.0.113.99") in known
    assert ("alice", "203.0.113.0") not in known
    assert len(known._seen) == 10


class FakeRequest:
    def __init__(self, remote, forwarded=()):
        from multidict import CIMultiDict

        self.remote = remote
        self.headers = CIMultiDict([("X-Forwarded-For", f) for f in forwarded])


def test_client_address_trusts_only_configured_proxies():
    proxies = parse_networks("10.0.0.0/8, 192.0.2.7")
    assert client_address(FakeRequest("203.0.113.9", ["1.2.3.4"]), proxies) == "203.0.113.9"
    assert client_address(FakeRequest("10.1.2.3", ["1.2.3.4"]), proxies) == "1.2.3.4"
    # The client may send its own X-Forwarded-For: only what our proxies appended counts.
    forged = FakeRequest("10.1.2.3", ["6.6.6.6, 1.2.3.4", "192.0.2.7"])
    assert client_address(forged, proxies) == "1.2.3.4"
    assert client_address(FakeRequest("10.1.2.3"), proxies) == "10.1.2.3"
    assert client_address(FakeRequest("10.1.2.3", ["1.2.3.4"]), []) == "10.1.2.3"
    with pytest.raises(ValueError):
        parse_networks("not-an-address")


@pytest.fixture
async def limited(aiohttp_client, settings, db):
    app = create_app(
        replace(
            settings,
            rate_limit_address=3,
            rate_limit_window=60,
            trusted_proxies="127.0.0.1",
        )
    )
    return await aiohttp_client(app)


async def expect_429(resp, expect_error):
    body = await expect_error(resp, 1010, 429)
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["details"]["retryAfter"] == retry_after
    return body


async def test_login_is_limited_per_address(limited, expect_error):
    for i in range(3):
        resp = await limited.post(
            "/accounts/auth/local", json={"username": f"nobody{i}", "password": "whatever1"}
        )
        await expect_error(resp, 1003, 401)
    resp = await limited.post(
        "/accounts/auth/local", json={"username": "nobody9", "password": "whatever1"}
    )
    body = await expect_429(resp, expect_error)
    assert "address" in body["details"]["reason"]
    # Another route has its own allowance; another client address too.
    resp = await limited.post("/agents/auth", json={"apiKey": "nope"})
    await expect_error(resp, 1003, 401)
    resp = await limited.post(
        "/accounts/auth/local",
        json={"username": "nobody9", "password": "whatever1"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    await expect_error(resp, 1003, 401)


async def test_agent_auth_and_signup_are_limited_per_address(limited, expect_error):
    for _ in range(3):
        await expect_error(await limited.post("/agents/auth", json={"apiKey": "x"}), 1003, 401)
    await expect_429(await limited.post("/agents/auth", json={"apiKey": "x"}), expect_error)
    for i in range(3):
        resp = await limited.post("/accounts/", json={"username": f"u{i}"})
        await expect_error(resp, 1004, 400)
    await expect_429(await limited.post("/accounts/", json={}), expect_error)
    # Routes that are not limited are not affected.
    for _ in range(10):
        assert (await limited.get("/healthz")).status == 200


async def test_default_limits_leave_normal_use_alone(client, api, expect_ok):
    account = await api.account()
    for _ in range(5):
        await api.login(account.username)


# ---------------------------------------------------------------- deadlines and body size


async def test_slow_requests_are_answered_503(aiohttp_client):
    from rig.errors import envelope_middleware

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def fast(request: web.Request) -> web.Response:
        raise TimeoutError("a timeout of the handler's own is not the deadline")

    app = web.Application(middlewares=[envelope_middleware, deadline_middleware(0.2)])
    app.router.add_get("/slow", slow)
    app.router.add_get("/own-timeout", fast)
    client = await aiohttp_client(app)
    resp = await client.get("/slow")
    body = await resp.json()
    assert resp.status == 503
    assert body == {"message": "Request timed out", "errorCode": 1008, "details": None}
    resp = await client.get("/own-timeout")
    assert resp.status == 503  # the envelope's database-unavailable answer
    assert (await resp.json())["message"] == "Service temporarily unavailable"


async def test_bodies_over_64_kib_are_413(client, expect_error):
    resp = await client.post(
        "/accounts/",
        data=json.dumps({"username": "x" * 70_000}),
        headers={"Content-Type": "application/json"},
    )
    await expect_error(resp, 1005, 413)


# ---------------------------------------------------------------- logs


def record(message, **extra):
    rec = logging.LogRecord("rig.test", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_text_and_json_log_lines():
    line = TextFormatter().format(record("GET /x -> 200", request_id="r1"))
    assert re.match(r"^\S+ \S+ INFO rig.test: GET /x -> 200 \[r1\]$", line), line
    assert "\n" not in line
    entry = json.loads(JsonFormatter().format(record("hello", request_id="r2", status=200)))
    assert entry["message"] == "hello"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "rig.test"
    assert entry["request_id"] == "r2"
    assert entry["status"] == 200
    assert entry["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("failed")
        rec.exc_info = sys.exc_info()
    out = JsonFormatter().format(rec)
    assert "\n" not in out  # one line per event, the traceback inside
    assert "ValueError: boom" in json.loads(out)["exception"]
    assert log_format(" JSON ") == "json"
    with pytest.raises(ValueError):
        log_format("xml")


def test_setup_logging_replaces_handlers():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("warning", "json")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def test_json_logs_of_a_rig_process(spawn_rig, rig_env, make_database, tmp_path):
    env = rig_env(
        RIG_DATABASE_URL=make_database(),
        RIG_JWT_SECRET=secrets.token_urlsafe(48),
        RIG_DATA_DIR=str(tmp_path / "data"),
        RIG_LOG_FORMAT="json",
    )
    rig = spawn_rig(env)
    await rig.wait_ready()
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{rig.url}/healthz", headers={"X-Request-Id": "probe-1"}) as resp,
    ):
        assert resp.status == 200
    assert rig.stop() == 0
    lines = [line for line in rig.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    access = [e for e in entries if e.get("request_id") == "probe-1"]
    assert len(access) == 1, entries
    assert access[0]["route"] == "/healthz"
    assert access[0]["status"] == 200
    assert access[0]["method"] == "GET"
    assert isinstance(access[0]["duration_ms"], float)
    # The wait_ready probe (GET /streams/ -> 401) is there too, with a generated id.
    assert any(e.get("route") == "/streams/" and e.get("status") == 401 for e in entries)


def test_invalid_operations_settings_are_usage_errors(run_rig, rig_env, tmp_path):
    for env in (
        {"RIG_LOG_FORMAT": "xml"},
        {"RIG_CORS_ORIGINS": "app.example"},
        {"RIG_TRUSTED_PROXIES": "proxy.example"},
    ):
        result = run_rig("migrate", "--status", env=rig_env(**env), cwd=tmp_path)
        assert result.returncode == 2, (env, result.stderr)
        assert "invalid setting" in result.stderr
        assert "Traceback" not in result.stderr
