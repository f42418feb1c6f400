"""The OpenAPI document matches the routes rig registers, with examples and curl commands."""

import json
import re

from rig.app import create_app
from rig.app import openapi_document as build_document
from rig.openapi import ERROR_CODES, STATUS_CODES
from rig.ratelimit import KEY_LOOKUP_ROUTES, LIMITED_ROUTES

METHODS = {"get", "post", "put", "patch", "delete"}


def registered(app) -> set[tuple[str, str]]:
    """(method, canonical path) of every route, HEAD left out: aiohttp adds one per GET."""
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()}
    heads = {path for method, path in routes if method == "head"}
    assert heads <= {path for method, path in routes if method == "get"}, heads
    return {(m, p) for m, p in routes if m != "head"}


def documented(document) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_documented_and_every_operation_exists(settings):
    app = create_app(settings)
    routes, operations = registered(app), documented(build_document())
    assert routes - operations == set(), "registered but not documented"
    assert operations - routes == set(), "documented but not registered"
    assert len(routes) >= 25  # the spec's, the extensions and the operational routes


def test_every_route_is_documented_with_cors_on(settings):
    """With CORS on, aiohttp-cors adds OPTIONS (preflight) routes: only those are extra."""
    from dataclasses import replace

    app = create_app(replace(settings, cors_origins="https://app.example"))
    extra = registered(app) - documented(build_document())
    assert extra and {method for method, _ in extra} == {"options"}


def test_document_shape():
    document = build_document()
    assert document["openapi"] == "3.1.0"
    schemes = document["components"]["securitySchemes"]
    bearers = [s for s in schemes.values() if s["type"] == "http"]
    assert {s["scheme"] for s in bearers} == {"bearer"}
    assert {s["bearerFormat"] for s in bearers} == {"JWT"}
    assert schemes["apiKey"] | {"description": ""} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "",
    }
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["message", "errorCode", "details"]
    assert error["properties"]["errorCode"]["enum"] == list(range(1000, 1011))
    # Every error code is in the description's table with its HTTP status.
    for code, (status, _text) in ERROR_CODES.items():
        assert f"| {code} | {status} |" in document["info"]["description"]
    operation_ids = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            assert op["summary"], (method, path)
            assert "200" in op["responses"], (method, path)
            for name in re.findall(r"{(\w+)}", path):
                params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
                assert name in params, (method, path, name)
            if path.startswith(("/accounts", "/streams", "/agents")):
                responses = op["responses"]
                assert {"500", "503"} <= set(responses), (method, path)
                if op["security"]:
                    assert {"401", "403"} <= set(responses), (method, path)
                if "requestBody" in op:
                    assert {"400", "413"} <= set(responses), (method, path)
                    content = op["requestBody"]["content"]
                    expected = "image/jpeg" if path.endswith("/thumbnail") else "application/json"
                    assert list(content) == [expected], (method, path)
                content = responses["200"]["content"]
                if path.endswith("/events"):  # server-sent events; its errors are envelopes
                    assert list(content) == ["text/event-stream"], (method, path)
                elif (method, path) == ("get", "/streams/{streamID}/thumbnail"):
                    assert list(content) == ["image/jpeg"]  # the picture; errors are envelopes
                else:
                    ok = content["application/json"]["schema"]
                    assert ok["required"] == ["message", "payload"], (method, path)
                for status, response in responses.items():
                    if status in STATUS_CODES or status == "409":
                        schema = response["content"]["application/json"]["schema"]
                        assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    assert len(operation_ids) == len(set(operation_ids))


