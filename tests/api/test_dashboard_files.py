"""The dashboard's files as rig serves them (`/`, `/dashboard/...`), its vendored
library, and `GET /ingest` (the OBS server URL the page shows)."""

import hashlib
import json
import re
from dataclasses import replace

import pytest

from rig.app import create_app
from rig.dashboard import SECURITY_HEADERS, STATIC, find_assets
from rig.services import parse_ingest_urls

IMPORT = re.compile(r"""(?:from|import)\s*["'](\.{1,2}/[^"']+)["']""")


async def test_index_is_the_page_with_a_strict_policy(client):
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    text = await resp.text()
    assert '<script type="module" src="/dashboard/js/main.js"></script>' in text
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe" not in csp  # no inline script, no eval
    assert "connect-src 'self'" in csp  # the token cannot be sent to another origin


async def test_every_file_is_served_with_its_type_and_headers(client):
    assets = find_assets()
    assert {"index.html", "style.css", "js/main.js", "vendor/preact-htm.js"} <= set(assets)
    for name, path in assets.items():
        resp = await client.get(f"/dashboard/{name}")
        assert resp.status == 200, name
        assert await resp.read() == path.read_bytes(), name
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-cache"
        expected = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
        if path.suffix in expected:
            assert resp.content_type == expected[path.suffix], name
    # Revalidation answers 304 without the body.
    first = await client.get("/dashboard/js/main.js")
    again = await client.get(
        "/dashboard/js/main.js", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status == 304


async def test_only_the_dashboards_own_files_are_served(client, expect_error):
    for path in (
        "/dashboard/nope.js",
        "/dashboard/../app.py",
        "/dashboard/%2e%2e/__init__.py",
        "/dashboard/js/../../__init__.py",
        "/dashboard/vendor",
        "/dashboard//etc/passwd",
        "/dashboard/js/main.js.map",
    ):
        resp = await client.get(path)
        await expect_error(resp, 1000, 404)


def test_every_module_import_names_a_served_file():
    """A typo in an import breaks the page for everyone: catch it before a browser runs."""
    assets = find_assets()
    for name in assets:
        if not name.endswith(".js") or name.startswith("vendor/"):
            continue
        source = (STATIC / name).read_text()
        for target in IMPORT.findall(source):
            resolved = (STATIC / name).parent.joinpath(target).resolve()
            relative = resolved.relative_to(STATIC.resolve()).as_posix()
            assert relative in assets, f"{name} imports {target}, which is not served"


def test_vendored_library_matches_its_manifest():
    vendor = STATIC / "vendor"
    manifest = json.loads((vendor / "manifest.json").read_text())
    for target, entry in manifest.items():
        digest = hashlib.sha256((vendor / target).read_bytes()).hexdigest()
        assert digest == entry["sha256"], (
            f"{target} differs from {entry['package']}@{entry['version']}"
        )
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"])
        for licence in entry["licenses"]:
            assert (vendor / licence).stat().st_size > 500, licence


async def test_ingest_urls_come_from_the_setting(
    aiohttp_client, settings, db, api, expect_ok, expect_error
):
    account = await api.account()
    resp = await api.client.get("/ingest", headers=account.headers)
    assert await expect_ok(resp, "Ingest servers") == {"ingestUrls": []}
    await expect_error(await api.client.get("/ingest"), 1003, 401)

    configured = "rtmp://live.example.com/live, rtmps://eu.live.example.com:443/live/"
    client = await aiohttp_client(create_app(replace(settings, ingest_urls=configured)))
    resp = await client.get("/ingest", headers=account.headers)
    assert await expect_ok(resp, "Ingest servers") == {
        "ingestUrls": ["rtmp://live.example.com/live", "rtmps://eu.live.example.com:443/live"]
    }


def test_bad_ingest_urls_are_refused():
    assert parse_ingest_urls("") == []
    for bad in ("http://live.example.com/live", "rtmp://live.example.com", "rtmp:// x/live"):
        with pytest.raises(ValueError, match="ingest URL"):
            parse_ingest_urls(bad)


def test_bad_ingest_urls_setting_is_a_usage_error(run_rig, rig_env, tmp_path):
    result = run_rig(
        "migrate", "--status", env=rig_env(RIG_INGEST_URLS="live.example.com"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "invalid setting" in result.stderr and "Traceback" not in result.stderr
