"""The rules page in a real browser: Debian's headless Chromium, driven by Playwright, against the server process on
127.0.0.1. Sign in with an admin key, read the rules in force, upload a candidate through the form and read its
move matrix, at a desktop width and at a phone's, with nothing wider than the screen. Screenshots land in
test-artifacts/dashboard/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ADMIN_KEY, READ_KEY, RULES_YAML, WEBHOOK_SECRET, build_orders
from tests.server_process import ROOT, commands, free_port, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
TIMEOUT_MS = 15_000
WIDTHS = (1400, 390)  # a desktop, and a phone held upright

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium); .ci/run does",
)


@pytest.fixture
def server(tmp_path: Path, rules_file: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/served.db",
        "RULES_FILE": str(rules_file),
        "API_KEYS": READ_KEY,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook",  # nothing is delivered in this test
        "DASHBOARD_INSECURE_COOKIE": "true",  # plain http on 127.0.0.1: a Secure cookie would never come back
        "PORT": str(port),
    }
    with running_server(commands(port)["procfile-gunicorn"], env, tmp_path / "server.log", port) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def shop(server: str) -> None:
    """A VIP at $6,000, two Active customers at $900 and one at $300, posted like n8n does."""
    now = datetime.now(timezone.utc)
    orders = [
        *build_orders("C-VIP", 3, first=now - timedelta(days=60), every_days=20, total="2000.00"),
        *build_orders("C-ACT1", 3, first=now - timedelta(days=80), every_days=25, total="300.00"),
        *build_orders("C-ACT2", 3, first=now - timedelta(days=80), every_days=25, total="300.00"),
        *build_orders("C-ACT3", 3, first=now - timedelta(days=80), every_days=25, total="100.00"),
    ]
    response = requests.post(f"{server}/api/orders", json=orders, headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    assert response.status_code == 200, response.text


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0 or less: no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def sticking_out(page: Page, within: str) -> list[str]:
    """The elements under `within` whose right edge is past the window's, as 'tag#id.class', to name the culprits
    (one inside a scrolling box is listed too, though it does not widen the page)."""
    return page.evaluate("""within => [...document.querySelectorAll(within + ' *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
        .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''))""",
                         within)


def fits_the_window(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
        f"{overflow(page)} px too wide; sticking out: {sticking_out(page, 'body')}"


@pytest.mark.parametrize("width", WIDTHS)
def test_upload_a_candidate_and_read_its_move_matrix(browser, server, shop, tmp_path, width):
    candidate = tmp_path / "lower-vip.yaml"
    candidate.write_text(RULES_YAML.replace("totalSpend: {gt: 5000}", "totalSpend: {gt: 800}"), encoding="utf-8")
    context = browser.new_context(base_url=server, viewport={"width": width, "height": 900})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/signin")
        page.fill("#api_key", ADMIN_KEY)
        page.click("form button[type=submit]:has-text('Sign in')")
        page.goto("/rules")

        assert page.locator('ul[data-section="segments"] li').first.inner_text() == "VIP: lifetime spend over $5,000"
        assert page.locator("#rules-file").inner_text() == "rules.yaml"
        screenshot(page, f"rules-{width}.png")
        fits_the_window(page)

        page.set_input_files("#preview-form input[type=file]", str(candidate))
        page.click("#preview-form button[type=submit]")

        matrix = page.locator("#move-matrix")
        assert matrix.is_visible()
        assert matrix.locator('tr[data-from="Active"] td[data-to="VIP"]').inner_text() == "2"
        assert matrix.locator('tr[data-from="Active"] td[data-to="Active"]').inner_text() == "1"
        assert matrix.locator('tr[data-from="VIP"] td[data-to="VIP"]').inner_text() == "1"
        assert page.locator('[data-figure="moved"] dd').inner_text() == "2"
        assert page.locator('#campaigns tr[data-campaign="vip"] td.num').inner_text() == "2"
        assert page.locator('#compare tr[data-change="changed"] ins').inner_text() == "VIP: lifetime spend over $800"
        # The stylesheet applies to the page the form answered with: the header is the dark bar it draws.
        assert page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(29, 35, 48)"
        screenshot(page, f"rules-preview-{width}.png")
        fits_the_window(page)

        page.click("#moves >> text=C-ACT1")
        assert page.locator('[data-metric="segment"] dd').inner_text() == "Active"
    finally:
        context.close()
    assert errors == []
