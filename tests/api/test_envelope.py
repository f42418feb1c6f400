"""The envelope: routing errors, Content-Type, JSON syntax, missing and mistyped fields."""

import json
import uuid

import pytest

# Every route that takes a JSON body, its required fields, and a valid body's message.
BODY_ROUTES = {
    "create_account": (("username", "password", "email"), "User created"),
    "login": (("username", "password"), "Authentication successful"),
    "change_password": (("oldPassword", "newPassword"), "User password changed"),
    "add_destination": (("service", "streamKey"), "Stream destination added"),
    "agent_auth": (("apiKey",), "Agent authenticated"),
}
ROUTE_FIELDS = [(route, name) for route, (names, _) in BODY_ROUTES.items() for name in names]


async def prepare(api, route: str) -> tuple[str, dict, dict]:
    """(path, headers, a valid body) for a body route, with whatever it needs created."""
    if route == "create_account":
        body = {"username": "newcomer", "password": "long enough", "email": "new@example.org"}
        return "/accounts/", {}, body
    if route == "agent_auth":
        return "/agents/auth", {}, {"apiKey": await api.agent_key()}
    account = await api.account()
    if route == "login":
        body = {"username": account.username, "password": account.password}
        return "/accounts/auth/local", {}, body
    if route == "change_password":
        body = {"oldPassword": account.password, "newPassword": "a new password"}
        return "/accounts/password", account.headers, body
    stream = await api.stream(account)
    body = {"service": "Twitch", "streamKey": "live_123"}
    return f"/streams/{stream['id']}/destination", account.headers, body


# ------------------------------------------------------------------ routing


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/dashboard"),  # "/" is the dashboard's page (tests/api/test_dashboard_files.py)
        ("GET", "/nope"),
        ("GET", "/streams"),  # trailing slashes are part of the contract
        ("POST", "/accounts"),
        ("POST", "/accounts/nope"),
        ("GET", "/accounts/auth"),
        ("GET", "/streams/abc/def/ghi"),
        ("GET", "/agents/"),
        ("GET", "/agents/config/"),
        ("GET", "/index.html"),
    ],
)
async def test_unknown_route_is_1000_in_json(client, expect_error, method, path):
    resp = await client.request(method, path, headers={"Accept": "text/html"})
    body = await expect_error(resp, 1000, 404)
    assert "<html" not in (await resp.text()).lower()
    assert body["details"] is None or isinstance(body["details"], dict)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/accounts/", "POST"),
        ("PUT", "/accounts/", "POST"),
        ("DELETE", "/accounts/", "POST"),
        ("GET", "/accounts/auth/local", "POST"),
        ("GET", "/accounts/password", "POST"),
        ("DELETE", "/streams/", "GET"),
        ("PATCH", "/streams/", "POST"),
        ("PUT", f"/streams/{uuid.uuid4()}", "GET"),
        ("GET", f"/streams/{uuid.uuid4()}/destination", "POST"),
        ("GET", f"/streams/{uuid.uuid4()}/changeKey", "POST"),
        ("GET", "/agents/auth", "POST"),
        ("POST", "/agents/config/somekey", "GET"),
    ],
)
async def test_wrong_method_is_1001_in_json(client, expect_error, method, path, allowed):
    resp = await client.request(method, path, headers={"Accept": "text/html"})
    await expect_error(resp, 1001, 405)
    assert "<html" not in (await resp.text()).lower()
    assert allowed in resp.headers.get("Allow", "")


# ------------------------------------------------------------------ Content-Type


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_valid_body_with_charset_parameter_succeeds(api, expect_ok, route):
    path, headers, body = await prepare(api, route)
    headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
    resp = await api.client.post(path, data=json.dumps(body).encode(), headers=headers)
    await expect_ok(resp, BODY_ROUTES[route][1])


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonp"],
)
async def test_wrong_or_missing_content_type_is_1002(api, expect_error, route, content_type):
    path, headers, body = await prepare(api, route)
    data = json.dumps(body).encode()
    if content_type is None:
        resp = await api.client.post(
            path, data=data, headers=headers, skip_auto_headers=["Content-Type"]
        )
    else:
        resp = await api.client.post(
            path, data=data, headers={**headers, "Content-Type": content_type}
        )
    await expect_error(resp, 1002, (400, 415))


