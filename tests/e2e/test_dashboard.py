"""The streamer's dashboard in a real browser against real processes: rig, an agent,
nginx-rtmp receivers standing in for YouTube and Twitch, and an ffmpeg publisher that
pushes with the server URL and stream key the page shows.

Every screen is checked with axe-core and photographed at desktop and phone width
(tests/e2e/dashboard_page.py says where).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .dashboard_page import Dashboard, axe_source, chromium
from .harness import Publish, free_port, key_id

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


def stack(e2e):
    """Two receivers, rig (announcing its agent's ingest URL) and an agent renewing its
    claims every second."""
    youtube, twitch = e2e.receiver("live2"), e2e.receiver("app")
    agent_port = free_port()
    rig = e2e.rig(
        env={"RIG_INGEST_URLS": f"rtmp://127.0.0.1:{agent_port}/live"},
        YouTube=youtube.url,
        Twitch=twitch.url,
    )
    agent = e2e.agent(rig, agent_port, heartbeat_interval=1)
    return youtube, twitch, rig, agent


def publish_looping(e2e, media, url: str) -> Publish:
    """ffmpeg pushing the media in a loop, as OBS would, until the test stops it."""
    log_path = e2e.root / f"ffmpeg-{len(e2e.publishes)}.err"
    with log_path.open("wb") as err:
        process = subprocess.Popen(
            [
                "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                "-stream_loop", "-1", "-i", str(media.path), "-c", "copy", "-f", "flv", url,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    publish = Publish(process, log_path, 0.0)
    e2e.publishes.append(publish)
    return publish


def sign_up(dash: Dashboard, username: str) -> None:
    dash.open("/")
    dash.page.get_by_role("heading", name="Sign in to rig").wait_for()
    dash.check_screen("sign-in")
    dash.link("Create one").click()
    # The sign-in form has a Username field too: fill the sign-up form's, once it is shown.
    dash.page.get_by_role("heading", name="Create your rig account").wait_for()
    dash.field("Username").fill(username)
    dash.field("Email").fill(f"{username}@example.org")
    dash.field("Password").fill("short")
    dash.button("Create account").click()
    # The API's refusal, in words, next to the field that caused it.
    assert "8 to 1024 characters" in dash.field_error("signup-password")
    dash.check_screen("sign-up-error")
    dash.field("Password").fill(PASSWORD)
    dash.button("Create account").click()
    dash.page.get_by_role("heading", name="Your streams").wait_for()


def state_of(dash: Dashboard, service: str) -> str:
    item = dash.page.locator(".state-item", has_text=service)
    return item.locator(".badge").inner_text()


def test_dashboard_sign_up_to_live_failing_recovering_rotated(e2e, long_media, browser, axe):
    youtube, twitch, rig, agent = stack(e2e)
    dash = Dashboard(browser, rig.url, axe)
    username = f"dash{secrets.token_hex(3)}"
    sign_up(dash, username)
    dash.check_screen("streams-empty")

    dash.field("Name (optional)").fill("Saturday speedruns")
    dash.button("Create stream").click()
    dash.page.get_by_role("heading", name="Saturday speedruns").wait_for()
    dash.check_screen("stream-offline")

    # Destinations: a key with a space is refused in words next to the key field.
    dash.tab("Destinations").click()
    yt_key, tw_key = f"yt-{secrets.token_hex(5)}", f"tw-{secrets.token_hex(5)}"
    dash.field("Service").select_option("YouTube")
    dash.field("YouTube key").fill("has a space")
    dash.button("Add destination").click()
    assert "no spaces" in dash.field_error("new-key")
    dash.field("YouTube key").fill(yt_key)
    dash.button("Add destination").click()
    dash.page.locator(".destination", has_text="YouTube").wait_for()
    dash.field("Service").select_option("Twitch")
    dash.field("Twitch key").fill(tw_key)
    dash.button("Add destination").click()
    dash.page.locator(".destination", has_text="Twitch").wait_for()
    dash.check_screen("destinations")

    # OBS settings: the server URL the operator announced, the key masked until revealed.
    dash.tab("Live").click()
    server = dash.page.locator(".server-url").first.inner_text()
    assert server == f"rtmp://127.0.0.1:{agent.port}/live"
    key_box = dash.page.locator("#stream-key")
    assert "hidden" in key_box.inner_text()
    dash.page.get_by_role("button", name="Reveal Stream key").click()
    stream_key = key_box.inner_text().strip()
    assert len(stream_key) == 22
    dash.page.get_by_role("button", name="Copy Stream key").click()
    assert dash.page.evaluate("navigator.clipboard.readText()") == stream_key

    # Go live the way a streamer does: the encoder gets exactly what the page showed.
    publish = publish_looping(e2e, long_media, f"{server}/{stream_key}")
    dash.wait_for_text(".status-line", r"Live for")
    dash.wait_for_text(".state-item:has-text('YouTube') .badge", r"^Live$")
    dash.wait_for_text(".state-item:has-text('Twitch') .badge", r"^Live$")
    dash.wait_for_text(".facts", "640 \N{MULTIPLICATION SIGN} 360")
    dash.wait_for_text(".facts", r"H264")
    dash.wait_for_text(".connection", r"Updating live")  # server-sent events, not polling
    # rig's ingest diagnostics for the services (this 640x360 ~1 Mbit/s test pattern is
    # below what they recommend), shown as rig words them.
    dash.wait_for_text(".diagnostics", r"(YouTube|Twitch):")
    # The preview: the agent's own picture of the ingest (PyAV, longest side 320 px),
    # fetched by the page with the token in a header.
    image = dash.page.locator("img.thumbnail-image")
    image.wait_for(timeout=45_000)  # the agent makes one every 10 s, the page asks as often
    assert image.get_attribute("src").startswith("blob:")
    size = dash.page.evaluate(
        "[document.querySelector('img.thumbnail-image').naturalWidth,"
        " document.querySelector('img.thumbnail-image').naturalHeight]"
    )
    assert size == [320, 180]  # the 640x360 ingest, scaled
    dash.page.wait_for_timeout(2500)  # a few bitrate samples for the chart
    assert dash.page.locator(".chart polyline, .chart circle").count() >= 1
    dash.check_screen("stream-live")

    # The list of streams shows it live, by name.
    dash.page.get_by_role("navigation", name="Main").get_by_role("link", name="Streams").click()
    item = dash.page.locator(".stream-item", has_text="Saturday speedruns")
    assert item.locator(".badge").inner_text() == "Live"
    dash.check_screen("streams")
    item.get_by_role("link").click()
    dash.page.get_by_role("heading", name="Saturday speedruns").wait_for()

    # Twitch's server dies: the page says it is retrying, and why, without a reload.
    twitch.kill()
    dash.wait_for_text(".state-item:has-text('Twitch') .badge", r"Retrying|Connecting|Failed")
    error = dash.wait_for_text(".state-item:has-text('Twitch') .last-error", r"Last error: \S")
    assert tw_key not in error and stream_key not in error
    assert state_of(dash, "YouTube") == "Live"  # the other destination is untouched
    dash.check_screen("destination-failing")
    # ... and back: live again at the next connection attempt.
    twitch.start()
    dash.wait_for_text(".state-item:has-text('Twitch') .badge", r"^Live$")

    # Switching a destination off and on while live: the agent applies it within a
    # heartbeat (YouTube's receiver gets a second publish), the page follows.
    dash.tab("Destinations").click()
    dash.field("Send to YouTube").uncheck()
    dash.wait_for_text(".destination:has-text('YouTube') .badge", r"^Inactive$")
    dash.tab("Live").click()
    dash.wait_for_text(".state-item:has-text('YouTube') .badge", r"^Inactive$")
    youtube_label = rf"stream {key_id(stream_key)} -> YouTube #\d+:"
    agent.wait_for_log(youtube_label + " destination removed or changed", timeout=30)
    dash.tab("Destinations").click()
    dash.field("Send to YouTube").check()
    dash.tab("Live").click()
    agent.wait_for_log(youtube_label + " live on", count=2, timeout=30)
    dash.wait_for_text(".state-item:has-text('YouTube') .badge", r"^Live$")
    assert len(youtube.recordings(yt_key)) == 2

    dash.tab("History").click()
    dash.page.locator(".session").first.wait_for()  # the live session, with its report
    assert "Still live" in dash.page.locator(".session").first.inner_text()
    dash.check_screen("history")
    dash.tab("Settings").click()
    dash.page.get_by_role("heading", name="Webhook").wait_for()
    dash.check_screen("settings")
    dash.field("Stream name").fill("Sunday speedruns")
    dash.button("Save name").click()
    dash.page.get_by_role("heading", name="Sunday speedruns").wait_for()

    # The encoder drops without an unpublish (killed, as a mobile link dies): disconnect
    # protection (on by default) keeps the destinations on the slate and the page says
    # so; the encoder back, the notice goes and the same publish goes on.
    dash.tab("Live").click()
    publish.process.kill()
    holding = r"Your encoder disconnected"
    dash.wait_for_text(".notice", holding)
    # Its badges say what the destinations get: the slate, not the encoder.
    dash.wait_for_text(".status-line .badge", r"^Holding$")
    dash.wait_for_text("#page-title .badge", r"^Holding$")
    dash.check_screen("live-holding")
    publish = publish_looping(e2e, long_media, f"{server}/{stream_key}")
    dash.page.locator(".notice", has_text="Your encoder disconnected").wait_for(
        state="detached", timeout=30_000
    )
    dash.wait_for_text(".status-line", r"Live for")
    dash.wait_for_text("#page-title .badge", r"^Live$")
    assert len(youtube.recordings(yt_key)) == 2  # the destinations never unpublished

    # Rotating the key asks first; the live publish with the old key is ended.
    dash.button("Rotate stream key").click()
    dash.page.wait_for_function("() => document.activeElement.innerText.trim() === 'Cancel'")
    dash.button("Rotate the key").click()
    dash.wait_for_text(".status-line", r"Offline")
    dash.page.get_by_role("button", name="Reveal Stream key").click()
    new_key = dash.page.locator("#stream-key").inner_text().strip()
    assert new_key != stream_key and len(new_key) == 22
    assert publish.wait(30) != 0  # the agent dropped the old key's publisher
    agent.wait_for_log(rf"stream {key_id(stream_key)}.*(revoked|kicked)")
    dash.check_screen("stream-rotated")
    dash.close()
    # What the page called live was real: the receivers recorded the relayed stream.
    assert youtube.recordings(yt_key) and youtube.recordings(yt_key)[0].stat().st_size > 100_000
    assert len(twitch.recordings(tw_key)) >= 2  # before the kill, and after the restart


def api_call(base: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        exc.close()
        return exc.code, body


def test_dashboard_keyboard_only_account_and_api_keys(e2e, browser, axe):
    _youtube, _twitch, rig, _agent = stack(e2e)
    dash = Dashboard(browser, rig.url, axe)
    page = dash.page
    username = f"keys{secrets.token_hex(3)}"
    sign_up(dash, username)
    dash.link("Account").click()
    page.get_by_role("heading", name="Account").wait_for()
    dash.button("Sign out").click()
    page.get_by_role("heading", name="Sign in to rig").wait_for()
    dash.wait_for_focus_on_heading()  # the new screen announces itself

    # Sign in and create a stream with the keyboard alone.
    dash.tab_to(lambda f: f["id"] == "signin-username")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Account").wait_for()  # back where the user was
    dash.wait_for_focus_on_heading()
    dash.tab_to(lambda f: f["tag"] == "A" and f["text"] == "Streams")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Your streams").wait_for()
    dash.wait_for_focus_on_heading()
    dash.tab_to(lambda f: f["id"] == "new-stream-name")
    page.keyboard.type("Keyboard stream")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Keyboard stream").wait_for()
    dash.wait_for_focus_on_heading()
    dash.tab_to(lambda f: f["tag"] == "A" and f["text"] == "Destinations")
    page.keyboard.press("Enter")
    dash.wait_for_focus_on_heading()
    dash.tab_to(lambda f: f["id"] == "new-key")
    page.keyboard.type(f"yt-{secrets.token_hex(4)}")
    page.keyboard.press("Enter")
    page.locator(".destination", has_text="YouTube").wait_for()

    # The stream's integrations: disconnect protection, its webhook, a backup key.
    dash.tab("Settings").click()
    dash.field("Wait for my encoder (seconds, 0 to 600)").fill("9999")
    dash.button("Save protection").click()
    assert dash.field_error("protection-grace")
    dash.field("Wait for my encoder (seconds, 0 to 600)").fill("45")
    dash.button("Save protection").click()
    dash.wait_for_text(".notice", "Disconnect protection saved")
    dash.field("Webhook URL").fill("ftp://hooks.example.com/rig")
    dash.button("Save webhook").click()
    assert "http" in dash.field_error("webhook-url")
    dash.field("Webhook URL").fill("https://hooks.example.com/rig")
    dash.button("Save webhook").click()
    dash.wait_for_text(".notice", "Webhook saved")
    assert page.locator("#webhook-secret").count() == 1
    dash.check_screen("settings-filled")
    page.reload()  # what was saved is what rig has
    assert dash.field("Wait for my encoder (seconds, 0 to 600)").input_value() == "45"
    assert dash.field("Webhook URL").input_value() == "https://hooks.example.com/rig"
    dash.tab("Live").click()
    dash.button("Create a backup key").click()
    page.locator("#backup-key").wait_for()
    page.get_by_role("button", name="Reveal Backup stream key").click()
    assert len(page.locator("#backup-key").inner_text().strip()) == 22

    # A destination's key changed, then the destination removed.
    dash.tab("Destinations").click()
    card = page.locator(".destination", has_text="YouTube")
    card.get_by_role("button", name="Change key of YouTube").click()
    new_key = f"yt-{secrets.token_hex(5)}"
    dash.field("New key").fill(new_key)
    dash.button("Save").click()
    card.get_by_role("button", name="Reveal YouTube key").click()
    dash.wait_for_text(".destination:has-text('YouTube') .secret-value", new_key)
    card.get_by_role("button", name="Remove YouTube").click()
    page.get_by_role("group", name="Remove YouTube").get_by_role("button", name="Remove").click()
    card.wait_for(state="detached")

    # Deactivated (its key refused) and active again.
    dash.tab("Settings").click()
    dash.button("Deactivate stream").click()
    dash.button("Deactivate").click()
    dash.wait_for_text("#page-title", "Inactive")
    dash.button("Activate stream").click()
    dash.wait_for_text("#page-title", "Offline")

    # Change password: a wrong current password is said next to that field; then it works
    # and the page signs in again with the new one.
    dash.link("Account").click()
    dash.field("Current password").fill("not my password")
    dash.field("New password").fill("an even better passphrase")
    dash.button("Change password").click()
    assert "Invalid old password" in dash.field_error("old-password") or dash.field_error(
        "old-password"
    )
    dash.field("Current password").fill(PASSWORD)
    dash.button("Change password").click()
    dash.wait_for_text(".notice", r"Password changed")

    # An API key: created with a scope, its secret shown once, working, then revoked.
    dash.field("Name").fill("stream deck")
    dash.field("Access").select_option("read")
    dash.button("Create key").click()
    secret = page.locator("#new-api-key").inner_text().strip()
    assert len(secret) >= 32
    dash.check_screen("api-key-created")
    status, body = api_call(rig.url, "GET", "/streams/", {"X-Api-Key": secret})
    assert status == 200 and [s["name"] for s in body["payload"]] == ["Keyboard stream"]
    status, body = api_call(rig.url, "POST", "/streams/", {"X-Api-Key": secret})
    assert (status, body["errorCode"]) == (403, 1003)  # read only
    dash.button("I have copied it").click()
    assert page.locator("#new-api-key").count() == 0  # shown once
    row = page.locator(".api-key", has_text="stream deck")
    assert "Read only" in row.inner_text()
    dash.check_screen("account")
    row.get_by_role("button", name="Revoke stream deck").click()
    page.get_by_role("button", name="Revoke", exact=True).click()
    row.wait_for(state="detached")
    status, body = api_call(rig.url, "GET", "/streams/", {"X-Api-Key": secret})
    assert (status, body["errorCode"]) == (401, 1003)

    # The stream deleted, after a confirmation: the list is empty again.
    dash.page.get_by_role("navigation", name="Main").get_by_role("link", name="Streams").click()
    page.get_by_role("link", name="Keyboard stream").click()
    dash.tab("Settings").click()
    dash.button("Delete stream").click()
    dash.button("Delete for good").click()
    page.get_by_role("heading", name="Your streams").wait_for()
    page.get_by_text("No streams yet").wait_for()

    # Signing out forgets the token: a reload shows the sign-in screen.
    dash.page.get_by_role("navigation", name="Main").get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to rig").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    page.get_by_role("heading", name="Sign in to rig").wait_for()
    dash.close()


def test_dashboard_polls_when_live_updates_are_refused(e2e, browser, axe):
    """A proxy in front of rig that refuses (or buffers) server-sent events: the page
    says so and keeps itself current by polling the stats."""
    _youtube, _twitch, rig, _agent = stack(e2e)
    dash = Dashboard(browser, rig.url, axe)
    refused = []

    def bad_gateway(route: object) -> None:
        refused.append(route.request.url)  # type: ignore[attr-defined]
        route.fulfill(status=502, body="Bad Gateway")  # type: ignore[attr-defined]

    dash.page.route("**/streams/*/events", bad_gateway)
    sign_up(dash, f"poll{secrets.token_hex(3)}")
    dash.field("Name (optional)").fill("Behind a proxy")
    dash.button("Create stream").click()
    dash.page.get_by_role("heading", name="Behind a proxy").wait_for()
    dash.wait_for_text(".connection", r"Updating every few seconds")
    assert len(refused) >= 3

    # A change made elsewhere (a script with the same account) still reaches the page.
    token = dash.page.evaluate("JSON.parse(sessionStorage.getItem('rig.session')).token")
    stream_id = dash.page.url.split("/streams/")[1].split("/")[0]

    def add_destination(body: dict) -> None:
        request = urllib.request.Request(  # noqa: S310
            f"{rig.url}/streams/{stream_id}/destination",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            assert resp.status == 200

    add_destination({"service": "Twitch", "streamKey": "tw-from-a-script"})
    dash.wait_for_text(".state-item", r"Twitch")
    # A Custom destination is named by its server's host (several must be told apart).
    add_destination({"service": "Custom", "rtmpUrl": "rtmp://8.8.8.8/live", "streamKey": "c-1"})
    dash.wait_for_text(".state-item", r"^Custom \(8\.8\.8\.8\)")
    assert not dash.problems, dash.problems
    dash.close()
