"""Lone UTF-16 surrogates ("\\ud800") in any string of any JSON body: 1005, never a 500,
and never the value in a log line (issue 12, item 9)."""

import json
import logging
import re

from rig.app import openapi_document

LONE = "\ud800"
# As a client sends it: JSON's own escape (a lone surrogate cannot be UTF-8 encoded).
LONE_JSON = '"\\ud800"'


def body_operations() -> list[tuple[str, str, dict]]:
    """(method, path, request schema) of every route that reads a JSON body."""
    document = openapi_document()
    schemas = document["components"]["schemas"]
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                if "$ref" in schema:
                    schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
                found.append((method, path, schema))
    return found


def string_fields(schema: dict) -> list[str]:
    return [
        name
        for name, prop in schema.get("properties", {}).items()
        if prop.get("type") == "string"
        or any(p.get("type") == "string" for p in prop.get("anyOf", []))
    ]


async def test_lone_surrogates_are_invalid_input_everywhere(
    api, make_agent, expect_error, caplog, case
):
    caplog.set_level(logging.DEBUG)
    account = await api.account()
    stream = await api.stream(account)
    destination = await api.destination(account, stream["id"], "YouTube", "yt-key")
    agent = await make_agent()
    claim = await agent.claimed(stream["streamKey"])
    params = {
        "streamID": stream["id"],
        "destinationID": str(destination["id"]),
        "streamKey": stream["streamKey"],
        "claimID": claim["claimId"],
    }
    operations = body_operations()
    assert len(operations) >= 10
    for method, path, schema in operations:
        url = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)
        headers = agent.headers if path.startswith("/agents/") else account.headers
        headers = {**headers, "Content-Type": "application/json"}
        fields = string_fields(schema) or ["anything"]
        # A lone surrogate in each string field, in a nested one, and in a key.
        bodies = [f'{{"{name}": {LONE_JSON}}}' for name in fields]
        bodies.append(
            f'{{"claims": [{{"claimId": {LONE_JSON}, "health": {{"x": [{LONE_JSON}]}}}}]}}'
        )
        bodies.append(f"{{{LONE_JSON}: 1}}")
        for raw in bodies:
            with case(f"{method.upper()} {path} {raw}"):
                resp = await api.client.request(method, url, data=raw, headers=headers)
                error = await expect_error(resp, 1005, 400)
                assert "surrogate" in error["details"]["reason"]
                assert LONE not in json.dumps(error, ensure_ascii=False)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert LONE not in logged
    assert "\\ud800" not in logged.lower()


async def test_surrogate_pairs_are_fine(api, expect_ok):
    """A well-formed pair (an emoji, as JSON escapes it) is ordinary text."""
    account = await api.account()
    stream = await api.stream(account)
    raw = '{"service": "YouTube", "streamKey": "key-\\ud83d\\ude00"}'
    resp = await api.client.post(
        f"/streams/{stream['id']}/destination",
        data=raw,
        headers={**account.headers, "Content-Type": "application/json"},
    )
    assert (await expect_ok(resp, "Stream destination added"))["streamKey"] == "key-\U0001f600"


async def test_complete_bodies_with_a_lone_surrogate(api, make_agent, expect_error, case):
    """Bodies that pass every other check: before the fix these reached argon2, PostgreSQL
    or aiohttp's client and came back as HTTP 500."""
    account = await api.account()
    stream = await api.stream(account)
    agent = await make_agent()
    sid = stream["id"]
    requests = [
        ("POST", "/accounts/",
         {"username": "lone1", "password": f"pass{LONE}word", "email": "l@example.org"}),
        ("POST", "/accounts/auth/local", {"username": "lone1", "password": f"pass{LONE}word"}),
        ("POST", "/accounts/password",
         {"oldPassword": f"old{LONE}password", "newPassword": "a new password"}),
        ("POST", f"/streams/{sid}/destination", {"service": "YouTube", "streamKey": f"key{LONE}"}),
        ("PUT", f"/streams/{sid}/webhook", {"callbackUrl": f"https://hooks.example/{LONE}"}),
        ("POST", "/agents/auth", {"apiKey": f"rigagent_{LONE}"}),
        ("POST", f"/agents/streams/{stream['streamKey']}/claim", {"ingestUrl": f"rtmp://edge/{LONE}"}),
    ]  # fmt: skip
    for method, path, body in requests:
        headers = agent.headers if path.startswith("/agents/s") else account.headers
        with case(f"{method} {path}"):
            resp = await api.client.request(method, path, json=body, headers=headers)
            await expect_error(resp, 1005, 400)
