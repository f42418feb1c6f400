"""The API explorer at /docs, loaded in headless Chromium: every route is listed, nothing
comes from elsewhere, and "Try it out" sends a real request and shows its curl."""

from urllib.parse import urlsplit

from rig.app import create_app, openapi_document

METHODS = {"get", "post", "put", "patch", "delete"}


def documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in METHODS
    }


async def open_docs(aiohttp_server, settings, browser, db):
    server = await aiohttp_server(create_app(settings), host="127.0.0.1")
    base = str(server.make_url("/")).rstrip("/")
    page = await browser.new_page()
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    await page.goto(f"{base}/docs")
    await page.wait_for_selector(".opblock", timeout=30_000)
    return base, page, requests, problems


async def test_docs_page_lists_every_route(aiohttp_server, settings, browser, db):
    base, page, requests, problems = await open_docs(aiohttp_server, settings, browser, db)
    shown = set()
    for block in await page.query_selector_all(".opblock"):
        method = await (await block.query_selector(".opblock-summary-method")).inner_text()
        path = await (await block.query_selector(".opblock-summary-path")).get_attribute(
            "data-path"
        )
        shown.add((method.strip().lower(), path))
    assert shown == documented()
    assert "rig" in await page.inner_text(".info .title")
    # Only rig's own files and API: no CDN, no validator badge, no fonts from elsewhere.
    origin = urlsplit(base)
    foreign = [url for url in requests if urlsplit(url)[:2] != origin[:2]]
    assert not foreign, foreign
    assert f"{base}/openapi.json" in requests
    assert not problems, problems  # no script error, no CSP violation


async def test_try_it_out_sends_the_request_and_shows_curl(aiohttp_server, settings, browser, db):
    _base, page, _requests, problems = await open_docs(aiohttp_server, settings, browser, db)
    block = page.locator("#operations-accounts-createAccount")
    await block.locator(".opblock-summary").click()
    # Our own curl snippet (the operation's description) is there before trying anything.
    description = await block.locator(".opblock-description-wrapper").first.inner_text()
    assert 'curl -s -X POST "$API/accounts/"' in description
    await block.get_by_role("button", name="Try it out").click()
    await block.get_by_role("button", name="Execute").click()
    await block.locator(".responses-wrapper .live-responses-table").wait_for(timeout=15_000)
    answer = block.locator(".live-responses-table tbody .response-col_status").first
    assert (await answer.inner_text()).strip().startswith("200")
    assert "User created" in await block.locator(".live-responses-table").inner_text()
    # The example body really created the example account.
    assert await db.fetchval("SELECT username FROM users") == "alice"
    # Swagger UI's own curl of the request just sent.
    snippet = await block.locator(".request-snippets, .curl-command").first.inner_text()
    assert "curl" in snippet and "/accounts/" in snippet
    assert not problems, problems


async def test_explorer_files_are_served_with_their_licence(client):
    for name, kind in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("docs.js", "text/javascript"),
        ("LICENSE", "text/plain"),
    ]:
        resp = await client.get(f"/docs/{name}")
        assert resp.status == 200, name
        assert resp.content_type == kind, name
        assert len(await resp.read()) > 50, name
    assert "Apache License" in await (await client.get("/docs/LICENSE")).text()
    resp = await client.get("/docs/nope.js")
    assert resp.status == 404
    assert (await resp.json())["errorCode"] == 1000