async def test_content_type_is_checked_before_json_syntax(client, expect_error):
    resp = await client.post("/accounts/", data="{not json", headers={"Content-Type": "text/plain"})
    await expect_error(resp, 1002, (400, 415))


# ------------------------------------------------------------------ JSON syntax and shape


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize("raw", ['{"username": ', "{'a': 1}", "", "nul", b'{"a": "\xff"}'])
async def test_malformed_json_is_1005(api, expect_error, route, raw):
    path, headers, _body = await prepare(api, route)
    data = raw if isinstance(raw, bytes) else raw.encode()
    resp = await api.client.post(
        path, data=data, headers={**headers, "Content-Type": "application/json"}
    )
    body = await expect_error(resp, 1005, 400)
    assert body["details"], "details must say why"


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_non_object_json_is_1005(api, expect_error, route):
    path, headers, body = await prepare(api, route)
    for value in ([body], [], "text", 42, 1.5, True, None):
        resp = await api.client.post(
            path,
            data=json.dumps(value),
            headers={**headers, "Content-Type": "application/json"},
        )
        await expect_error(resp, 1005, 400)


async def test_deeply_nested_json_is_1005_not_a_server_error(client, expect_error):
    resp = await client.post(
        "/accounts/", data="[" * 50_000, headers={"Content-Type": "application/json"}
    )
    await expect_error(resp, 1005, 400)


async def test_body_too_large_is_an_error_envelope(client, expect_error):
    big = {"username": "a" * 100_000, "password": "long enough", "email": "a@example.org"}
    resp = await client.post("/accounts/", json=big)
    await expect_error(resp, 1005, 413)


# ------------------------------------------------------------------ fields


@pytest.mark.parametrize(("route", "name"), ROUTE_FIELDS)
async def test_missing_field_is_1004_naming_it(api, expect_error, route, name):
    path, headers, body = await prepare(api, route)
    del body[name]
    resp = await api.client.post(path, json=body, headers=headers)
    error = await expect_error(resp, 1004, 400)
    assert error["details"]["field"] == name
    assert name in error["message"]


@pytest.mark.parametrize("route", BODY_ROUTES)
async def test_empty_object_is_1004(api, expect_error, route):
    path, headers, _body = await prepare(api, route)
    resp = await api.client.post(path, json={}, headers=headers)
    error = await expect_error(resp, 1004, 400)
    assert error["details"]["field"] in BODY_ROUTES[route][0]


@pytest.mark.parametrize(("route", "name"), ROUTE_FIELDS)
async def test_wrong_type_is_1005_naming_the_field(api, expect_error, route, name):
    path, headers, body = await prepare(api, route)
    for value in (12345, ["list"], {"an": "object"}, True):
        resp = await api.client.post(path, json={**body, name: value}, headers=headers)
        error = await expect_error(resp, 1005, 400)
        assert error["details"]["field"] == name


@pytest.mark.parametrize(
    ("route", "name"),
    [
        ("create_account", "username"),
        ("create_account", "email"),
        ("create_account", "password"),
        ("login", "username"),
        ("login", "password"),
        ("change_password", "oldPassword"),
        ("change_password", "newPassword"),
        ("add_destination", "service"),
        ("add_destination", "streamKey"),
        ("agent_auth", "apiKey"),
    ],
)
async def test_nul_character_in_a_field_is_an_input_error(api, expect_error, route, name):
    """PostgreSQL cannot store NUL: it must be refused as input, never become a 500."""
    path, headers, body = await prepare(api, route)
    resp = await api.client.post(
        path, json={**body, name: body[name][:3] + "\x00" + body[name][3:]}, headers=headers
    )
    error = await expect_error(resp, 1005, 400)
    assert error["details"]["field"] == name


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
async def test_numbers_json_cannot_hold_are_1005(api, make_agent, expect_error, number):
    """Python reads them (as inf or nan); PostgreSQL's jsonb cannot store them: a heartbeat
    carrying one was a 500."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    beat = {"claimId": claim["claimId"], "streamKey": stream["streamKey"], "health": "HEALTH"}
    raw = json.dumps({"claims": [beat]}).replace(
        '"HEALTH"', f'{{"ingest": {{"bitrate": {number}}}}}'
    )
    resp = await api.client.post(
        "/agents/heartbeat",
        data=raw,
        headers={**agent.headers, "Content-Type": "application/json"},
    )
    error = await expect_error(resp, 1005, 400)
    assert error["message"] == "Body is not valid JSON"