def test_security_matches_the_routes():
    paths = build_document()["paths"]
    security = {
        (method, path): [name for entry in op["security"] for name in entry]
        for path, item in paths.items()
        for method, op in item.items()
    }
    anonymous = {k for k, v in security.items() if not v}
    assert anonymous == {
        ("post", "/accounts/"),
        ("post", "/accounts/auth/local"),
        ("post", "/agents/auth"),
        ("post", "/accounts/token"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/docs/{asset}"),
        ("get", "/"),
        ("get", "/dashboard/{path}"),
    }
    for (method, path), schemes in security.items():
        if path.startswith("/streams"):
            assert schemes == ["userToken", "apiKey"], (method, path)
        elif path == "/accounts/password" or path.startswith("/accounts/apikeys"):
            assert schemes == ["userToken"], (method, path)  # the user's own login only
        elif path.startswith("/agents/") and path != "/agents/auth":
            assert schemes == ["agentToken"], (method, path)
    limited = {k for k, _ in security.items() if "429" in paths[k[1]][k[0]]["responses"]}
    # The rate limits, the bound on live connections per user (rig/events.py) and one
    # thumbnail per 5 s per stream (rig/thumbnails.py).
    events = ("get", "/streams/{streamID}/events")
    thumbnail = ("put", "/agents/claims/{claimID}/thumbnail")
    routes = LIMITED_ROUTES | KEY_LOOKUP_ROUTES
    expected = {(method.lower(), path) for method, path in routes} | {events, thumbnail}
    assert limited == expected


async def test_openapi_json_is_served(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == json.loads(json.dumps(build_document()))
    assert resp.headers["X-Request-Id"]


async def test_docs_page_is_the_explorer_on_rig_s_own_files(client):
    """The page itself (the browser test, test_docs_browser.py, shows it working)."""
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert page.startswith("<!DOCTYPE html>")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self';" in csp
    assert "<script>" not in page  # no inline script: the CSP would refuse it
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for asset in re.findall(r'(?:src|href)="(docs/[^"]+)"', page):
        assert (await client.get(f"/{asset}")).status == 200, asset


def test_every_body_has_an_example_its_model_accepts():
    """The examples (and the curl commands built from them) are valid requests."""
    from rig.app import ROUTE_TABLES

    document = build_document()
    for table in ROUTE_TABLES:
        for op in table.operations:
            documented_op = document["paths"][op.path][op.method]
            samples = documented_op["x-codeSamples"]
            assert samples[0]["lang"] == "Shell" and samples[0]["source"].startswith("curl")
            assert op.method.upper() in samples[0]["source"]
            assert samples[0]["source"] in documented_op["description"]
            if op.raw_body is not None:
                assert list(documented_op["requestBody"]["content"]) == [op.raw_body]
                assert f"Content-Type: {op.raw_body}" in samples[0]["source"]
                continue
            if op.body is None:
                assert "requestBody" not in documented_op, op.path
                continue
            body = documented_op["requestBody"]["content"]["application/json"]["example"]
            op.body.model_validate(body)  # raises if the example is not a valid body
            assert json.dumps(body) in samples[0]["source"]


def test_enums_are_listed():
    schemas = build_document()["components"]["schemas"]
    service = schemas["NewDestination"]["properties"]["service"]
    assert service["enum"] == ["YouTube", "Twitch", "Facebook", "Kick", "Custom"]
    assert schemas["ClaimAnswer"]["properties"]["status"]["enum"] == ["live", "revoked"]


def test_document_is_valid_openapi_31():
    """Against the OpenAPI 3.1 meta-schema (the copy schemathesis ships), and every schema
    in it against JSON Schema 2020-12."""
    from jsonschema import Draft202012Validator
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    document = json.loads(json.dumps(build_document()))
    errors = sorted(Draft202012Validator(OPENAPI_31).iter_errors(document), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]

    def schemas(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "schema" and isinstance(value, dict):
                    yield value
                else:
                    yield from schemas(value)
        elif isinstance(node, list):
            for value in node:
                yield from schemas(value)

    found = [*schemas(document["paths"]), *document["components"]["schemas"].values()]
    assert len(found) > 100
    for schema in found:
        Draft202012Validator.check_schema(schema)
    # A broken document is caught (so the check above can fail).
    broken = dict(document, paths={"/x": {"get": {"responses": {"200": {}}}}})
    assert list(Draft202012Validator(OPENAPI_31).iter_errors(broken))
