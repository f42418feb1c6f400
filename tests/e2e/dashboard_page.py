"""The dashboard in a real browser: Playwright driving Debian's Chromium, axe-core on
every screen, and screenshots of every screen at desktop and phone width.

axe-core comes from the npm registry (version AXE_VERSION); scripts/test installs it
into .cache/npm/. Screenshots go to $TEST_ARTIFACTS_DIR/dashboard/ (default:
test-artifacts/dashboard/ in the repository): `<screen>-desktop.png`, `<screen>-phone.png`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chromium import kill_marked, launch_options

from .harness import REPO

AXE_VERSION = "4.14.1"
AXE_PACKAGE = REPO / ".cache" / "npm" / "node_modules" / "axe-core"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts")) / "dashboard"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000  # what the page shows comes within a heartbeat or two; this is the bound
BLOCKING_IMPACTS = ("serious", "critical")


def axe_source() -> str:
    """axe-core's browser bundle, at the pinned version (scripts/test installs it)."""
    package = AXE_PACKAGE / "package.json"
    if not package.exists() or json.loads(package.read_text())["version"] != AXE_VERSION:
        pytest.fail(
            f"the dashboard tests need axe-core {AXE_VERSION} in {AXE_PACKAGE.parent}: run"
            f" scripts/test (it runs npm install --prefix .cache/npm axe-core@{AXE_VERSION})",
            pytrace=False,
        )
    return (AXE_PACKAGE / "axe.min.js").read_text()


@contextmanager
def chromium() -> Iterator[object]:
    """Headless Debian Chromium under Playwright's sync API (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    mark, options = launch_options()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(**options)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        kill_marked(mark)


class Dashboard:
    """One browser tab on rig's dashboard, failing the test on any script error or
    Content-Security-Policy violation, with axe and screenshots per screen."""

    def __init__(self, browser: object, base_url: str, axe: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport=DESKTOP, base_url=base_url)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", self._console)
        self._axe = axe
        self.screens: list[str] = []

    def _console(self, message: object) -> None:
        text = message.text  # type: ignore[attr-defined]
        if "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"CSP: {text}")

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)

    def check_screen(self, name: str) -> None:
        """Screenshot the screen at desktop and phone width, check each with axe and that
        nothing is wider than the phone's screen; no script error so far."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page = self.page
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(size)
            page.wait_for_timeout(150)  # layout settles after the resize
            page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} at {label} width scrolls sideways by {overflow} px"
            violations = self.axe()
            blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
            assert not blocking, f"{name} at {label} width: " + json.dumps(blocking, indent=1)
        assert not self.problems, self.problems
        self.screens.append(name)

    def axe(self) -> list[dict]:
        """axe-core's violations on the page as it is now."""
        if not self.page.evaluate("typeof window.axe === 'object'"):
            # Evaluated by the DevTools protocol, which the page's CSP does not govern:
            # the page keeps refusing inline scripts while the test injects axe.
            self.page.evaluate(self._axe)
        return self.page.evaluate(
            """async () => {
                const result = await axe.run(document, {resultTypes: ["violations"]});
                return result.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")),
                }));
            }"""
        )

    # ------------------------------------------------------------ what a person does

    def field(self, label: str) -> object:
        return self.page.get_by_label(label, exact=True)

    def button(self, name: str) -> object:
        return self.page.get_by_role("button", name=name, exact=True)

    def link(self, name: str) -> object:
        return self.page.get_by_role("link", name=name, exact=True)

    def tab(self, name: str) -> object:
        """One of a stream's screens (Live, Destinations, History, Settings)."""
        return self.page.get_by_role("navigation", name="Stream").get_by_role("link", name=name)

    def field_error(self, field_id: str) -> str:
        """The error shown next to a field (it names the field with aria-describedby)."""
        error = self.page.locator(f"#{field_id}-error")
        error.wait_for()
        described = self.page.locator(f"#{field_id}").get_attribute("aria-describedby") or ""
        assert f"{field_id}-error" in described.split(), described
        assert self.page.locator(f"#{field_id}").get_attribute("aria-invalid") == "true"
        return error.inner_text()

    def wait_for_text(self, selector: str, pattern: str, timeout_ms: int = WAIT_MS) -> str:
        """Wait until the text of an element matching `selector` matches `pattern` (a
        regex); return that text."""
        locator = self.page.locator(selector)
        deadline = time.monotonic() + timeout_ms / 1000
        text = ""
        while time.monotonic() < deadline:
            for text in locator.all_inner_texts():
                if re.search(pattern, text):
                    return text
            self.page.wait_for_timeout(100)
        raise AssertionError(f"{selector}: {pattern!r} not shown in time; last text: {text!r}")

    def wait_for_focus_on_heading(self) -> None:
        """After a change of screen the page moves the focus to the new heading."""
        self.page.wait_for_function("() => document.activeElement.id === 'page-title'")

    def tab_to(self, is_target: Callable[[dict], bool], presses: int = 40) -> dict:
        """Press Tab until the focused element satisfies `is_target`; return its facts."""
        for _ in range(presses):
            self.page.keyboard.press("Tab")
            focused = self.page.evaluate(
                """() => { const e = document.activeElement;
                   return {tag: e.tagName, id: e.id, text: e.innerText || "",
                           label: e.labels && e.labels[0] ? e.labels[0].innerText : ""}; }"""
            )
            if is_target(focused):
                return focused
        raise AssertionError("the keyboard never reached the element")

    def close(self) -> None:
        self.context.close()
