"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against the server process
on 127.0.0.1. Sign in, read the distribution, filter the table, replay a dead event and see it delivered to a real
receiver. Screenshots land in test-artifacts/dashboard/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ADMIN_KEY, READ_KEY, RULES_YAML, WEBHOOK_SECRET, build_orders
from tests.receiver import Receiver
from tests.server_process import ROOT, commands, free_port, running_server
from worker.delivery import DeliveryRun, Senders, deliver_due
from worker.rules_file import RulesSource
from worker.store import open_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium); .ci/run does",
)

@pytest.fixture
def rules_text() -> str:
    # Announce the very first run too, so that the customers posted below start campaigns to deliver.
    return RULES_YAML.replace("first_run: baseline", "first_run: emit")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # 410 Gone is permanent: every event goes dead on its first attempt until the test lets the receiver answer 200.
    with Receiver(WEBHOOK_SECRET, default_status=410) as running:
        yield running


@pytest.fixture
def served_env(tmp_path: Path, rules_file: Path, receiver: Receiver) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path}/served.db",
        "RULES_FILE": str(rules_file),
        "API_KEYS": READ_KEY,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "N8N_WEBHOOK_URL": receiver.url,
        "DASHBOARD_INSECURE_COOKIE": "true",  # plain http on 127.0.0.1: a Secure cookie would never come back
    }


@pytest.fixture
def server(tmp_path: Path, served_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **served_env, "PORT": str(port)}
    with running_server(commands(port)["procfile-gunicorn"], env, tmp_path / "server.log", port) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class PageWatch:
    """What a page did besides rendering: console errors (a CSP violation is one) and requests off the server."""

    def __init__(self, page: Page, base: str):
        self.errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: request.url.startswith(base) or self.foreign.append(request.url))


@pytest.fixture
def open_page(browser: Browser, server: str) -> Iterator:
    contexts = []

    def open_one() -> tuple[Page, PageWatch]:
        context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page, PageWatch(page, server)

    yield open_one
    for context in contexts:
        context.close()


@pytest.fixture
def shop(server: str) -> None:
    """Four customers in four segments, posted like n8n does; the first run announces welcome, VIP and win-back."""
    now = datetime.now(timezone.utc)
    orders = [
        *build_orders("C-VIP", 3, first=now - timedelta(days=60), every_days=20, total="2000.00",
                      email="vip@boxworks.example", name="Vera Important"),
        *build_orders("C-NEW", 1, first=now - timedelta(days=3), total="120.00", email="new@cartonia.example",
                      name="Nico New"),
        *build_orders("C-ACT", 3, first=now - timedelta(days=80), every_days=25, total="300.00",
                      email="act@boxworks.example", name="Ada Active"),
        *build_orders("C-OLD", 2, first=now - timedelta(days=200), every_days=60, total="50.00",
                      email="old@wrapco.example", name="Otto Old"),
    ]
    response = requests.post(f"{server}/api/orders", json=orders, headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    assert response.status_code == 200, response.text


def deliver(served_env: dict[str, str]) -> DeliveryRun:
    """One delivery pass on the served database, as the scheduler's deliver job would run it."""
    store = open_store(served_env["DATABASE_URL"])
    senders = Senders()
    try:
        rules = RulesSource(served_env["RULES_FILE"], served_env).current()
        return deliver_due(store, rules, senders, datetime.now(timezone.utc), "browser-test")
    finally:
        senders.close()
        store.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    assert page.url.endswith("/signin")
    page.fill("#api_key", key)
    page.click("form button[type=submit]:has-text('Sign in')")


def figure(page: Page, status: str) -> str:
    return page.locator(f'#queue [data-status="{status}"] dd').inner_text().strip()


def test_sign_in_read_the_segments_filter_customers_and_replay_a_dead_event(open_page, shop, served_env, receiver):
    assert deliver(served_env) == DeliveryRun(dead=3)  # welcome, vip and win-back, all refused with 410
    receiver.default_status = 200
    page, watch = open_page()

    sign_in(page, "not-a-valid-key")
    assert page.locator("#signin-refused").is_visible()
    assert [e for e in watch.errors if "401" not in e] == []  # the refusal is a 401 page; nothing else went wrong
    watch.errors.clear()
    page.fill("#api_key", ADMIN_KEY)
    page.click("form button[type=submit]:has-text('Sign in')")

    assert page.url.endswith("/")
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator("#customers-total").inner_text() == "4"
    for segment, spend in (("VIP", "6,000.00"), ("Dormant", "100.00"), ("New", "120.00"), ("Active", "900.00")):
        segment_row = page.locator(f'#distribution tr[data-segment="{segment}"]')
        assert segment_row.locator("td.customers").inner_text() == "1"
        assert segment_row.locator("td.spend").inner_text() == spend
    assert page.locator("#transitions-total").inner_text() == "4"
    assert page.locator("#transitions-chart g.day").count() == 90
    assert figure(page, "dead") == "3"
    # The stylesheet arrived and applies: the header is the dark bar it draws.
    assert page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(29, 35, 48)"
    screenshot(page, "overview.png")

    page.click("nav >> text=Customers")
    page.select_option("select[name=segment]", "VIP")
    page.click("form.filters button[type=submit]")
    assert page.locator("#customer-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.contact)") == ["C-VIP"]
    page.select_option("select[name=segment]", "")
    page.fill("input[name=q]", "BOXWORKS")
    page.click("form.filters button[type=submit]")
    assert page.locator("#customer-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.contact)") == ["C-ACT", "C-VIP"]
    screenshot(page, "customers-search.png")

    page.click("#customer-table >> text=C-VIP")
    assert page.locator('[data-metric="segment"] dd').inner_text() == "VIP"
    assert page.locator('[data-metric="totalSpend"] dd').inner_text() == "6,000.00"
    assert page.locator("#history tbody tr").count() == 1
    screenshot(page, "customer.png")

    page.click("nav >> text=Overview")
    vip_row = page.locator("#queue tr[data-status=dead]").filter(has_text="C-VIP")
    event_id = vip_row.get_attribute("data-event")
    vip_row.locator("button.replay").click()
    assert event_id in page.locator(".notice").inner_text()
    assert (figure(page, "pending"), figure(page, "dead")) == ("1", "2")

    assert deliver(served_env) == DeliveryRun(delivered=1)
    assert receiver.delivered_ids() == [event_id]
    assert receiver.requests[-1].signature_valid

    page.reload()
    assert (figure(page, "pending"), figure(page, "delivered"), figure(page, "dead")) == ("0", "1", "2")
    page.click('#queue [data-status="delivered"] a')
    delivered = page.locator(f'tr[data-event="{event_id}"]')
    assert delivered.locator(".status").inner_text() == "delivered"
    screenshot(page, "replayed-and-delivered.png")

    assert watch.errors == []
    assert watch.foreign == []


def test_a_read_key_sees_the_queue_without_replay_and_can_sign_out(open_page, shop, served_env):
    deliver(served_env)
    page, watch = open_page()

    sign_in(page, READ_KEY)

    assert page.locator("#access").inner_text() == "Read-only key"
    assert figure(page, "dead") == "3"
    assert page.locator("#queue tr[data-status=dead]").count() == 3
    assert page.locator("button.replay").count() == 0
    screenshot(page, "read-only-overview.png")
    page.click("text=Sign out")
    assert page.url.endswith("/signin")
    page.goto("/customers")
    assert page.url.endswith("/signin")
    assert watch.errors == []
