"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against the server process
on 127.0.0.1, at 1400 px and at a phone's 390 px. Sign in, read the distribution, filter, sort and page the table both
ways, export it as CSV, a customer's RFM and events, replay one dead event or all of them (CSRF checked), see them
delivered to a real receiver, the delivery-disabled banner, and no page wider than the screen. Screenshots land in
test-artifacts/dashboard/.

Without Chromium the tests skip, saying how to get it; under CI=true they fail instead: CI never skips them."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ADMIN_KEY, READ_KEY, RULES_YAML, WEBHOOK_SECRET, build_orders
from tests.receiver import Receiver
from tests.server_process import ROOT, commands, free_port, running_server
from worker.delivery import DeliveryRun, Senders, deliver_due
from worker.rfm_boundaries import recompute_rfm
from worker.rules_file import RulesSource
from worker.store import open_store

# SEGMENT_WORKER_CHROMIUM points elsewhere (tests/test_dashboard.py uses it to check the skip and the CI failure).
CHROMIUM = Path(os.environ.get("SEGMENT_WORKER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
TIMEOUT_MS = 15_000
WIDE, NARROW = 1400, 390
HOW_TO_GET_CHROMIUM = (f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium); "
                       ".ci/run installs it")


def require_chromium() -> None:
    """Skip without Chromium, saying how to get it; under CI=true fail instead: CI never skips these tests."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{HOW_TO_GET_CHROMIUM}. CI never skips the browser tests.", pytrace=False)
    pytest.skip(HOW_TO_GET_CHROMIUM)


@pytest.fixture(autouse=True)
def chromium_present() -> None:
    require_chromium()


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
    require_chromium()  # module fixtures come before chromium_present
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
def open_page(browser: Browser, server: str) -> Iterator[Callable[..., tuple[Page, PageWatch]]]:
    contexts = []

    def open_one(width: int = WIDE, base: str = server) -> tuple[Page, PageWatch]:
        context = browser.new_context(base_url=base, viewport={"width": width, "height": 900}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page, PageWatch(page, base)

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
    for segment, spend in (("VIP", "$6,000.00"), ("Dormant", "$100.00"), ("New", "$120.00"), ("Active", "$900.00")):
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
    assert page.locator('[data-metric="totalSpend"] dd').inner_text() == "$6,000.00"
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


# --- the new marketer features ---------------------------------------------------------------------------------

@pytest.fixture
def crowd(server: str, shop: None) -> list[str]:
    """56 more customers besides the shop's four (60 in all: two pages), spend 10.00 apart with ties every fifth;
    returns everyone's id by spend, highest first (ties by contactID, the whole order reversed)."""
    now = datetime.now(timezone.utc)
    cents = {f"F-{n:03d}": (n - (n % 5 == 0)) * 1000 for n in range(1, 57)}
    orders = [order for cid, c in cents.items()
              for order in build_orders(cid, 1, first=now - timedelta(days=2), total=f"{c / 100:.2f}")]
    response = requests.post(f"{server}/api/orders", json=orders, headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    assert response.status_code == 200, response.text
    cents.update({"C-VIP": 600_000, "C-NEW": 12_000, "C-ACT": 90_000, "C-OLD": 10_000})
    return sorted(cents, key=lambda cid: (cents[cid], cid), reverse=True)


def rows(page: Page) -> list[str]:
    return page.locator("#customer-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.contact)")


def no_sideways_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_sort_page_both_ways_and_export_the_filtered_table_as_csv(open_page, crowd, tmp_path):
    page, watch = open_page()
    sign_in(page, READ_KEY)
    page.click("nav >> text=Customers")
    assert page.locator("#customers-count").inner_text() == "60"

    page.select_option("select[name=sort]", "-totalSpend")
    page.click("form.filters button[type=submit]")
    assert rows(page) == crowd[:50]
    assert page.locator("#customer-table th[aria-sort=descending]").inner_text() == "Spend ▼"
    assert page.locator("#customer-table tbody tr >> nth=0").locator("td.spend").inner_text() == "$6,000.00"
    assert page.locator("#previous-page").count() == 0
    screenshot(page, "customers-sorted-by-spend.png")

    page.click("#next-page")
    assert rows(page) == crowd[50:]
    assert page.locator("#next-page").count() == 0
    screenshot(page, "customers-page-2.png")
    page.click("#previous-page")
    assert rows(page) == crowd[:50]

    page.click("#customer-table th >> text=Spend")  # the header turns the order round
    assert rows(page)[:3] == crowd[::-1][:3]

    page.select_option("select[name=segment]", "Active")
    page.fill("input[name=q]", "boxworks")
    page.click("form.filters button[type=submit]")
    assert rows(page) == ["C-ACT"]
    with page.expect_download() as download:
        page.click("#export")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as file:
        exported = list(csv.DictReader(file))
    assert download.value.suggested_filename == "customers-active.csv"
    assert [(r["contactID"], r["segment"], r["totalSpend"]) for r in exported] == [("C-ACT", "Active", "900.00")]
    assert watch.errors == [] and watch.foreign == []


def test_a_customers_rfm_and_events_with_replay_there(open_page, shop, served_env, receiver):
    assert deliver(served_env) == DeliveryRun(dead=3)
    store = open_store(served_env["DATABASE_URL"])
    try:
        recompute_rfm(store, RulesSource(served_env["RULES_FILE"], served_env).current(), datetime.now(timezone.utc))
    finally:
        store.close()
    receiver.default_status = 200
    page, watch = open_page()
    sign_in(page, ADMIN_KEY)

    page.goto("/customers/C-VIP")
    assert page.locator('[data-rfm="group"] dd').inner_text() != ""
    assert page.locator('[data-rfm="monetary"] dd').inner_text() == "4", "the biggest of four spenders"
    event = page.locator("#customer-events tbody tr")
    assert event.count() == 1
    assert (event.locator("td.campaign").inner_text(), event.locator(".status").inner_text(),
            event.locator("td.attempts").inner_text()) == ("vip", "dead", "1")
    assert "410" in event.locator("td.answer").inner_text()
    screenshot(page, "customer-rfm-and-events.png")

    event.locator("button.replay").click()
    assert page.url.endswith("/customers/C-VIP")
    assert "is pending again" in page.locator(".notice").inner_text()
    assert page.locator("#customer-events .status").inner_text() == "pending"
    assert deliver(served_env) == DeliveryRun(delivered=1)
    page.reload()
    assert page.locator("#customer-events .status").inner_text() == "delivered"
    assert watch.errors == []


def test_bulk_replay_of_dead_events_needs_the_form_token_and_a_confirmation(open_page, shop, served_env, receiver):
    assert deliver(served_env) == DeliveryRun(dead=3)
    receiver.default_status = 200
    page, watch = open_page()
    sign_in(page, ADMIN_KEY)
    page.goto("/events?status=dead")

    forged = page.request.post("/events/replay", form={"campaign": ""}, max_redirects=0)
    assert forged.status == 400 and "expired" in forged.text()
    assert page.request.post("/events/replay", form={"campaign": "", "csrf_token": "forged"},
                             max_redirects=0).status == 400

    page.select_option("#bulk-replay select[name=campaign]", "vip")
    page.click("#bulk-replay button[type=submit]")
    assert "1 dead event of campaign vip" in page.locator("#replay-count").inner_text()
    page.click("a.quiet:has-text('Cancel')")
    page.click("#bulk-replay button[type=submit]")  # every campaign
    assert "3 dead events of every campaign" in page.locator("#replay-count").inner_text()
    screenshot(page, "bulk-replay-confirm.png")
    page.click("#confirm-bulk-replay")

    assert "3 dead events pending again" in page.locator(".notice").inner_text()
    assert page.locator("tr[data-status=dead]").count() == 0
    assert deliver(served_env) == DeliveryRun(delivered=3)
    assert sorted(receiver.delivered_ids()) == sorted(
        e["id"] for e in requests.get(f"{page.url.split('/events')[0]}/api/events?status=delivered",
                                      headers={"X-API-Key": READ_KEY}, timeout=10).json()["data"])
    screenshot(page, "bulk-replayed.png")
    assert [e for e in watch.errors if "400" not in e] == []  # the forged posts' answers, nothing else


@pytest.fixture
def undeliverable_server(tmp_path: Path, served_env: dict[str, str]) -> Iterator[str]:
    """The same service with WEBHOOK_SECRET unset: it serves, and delivery is disabled."""
    port = free_port()
    env = {**os.environ, **served_env, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path}/undeliverable.db"}
    env.pop("WEBHOOK_SECRET")
    with running_server(commands(port)["procfile-gunicorn"], env, tmp_path / "undeliverable.log", port) as base:
        yield base


def test_delivery_disabled_shows_a_banner_saying_why_on_every_page(open_page, undeliverable_server):
    health = requests.get(f"{undeliverable_server}/healthz", timeout=10).json()
    assert (health["status"], health["delivery"]) == ("degraded", "disabled")
    page, watch = open_page(base=undeliverable_server)
    sign_in(page, READ_KEY)

    for path in ("/", "/customers", "/events", "/rules"):
        page.goto(path)
        banner = page.locator("#delivery-disabled-banner")
        assert banner.is_visible(), path
        assert "Webhook delivery is disabled" in banner.inner_text()
        assert page.locator("#delivery-disabled-banner .banner-detail").inner_text() == health["deliveryProblem"]
    assert "WEBHOOK_SECRET is not set" in health["deliveryProblem"]
    page.goto("/")
    screenshot(page, "delivery-disabled.png")
    assert watch.errors == []


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_no_page_overflows_sideways(open_page, crowd, served_env, width):
    deliver(served_env)  # dead events: the overview's and the events page's tables have rows
    page, watch = open_page(width)
    sign_in(page, ADMIN_KEY)
    pages = {"overview": "/", "customers": "/customers?sort=-totalSpend", "customer": "/customers/C-VIP",
             "events": "/events", "bulk-replay": "/events/replay", "rules": "/rules", "campaigns": "/campaigns",
             "campaign": "/campaigns/win-back"}

    for name, path in pages.items():
        page.goto(path)
        assert no_sideways_scroll(page), f"{path} at {width} px is wider than the window"
        for link in ("Overview", "Customers", "Events", "Campaigns", "Rules"):
            assert page.locator(f"header.top nav >> text={link}").is_visible(), (path, link)
        assert page.locator("header.top button:has-text('Sign out')").is_visible()
        screenshot(page, f"{name}-{width}px.png")
    if width == NARROW:
        page.goto("/customers")
        table_box = page.locator("#customer-table").locator("xpath=..")
        assert table_box.evaluate("box => box.scrollWidth > box.clientWidth"), "the table scrolls in its own box"
        nav_top = page.locator("header.top nav").bounding_box()["y"]
        assert nav_top > page.locator("header.top .brand").bounding_box()["y"], "the nav wraps under the brand"
    assert watch.errors == []
