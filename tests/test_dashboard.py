"""The dashboard through Flask's test client: sign-in and the session cookie, what each page shows from the store,
filters and search, replay guarded by a write key and a CSRF token, and the banners saying when something is wrong."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import zlib
from datetime import date, datetime, timedelta, timezone

import pytest
from flask.testing import FlaskClient
from markupsafe import escape
from werkzeug.test import TestResponse

from tests.conftest import ADMIN_KEY, NOW, READ_KEY, RULES_YAML
from tests.dashboard_helpers import csrf_from, sign_in
from tests.server_process import ROOT
from tests.test_store_dashboard import record_transition
from worker.api import create_app
from worker.api.dashboard import (
    CONTENT_SECURITY_POLICY,
    DELIVERY_BEHIND_SECONDS,
    PLOT_BOTTOM,
    PLOT_TOP,
    horizontal_bars,
    session_secret,
    transitions_chart,
    views,
)
from worker.export import COLUMNS
from worker.rfm_boundaries import recompute_rfm
from worker.settings import Settings, SettingsError
from worker.store.base import NewEvent, Store, Superseded

PAGES = ("/", "/customers", "/customers?q=C-", "/customers/C-VIP", "/events", "/events?status=dead")
# Every kind of signed-in page: overview, customers, a customer, events, and an error page (404).
BANNER_PAGES = ("/", "/customers", "/customers/C-VIP", "/events", "/customers/C-NOBODY")


def row(html: str, attribute: str, value: str) -> str:
    """The inner HTML of the table row with attribute="value"."""
    match = re.search(rf'<tr {attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row with {attribute}={value!r}"
    return match.group(1)


def cell(html: str, css_class: str) -> str:
    match = re.search(rf'<td class="[^"]*\b{css_class}\b[^"]*">(.*?)</td>', html, re.S)
    assert match, f"no cell .{css_class}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def stat(html: str, attribute: str, value: str) -> str:
    match = re.search(rf'<div {attribute}="{value}"[^>]*><dt>[^<]*</dt><dd>(.*?)</dd>', html, re.S)
    assert match, f"no figure {attribute}={value!r}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def session_payload(client: FlaskClient) -> str:
    """What the signed session cookie carries, decoded (it is signed, not encrypted)."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    data = cookie.value
    compressed = data.startswith(".")
    payload = data.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


def dead_event(store: Store, contact_id: str = "C-DEAD") -> str:
    event = NewEvent(id=f"evt_{contact_id.lower()}", contact_id=contact_id, campaign="welcome", webhook="n8n",
                     type="segment.entered", occurred_at=NOW - timedelta(hours=2), body="{}")
    record_transition(store, contact_id, "New", NOW - timedelta(hours=2), events=[event])
    store.record_failed([event.id], NOW - timedelta(hours=1), 410, "HTTP 410 Gone", 12, None)
    return event.id


def pending_event(store: Store, contact_id: str, created_at: datetime) -> str:
    """An event queued by an evaluation at `created_at`, not tried yet."""
    event = NewEvent(id=f"evt_{contact_id.lower()}", contact_id=contact_id, campaign="welcome", webhook="n8n",
                     type="segment.entered", occurred_at=created_at, body="{}")
    record_transition(store, contact_id, "New", created_at, events=[event])
    return event.id


def banner(html: str, name: str) -> str | None:
    """The text of the #<name>-banner alert (tags dropped, whitespace folded), or None when the page has none."""
    match = re.search(rf'<div class="banner [^"]+" role="alert" id="{name}-banner">(.*?)</div>', html, re.S)
    return None if match is None else " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


@pytest.fixture
def shop(post_orders, make_orders) -> None:
    """Four customers in four segments: VIP (6,000.00), New (weekly), Active (monthly), Dormant."""
    batches = [
        make_orders("C-VIP", 3, first=NOW - timedelta(days=60), every_days=20, total="2000.00",
                    email="vip@boxworks.example", name="Vera Important"),
        make_orders("C-NEW", 2, first=NOW - timedelta(days=10), every_days=5, total="120.00",
                    email="new@cartonia.example", name="Nico New"),
        make_orders("C-ACT", 3, first=NOW - timedelta(days=80), every_days=25, total="300.00",
                    email="act@boxworks.example", name="Ada Active"),
        make_orders("C-OLD", 2, first=NOW - timedelta(days=200), every_days=60, total="50.00",
                    email="old@wrapco.example", name="Otto Old"),
    ]
    for batch in batches:
        assert post_orders(batch).status_code == 200




# --- signing in ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/customers", "/customers/C-1", "/events", "/events?status=dead"])
def test_signed_out_pages_redirect_to_sign_in(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response.headers["Location"] == "/signin"


def test_a_valid_key_signs_in_and_opens_the_overview(client):
    response = sign_in(client, READ_KEY)

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "Overview" in page.text
    assert "Read-only key" in page.text


def test_a_wrong_key_is_refused(client):
    response = sign_in(client, "not-a-key")

    assert response.status_code == 401
    assert "That key is not valid here." in response.text
    assert "not-a-key" not in response.text
    assert client.get("/").status_code == 302


def test_sign_in_needs_the_form_token(client):
    client.get("/signin")

    response = client.post("/signin", data={"api_key": ADMIN_KEY})

    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_an_api_key_header_does_not_open_the_dashboard(client, admin_headers):
    response = client.get("/", headers=admin_headers)

    assert response.status_code == 302


def test_a_dashboard_session_does_not_open_the_api(admin):
    assert admin.get("/api/segments").status_code == 401
    assert admin.post("/api/events/evt_x/replay").status_code == 401


def test_sign_out_ends_the_session(admin):
    token = csrf_from(admin.get("/").text)

    response = admin.post("/signout", data={"csrf_token": token})

    assert response.headers["Location"] == "/signin"
    assert admin.get("/").status_code == 302


def test_sign_out_needs_the_form_token(admin):
    assert admin.post("/signout").status_code == 400
    assert admin.get("/").status_code == 200


# --- the session cookie ----------------------------------------------------------------------------------------

def test_the_key_appears_in_no_page_and_no_cookie(client, shop, store):
    dead_event(store)
    signed_in = sign_in(client, ADMIN_KEY)
    pages = [client.get(path) for path in PAGES]

    for response in [signed_in, *pages]:
        assert ADMIN_KEY not in response.get_data(as_text=True)
        assert all(ADMIN_KEY not in value for value in response.headers.getlist("Set-Cookie"))
    assert ADMIN_KEY not in session_payload(client)
    assert set(json.loads(session_payload(client))) <= {"key", "sign_out", "since", "seen", "csrf", "_permanent",
                                                      "_flashes"}


def test_the_session_cookie_is_httponly_samesite_lax_and_secure(client):
    response = sign_in(client, READ_KEY)

    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie


def test_insecure_cookie_setting_drops_only_the_secure_flag(settings, store, rules_source, clock):
    plain = Settings(**{**settings.__dict__, "dashboard_insecure_cookie": True})
    client = create_app(plain, store=store, rules_source=rules_source, clock=clock).test_client()

    cookie = sign_in(client, READ_KEY).headers["Set-Cookie"]

    assert "Secure" not in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_session_is_checked_against_the_keys_configured_now(settings, store, rules_source, clock):
    secret = "s" * 40
    before = Settings(**{**settings.__dict__, "session_secret": secret})
    after = Settings(**{**before.__dict__, "api_keys": ("another-read-key-0123",)})
    first = create_app(before, store=store, rules_source=rules_source, clock=clock).test_client()
    sign_in(first, READ_KEY)
    cookie = first.get_cookie("session").value
    second = create_app(after, store=store, rules_source=rules_source, clock=clock).test_client()
    second.set_cookie("session", cookie)
    same = create_app(before, store=store, rules_source=rules_source, clock=clock).test_client()
    same.set_cookie("session", cookie)

    assert same.get("/").status_code == 200
    assert second.get("/").status_code == 302


def test_a_session_holding_the_key_itself_is_not_signed_in(client):
    with client.session_transaction() as session:
        session["key"] = ADMIN_KEY

    assert client.get("/").status_code == 302


def test_the_derived_secret_is_the_same_for_the_same_keys_and_changes_with_them(settings):
    again = Settings(**settings.__dict__)
    rotated = Settings(**{**settings.__dict__, "admin_api_keys": ("new-admin-key-0123456789",)})

    assert session_secret(settings) == session_secret(again)
    assert session_secret(settings) != session_secret(rotated)
    assert ADMIN_KEY.encode() not in session_secret(settings)


def test_session_settings_come_from_the_environment():
    settings = Settings.from_env({"SESSION_SECRET": "x" * 32, "DASHBOARD_INSECURE_COOKIE": "true"})

    assert session_secret(settings) == b"x" * 32
    assert settings.dashboard_insecure_cookie is True
    assert "x" * 32 not in repr(settings)
    assert Settings.from_env({}).dashboard_insecure_cookie is False


@pytest.mark.parametrize("environ", [{"SESSION_SECRET": "short"}, {"DASHBOARD_INSECURE_COOKIE": "yes"}])
def test_bad_session_settings_are_refused(environ):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ)

    assert next(iter(environ)) in str(refused.value)
    assert "short" not in str(refused.value)


def test_pages_forbid_inline_scripts_and_other_origins(admin):
    for path in PAGES[:2] + ("/signin",):
        assert admin.get(path).headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'self'")
    assert "<script" not in admin.get("/").text
    assert " style=" not in admin.get("/").text


def test_the_stylesheet_ships_with_the_package_and_needs_no_session(client):
    response = client.get("/static/dashboard.css")

    assert response.status_code == 200
    assert ".seg-0" in response.text
    assert "http" not in response.text  # no fonts or images from elsewhere


# --- overview --------------------------------------------------------------------------------------------------

def test_overview_shows_customers_and_spend_per_segment(admin, shop):
    html = admin.get("/").text

    vip, new, active, dormant = (row(html, "data-segment", s) for s in ("VIP", "New", "Active", "Dormant"))
    assert (cell(vip, "customers"), cell(vip, "share"), cell(vip, "spend")) == ("1", "25.0%", "$6,000.00")
    assert (cell(new, "customers"), cell(new, "spend")) == ("1", "$240.00")
    assert (cell(active, "customers"), cell(active, "spend")) == ("1", "$900.00")
    assert (cell(dormant, "customers"), cell(dormant, "spend")) == ("1", "$100.00")
    assert re.search(r'id="customers-total">4<', html)


def test_overview_bars_are_drawn_to_scale(admin, shop):
    html = admin.get("/").text

    spend = re.search(r'<svg class="bars" id="spend-chart".*?</svg>', html, re.S).group(0)
    widths = dict(re.findall(r'<g data-segment="(\w+)">\s*<text[^>]*>\w+</text>\s*<rect [^>]*width="([\d.]+)"',
                             spend))
    assert widths == {"VIP": "240.0", "Dormant": "4.0", "New": "9.6", "Active": "36.0"}


def test_overview_counts_transitions_per_day_over_the_last_90_days(admin, store):
    record_transition(store, "C-1", "New", datetime(2026, 2, 20, 9, tzinfo=timezone.utc))
    record_transition(store, "C-2", "New", datetime(2026, 2, 20, 18, tzinfo=timezone.utc))
    record_transition(store, "C-3", "VIP", datetime(2026, 2, 20, 23, tzinfo=timezone.utc))
    record_transition(store, "C-4", "Dormant", datetime(2025, 11, 24, tzinfo=timezone.utc))  # first day shown
    record_transition(store, "C-5", "Dormant", datetime(2025, 11, 23, 23, tzinfo=timezone.utc))  # too old

    html = admin.get("/").text

    assert html.count('class="day" data-day=') == 90
    assert 'data-day="2026-02-20" data-total="3"' in html
    assert 'data-day="2025-11-24" data-total="1"' in html
    assert 'data-day="2025-11-23"' not in html
    assert 'data-day="2026-02-21" data-total="0"' in html
    assert re.search(r'id="transitions-total">4<', html)
    assert "2026-02-20: 3 transitions (1 to VIP, 2 to New)" in html


def test_overview_shows_the_event_queue_and_dead_events(admin, store):
    dead = dead_event(store)
    record_transition(store, "C-P", "New", NOW - timedelta(minutes=30), events=[NewEvent(
        "evt_pending", "C-P", "welcome", "n8n", "segment.entered", NOW - timedelta(minutes=30), "{}")])

    html = admin.get("/").text

    assert stat(html, "data-status", "pending") == "1"
    assert stat(html, "data-status", "delivered") == "0"
    assert stat(html, "data-status", "dead") == "1"
    assert stat(html, "data-status", "oldest") == "30 min"
    dead_row = row(html, "data-event", dead)
    assert "HTTP 410 Gone" in dead_row
    assert ">Replay</button>" in dead_row


def test_a_read_key_sees_dead_events_without_a_replay_button(reader, store):
    dead = dead_event(store)

    html = reader.get("/").text

    assert dead in html
    assert "Replay</button>" not in html
    assert "Replay</button>" not in reader.get("/events?status=dead").text


# --- replay ----------------------------------------------------------------------------------------------------

def test_replay_makes_a_dead_event_pending_again(admin, store, clock):
    dead = dead_event(store)
    token = csrf_from(admin.get("/").text)

    response = admin.post(f"/events/{dead}/replay", data={"csrf_token": token, "back": "overview"})

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    event = store.get_event(dead)
    assert (event.status, event.next_attempt_at) == ("pending", clock.now)
    assert f"Event {dead} is pending again" in admin.get("/").text


def test_replay_from_the_events_page_returns_there(admin, store):
    dead = dead_event(store)
    token = csrf_from(admin.get("/events?status=dead").text)

    response = admin.post(f"/events/{dead}/replay", data={"csrf_token": token, "back": "events"})

    assert response.headers["Location"] == "/events?status=dead"


@pytest.mark.parametrize("form", [{}, {"csrf_token": ""}, {"csrf_token": "forged-token"}])
def test_replay_without_the_session_csrf_token_is_refused(admin, store, form):
    dead = dead_event(store)

    response = admin.post(f"/events/{dead}/replay", data=form)

    assert response.status_code == 400
    assert "expired" in response.text
    assert store.get_event(dead).status == "dead"


def test_a_read_key_cannot_replay(reader, store):
    dead = dead_event(store)
    token = csrf_from(reader.get("/").text)

    response = reader.post(f"/events/{dead}/replay", data={"csrf_token": token})

    assert response.status_code == 403
    assert "ADMIN_API_KEYS" in response.text
    assert store.get_event(dead).status == "dead"


def test_signed_out_replay_goes_to_sign_in(client, store):
    dead = dead_event(store)

    response = client.post(f"/events/{dead}/replay")

    assert response.headers["Location"] == "/signin"
    assert store.get_event(dead).status == "dead"


def test_replaying_an_unknown_event_is_404(admin):
    token = csrf_from(admin.get("/").text)

    assert admin.post("/events/evt_nope/replay", data={"csrf_token": token}).status_code == 404


def test_events_page_lists_by_status(admin, store):
    dead = dead_event(store)

    assert dead in admin.get("/events?status=dead").text
    assert dead not in admin.get("/events?status=delivered").text
    assert admin.get("/events?status=lost").status_code == 400


def test_superseded_events_are_listed_with_why_they_were_not_sent(admin, store):
    event_id = pending_event(store, "C-UNDONE", NOW - timedelta(minutes=5))
    store.record_superseded([Superseded(event_id, "the customer is now Active, no longer VIP", "trn_x")], NOW)

    page = admin.get("/events?status=superseded").text

    assert event_id in page and "the customer is now Active, no longer VIP" in page
    assert event_id not in admin.get("/events?status=pending").text
    assert 'href="/events?status=superseded"' in page, "a tab of its own"


def test_a_superseded_event_can_be_sent_anyway_by_a_write_key(admin, store):
    event_id = pending_event(store, "C-UNDONE", NOW - timedelta(minutes=5))
    store.record_superseded([Superseded(event_id, "moved on")], NOW)
    page = admin.get("/events?status=superseded").text
    assert "Send anyway" in row(page, "data-event", event_id)

    sent = admin.post(f"/events/{event_id}/replay", data={"csrf_token": csrf_from(page), "back": "events"})

    assert sent.status_code == 302
    replayed = store.get_event(event_id)
    assert (replayed.status, replayed.recheck) == ("pending", False)


# --- customers -------------------------------------------------------------------------------------------------

def listed(html: str) -> list[str]:
    return re.findall(r'<tr data-contact="([^"]+)"', html)


def test_the_table_lists_every_customer_in_id_order(admin, shop):
    assert listed(admin.get("/customers").text) == ["C-ACT", "C-NEW", "C-OLD", "C-VIP"]


@pytest.mark.parametrize("query, expected", [
    ("segment=VIP", ["C-VIP"]),
    ("segment=Dormant", ["C-OLD"]),
    ("frequency=Weekly", ["C-NEW"]),
    ("frequency=Monthly", ["C-ACT", "C-VIP"]),
    ("segment=Active&frequency=Monthly", ["C-ACT"]),
    ("segment=Active&frequency=Weekly", []),
])
def test_the_table_filters_by_segment_and_frequency(admin, shop, query, expected):
    assert listed(admin.get(f"/customers?{query}").text) == expected


@pytest.mark.parametrize("query, expected", [
    ("q=C-N", ["C-NEW"]),
    ("q=boxworks", ["C-ACT", "C-VIP"]),
    ("q=otto", ["C-OLD"]),
    ("q=VERA+important", ["C-VIP"]),
    ("q=boxworks&segment=VIP", ["C-VIP"]),
    ("q=nobody", []),
])
def test_search_finds_by_id_email_or_name(admin, shop, query, expected):
    assert listed(admin.get(f"/customers?{query}").text) == expected


def test_an_overlong_search_is_a_400_page(admin):
    assert admin.get("/customers?q=" + "x" * 201).status_code == 400
    assert admin.get("/customers?q=" + "x" * 200).status_code == 200


def test_an_unknown_filter_value_is_a_400_page(admin):
    response = admin.get("/customers?segment=Gold")

    assert response.status_code == 400
    assert "Unknown segment" in response.text
    assert response.content_type.startswith("text/html")


def test_the_table_pages_through_customers(admin, post_orders, make_orders):
    post_orders([order for n in range(55) for order in make_orders(f"P-{n:03d}", 1)])

    first = admin.get("/customers").text
    second = admin.get("/customers?after=P-049").text

    assert listed(first) == [f"P-{n:03d}" for n in range(50)]
    assert 'href="/customers?after=P-049"' in first
    assert listed(second) == [f"P-{n:03d}" for n in range(50, 55)]
    assert "rel=\"next\"" not in second


def test_the_customer_page_shows_metrics_and_transition_history(admin, shop, store):
    record_transition(store, "C-VIP", "VIP", NOW - timedelta(days=20))

    html = admin.get("/customers/C-VIP").text

    assert stat(html, "data-metric", "segment") == "VIP"
    assert stat(html, "data-metric", "purchaseFrequency") == "Monthly"
    assert stat(html, "data-metric", "orderCount") == "3"
    assert stat(html, "data-metric", "totalSpend") == "$6,000.00"
    assert stat(html, "data-metric", "lastOrderDaysAgo") == "20"
    history = re.search(r'<tr data-transition="[^"]+">(.*?)</tr>', html, re.S).group(1)
    assert "2026-02-01 12:00 UTC" in history and "VIP" in history


def test_an_unknown_customer_is_a_404_page(admin):
    response = admin.get("/customers/C-NOBODY")

    assert response.status_code == 404
    assert "No customer has the id" in response.text


def test_everything_from_the_store_is_escaped(admin, post_orders, make_orders):
    post_orders(make_orders("C-X", 1, name="<script>alert(1)</script>", email="\"><img src=x>@example.com"))

    for path in ("/customers", "/customers/C-X", "/customers?q=script"):
        html = admin.get(path).text
        assert "<script>alert(1)" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x>" not in html


# --- charts ----------------------------------------------------------------------------------------------------

def test_the_busiest_day_fills_the_chart_and_quiet_days_have_no_blocks():
    chart = transitions_chart([("2026-02-20", "New", 3), ("2026-02-20", "VIP", 1), ("2026-02-19", "New", 2)],
                              date(2026, 2, 21), 3, ["VIP", "New"])

    _, busiest, today = chart.columns
    assert [c.day for c in chart.columns] == ["2026-02-19", "2026-02-20", "2026-02-21"]
    assert [c.total for c in chart.columns] == [2, 4, 0]
    assert chart.y_ticks[-1][1] == "4"
    assert sum(b.height for b in busiest.blocks) == pytest.approx(PLOT_BOTTOM - PLOT_TOP)
    assert [b.css for b in busiest.blocks] == ["seg-0", "seg-1"]  # VIP then New, in the rules' order
    assert today.blocks == []
    assert chart.legend == [("VIP", "seg-0"), ("New", "seg-1")]


def test_bars_are_scaled_to_the_largest():
    chart = horizontal_bars([("A", 50, "50", "seg-0"), ("B", 200, "200", "seg-1"), ("C", 0, "0", "seg-2")])

    assert [bar.width for bar in chart.bars] == [60.0, 240.0, 0.0]
    assert [bar.y for bar in chart.bars] == [0.0, 30.0, 60.0]


# --- banners: the dashboard says when something is wrong ------------------------------------------------------

def test_refused_rules_show_a_banner_on_every_page(admin, shop, rules_file):
    rules_file.write_text(RULES_YAML + "\nsurprise: true\n")
    refused = admin.get("/healthz").get_json()["rulesError"]

    for path in BANNER_PAGES:
        html = admin.get(path).text
        assert f'<pre class="banner-detail">{escape(refused)}</pre>' in html, path
        text = banner(html, "rules")
        assert "The last good rules stay in force" in text
        assert f"python -m worker rules check {rules_file}" in text


def test_the_rules_banner_goes_once_the_file_is_fixed(admin, shop, rules_file):
    rules_file.write_text(RULES_YAML + "\nsurprise: true\n")
    assert banner(admin.get("/").text, "rules") is not None

    rules_file.write_text(RULES_YAML)

    assert admin.get("/healthz").get_json()["status"] == "ok"
    for path in BANNER_PAGES:
        assert 'class="banner' not in admin.get(path).text, path


def test_the_rules_banner_is_escaped(admin, rules_file):
    rules_file.write_text(RULES_YAML + '\n"<script>alert(1)</script>": true\n')

    html = admin.get("/").text

    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in banner(html, "rules")


def test_signed_out_visitors_see_no_banner(client, store, rules_file):
    dead_event(store)
    rules_file.write_text(RULES_YAML + "\nsurprise: true\n")

    html = client.get("/signin").text

    assert 'class="banner' not in html
    assert "surprise" not in html


def test_dead_events_show_a_banner_with_their_count_and_a_link(reader, shop, store):
    dead_event(store, "C-D1")
    dead_event(store, "C-D2")

    for path in BANNER_PAGES:
        html = reader.get(path).text
        assert '<div class="banner banner-error" role="alert" id="delivery-banner">' in html, path
        assert '<a href="/events?status=dead" id="dead-events">2 dead events</a>' in html, path
        assert "behind" not in banner(html, "delivery")


def test_a_pending_event_older_than_the_threshold_shows_a_banner(reader, store, clock):
    pending_event(store, "C-P", NOW)
    clock.advance(seconds=DELIVERY_BEHIND_SECONDS + 5 * 60)

    html = reader.get("/customers").text

    assert '<div class="banner banner-warning" role="alert" id="delivery-banner">' in html
    assert "The oldest pending event has waited 15 min (more than 10 min)" in banner(html, "delivery")
    assert 'id="dead-events"' not in html


def test_fresh_pending_events_show_no_banner(reader, store, clock):
    pending_event(store, "C-P1", NOW - timedelta(minutes=3))
    pending_event(store, "C-P2", NOW)
    clock.advance(seconds=DELIVERY_BEHIND_SECONDS - 3 * 60)  # the older one has waited exactly the threshold

    for path in ("/", "/events", "/customers"):
        assert 'class="banner' not in reader.get(path).text, path


def test_pages_render_without_the_delivery_banner_when_the_queue_cannot_be_read(reader, store, rules_file,
                                                                                 monkeypatch, caplog):
    dead_event(store)
    rules_file.write_text(RULES_YAML + "\nsurprise: true\n")

    def broken(now: datetime) -> dict[str, float]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "event_counts", broken)

    with caplog.at_level(logging.ERROR, logger="worker.api.dashboard"):
        pages = [reader.get("/customers"), reader.get("/customers/C-NOBODY")]

    assert [page.status_code for page in pages] == [200, 404]
    for page in pages:
        assert banner(page.text, "delivery") is None
        assert banner(page.text, "rules") is not None
    assert "cannot read the event queue for the delivery banner" in caplog.text


def test_the_queue_is_read_once_per_page(reader, store, monkeypatch):
    calls = []
    counts = store.event_counts
    monkeypatch.setattr(store, "event_counts", lambda now: calls.append(now) or counts(now))

    for path in ("/", "/events", "/customers"):
        calls.clear()
        reader.get(path)
        assert len(calls) == 1, path


def test_events_of_statuses_without_a_style_still_render(admin, store, monkeypatch):
    dead = store.get_event(dead_event(store))
    listed_events = [dataclasses.replace(dead, id=f"evt_{status}", status=status)
                     for status in ("superseded", "held_out", "invented-later")]
    monkeypatch.setattr(store, "list_events", lambda status, limit, after=None: listed_events)
    monkeypatch.setattr(views, "STATUSES", ("pending", "delivered", "dead", "superseded", "held_out"))

    for path in ("/events", "/events?status=held_out", "/"):
        html = admin.get(path).text
        assert '<span class="status status-held_out">held out</span>' in html, path
        assert '<span class="status status-superseded">superseded</span>' in html, path
        assert '<span class="status status-invented-later">invented-later</span>' in html, path
    assert re.search(r'Held out <span class="count">0</span>', admin.get("/events").text)


def test_the_stylesheet_styles_banners_and_the_quiet_statuses(client):
    css = client.get("/static/dashboard.css").text

    for selector in (".banner", ".banner-error", ".banner-warning", ".status-superseded", ".status-held_out"):
        assert f"{selector} {{" in css, selector


# --- money in the rules' currency ------------------------------------------------------------------------------

@pytest.mark.parametrize("rules_text", [RULES_YAML + "currency: EUR\n"])
def test_money_is_shown_in_the_rules_currency_on_every_page(admin, shop):
    overview, table, one = admin.get("/").text, admin.get("/customers").text, admin.get("/customers/C-VIP").text

    assert cell(row(overview, "data-segment", "VIP"), "spend") == "€6,000.00"
    assert ">€6,000.00</text>" in overview, "the spend chart's value label"
    assert cell(row(table, "data-contact", "C-VIP"), "spend") == "€6,000.00"
    assert stat(one, "data-metric", "totalSpend") == "€6,000.00"


def test_the_api_keeps_plain_amounts(client, read_headers, shop):
    assert client.get("/api/customers/C-VIP", headers=read_headers).get_json()["data"]["metrics"][
        "totalSpend"] == "6000.00"


# --- export ----------------------------------------------------------------------------------------------------

def csv_rows(response: TestResponse) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_the_export_button_carries_the_table_filters(admin, shop):
    html = admin.get("/customers?segment=Active&frequency=Monthly&q=box").text

    assert 'id="export" href="/customers.csv?q=box&amp;segment=Active&amp;frequency=Monthly" download' in html


@pytest.mark.parametrize(("query", "expected", "filename"), [
    ("", ["C-ACT", "C-NEW", "C-OLD", "C-VIP"], "customers-all.csv"),
    ("segment=VIP", ["C-VIP"], "customers-vip.csv"),
    ("frequency=Monthly", ["C-ACT", "C-VIP"], "customers-monthly.csv"),
    ("segment=Active&frequency=Monthly", ["C-ACT"], "customers-active-monthly.csv"),
    ("q=boxworks", ["C-ACT", "C-VIP"], "customers-all.csv"),
    ("q=boxworks&segment=VIP", ["C-VIP"], "customers-vip.csv"),
])
def test_the_export_downloads_the_filtered_customers_as_csv(admin, shop, query, expected, filename):
    response = admin.get(f"/customers.csv?{query}")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
    rows = csv_rows(response)
    assert [r["contactID"] for r in rows] == expected
    assert list(rows[0]) == list(COLUMNS)


def test_the_export_is_the_apis_csv(admin, shop, client, read_headers):
    dashboard = admin.get("/customers.csv?segment=VIP").get_data(as_text=True)
    api = client.get("/api/customers.csv?segment=VIP", headers=read_headers).get_data(as_text=True)

    assert dashboard == api


def test_the_export_needs_a_session_and_the_api_export_still_needs_a_key(client, admin):
    assert client.get("/api/customers.csv").status_code == 401, "the session opens no API route"
    admin.post("/signout", data={"csrf_token": csrf_from(admin.get("/").text)})
    response = admin.get("/customers.csv")
    assert (response.status_code, response.headers["Location"]) == (302, "/signin")


def test_an_export_with_a_bad_filter_is_a_400_page(admin):
    response = admin.get("/customers.csv?segment=Gold")

    assert response.status_code == 400 and "Unknown segment" in response.text


# --- sorting, paging both ways, the total ----------------------------------------------------------------------

@pytest.fixture
def spenders(post_orders, make_orders) -> list[str]:
    """55 customers, spend 10.00 apart except that every fifth ties with the one before; ids by spend, highest
    first, ties by contactID descending (the whole order reversed)."""
    cents = {f"S-{n:03d}": (n - (n % 5 == 0)) * 1000 for n in range(1, 56)}
    post_orders([order for cid, c in cents.items() for order in make_orders(cid, 1, total=f"{c / 100:.2f}")])
    return sorted(cents, key=lambda cid: (cents[cid], cid), reverse=True)


def test_the_table_sorts_by_spend_both_ways(admin, spenders):
    highest = listed(admin.get("/customers?sort=-totalSpend").text)
    lowest = listed(admin.get("/customers?sort=totalSpend").text)

    assert highest == spenders[:50]
    assert lowest == spenders[::-1][:50]


def test_next_then_previous_comes_back_to_the_same_page(admin, spenders):
    first = admin.get("/customers?sort=-totalSpend").text
    next_href = re.search(r'rel="next" id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = admin.get(next_href).text
    previous_href = re.search(r'rel="prev" id="previous-page" href="([^"]+)"', second).group(1).replace("&amp;", "&")
    back = admin.get(previous_href).text

    assert listed(second) == spenders[50:]
    assert 'rel="next"' not in second
    assert listed(back) == spenders[:50]
    assert 'rel="prev"' not in back and 'rel="prev"' not in first
    assert 'rel="next"' in back


def test_column_headers_sort_and_say_how(admin, spenders):
    html = admin.get("/customers?sort=-totalSpend").text

    assert re.search(r'<th class="sortable num" aria-sort="descending"><a href="/customers\?sort=totalSpend"'
                     r' data-sort="totalSpend">Spend ▼</a>', html)
    assert 'aria-sort="none"><a href="/customers?sort=-lastOrderDate" data-sort="-lastOrderDate">Last order<' in html
    assert 'aria-sort="none"><a href="/customers?sort=lastOrderDate" data-sort="lastOrderDate">Days since<' in html


def test_days_since_the_last_order_sorts_as_the_last_order_reversed(admin, shop):
    fewest_days_first = listed(admin.get("/customers?sort=-lastOrderDate").text)
    html = admin.get("/customers?sort=-lastOrderDate").text

    assert fewest_days_first == ["C-NEW", "C-VIP", "C-ACT", "C-OLD"]
    assert [cell(row(html, "data-contact", c), "days-since") for c in fewest_days_first] == ["5", "20", "30", "140"]
    assert ('aria-sort="ascending"><a href="/customers?sort=lastOrderDate" data-sort="lastOrderDate">'
            'Days since ▲') in html


def test_the_table_says_how_many_customers_the_filter_has(admin, shop):
    assert re.search(r'id="customers-count">4</span> customers<', admin.get("/customers").text)
    assert re.search(r'id="customers-count">2</span> customers buying Monthly', admin.get(
        "/customers?frequency=Monthly").text)
    assert re.search(r'id="customers-count">1</span> customer in VIP<', admin.get("/customers?segment=VIP").text)
    assert re.search(r'id="customers-count">2</span> matches', admin.get("/customers?q=boxworks").text)


def test_search_results_follow_the_sort(admin, shop):
    assert listed(admin.get("/customers?q=example&sort=-totalSpend").text) == ["C-VIP", "C-ACT", "C-NEW", "C-OLD"]


@pytest.mark.parametrize("query", ["sort=spend", "sort=-totalSpend&after=not-a-cursor", "sort=totalSpend&before=UC0w"])
def test_a_bad_sort_or_page_is_a_400_page(admin, query):
    response = admin.get(f"/customers?{query}")

    assert response.status_code == 400
    assert response.content_type.startswith("text/html")


# --- a customer's RFM and events -------------------------------------------------------------------------------

def test_the_customer_page_shows_rfm_scores_once_the_boundaries_exist(admin, shop, store, rules, read_headers):
    assert "No RFM scores yet" in admin.get("/customers/C-VIP").text
    recompute_rfm(store, rules, NOW)

    for contact_id in ("C-VIP", "C-OLD"):
        html = admin.get(f"/customers/{contact_id}").text
        api = admin.get(f"/api/customers/{contact_id}", headers=read_headers).get_json()["data"]["metrics"]["rfm"]
        assert [stat(html, "data-rfm", s) for s in ("group", "recency", "frequency", "monetary")] == [
            api["group"], str(api["recency"]), str(api["frequency"]), str(api["monetary"])]
    assert stat(admin.get("/customers/C-VIP").text, "data-rfm", "monetary") > stat(html, "data-rfm", "monetary"), \
        "the biggest spender outscores the smallest"


def test_the_customer_page_lists_its_events_newest_first_with_replay(admin, store):
    dead = dead_event(store, "C-EV")
    later = NewEvent("evt_c-ev-vip", "C-EV", "vip", "n8n", "segment.entered", NOW - timedelta(minutes=5), "{}")
    record_transition(store, "C-EV", "VIP", NOW - timedelta(minutes=5), events=[later])

    html = admin.get("/customers/C-EV").text

    section = re.search(r'<section class="card" id="customer-events">(.*?)</section>', html, re.S).group(1)
    assert re.findall(r'<tr data-event="([^"]+)"', section) == ["evt_c-ev-vip", dead]
    dead_row = row(section, "data-event", dead)
    assert cell(dead_row, "campaign") == "welcome" and cell(dead_row, "attempts") == "1"
    assert "HTTP 410 Gone" in dead_row and cell(dead_row, "created") == "2026-02-21 10:00 UTC"
    assert ">Replay</button>" in dead_row and "Replay" not in row(section, "data-event", "evt_c-ev-vip")


def test_replay_from_the_customer_page_returns_to_that_customer(admin, store):
    dead = dead_event(store, "C-EV")
    token = csrf_from(admin.get("/customers/C-EV").text)

    response = admin.post(f"/events/{dead}/replay", data={"csrf_token": token, "back": "customer"})

    assert response.headers["Location"] == "/customers/C-EV"
    assert store.get_event(dead).status == "pending"


def test_a_read_key_sees_a_customers_events_without_replay(reader, store):
    dead = dead_event(store, "C-EV")

    html = reader.get("/customers/C-EV").text

    assert dead in html and "Replay</button>" not in html


# --- bulk replay -----------------------------------------------------------------------------------------------

def dead_of(store: Store, contact_id: str, campaign: str) -> str:
    event = NewEvent(id=f"evt_{contact_id.lower()}_{campaign}", contact_id=contact_id, campaign=campaign,
                     webhook="n8n", type="segment.entered", occurred_at=NOW - timedelta(hours=2), body="{}")
    record_transition(store, contact_id, "New", NOW - timedelta(hours=2), events=[event])
    claimed = store.claim_due_events(NOW, 100, "test", 60)
    store.release_claims([e.id for e in claimed if e.id != event.id], NOW)
    store.record_failed([event.id], NOW - timedelta(hours=1), 410, "HTTP 410 Gone", 12, None)
    return event.id


@pytest.fixture
def dead_mix(store) -> Store:
    for contact_id, campaign in (("C-1", "vip"), ("C-2", "vip"), ("C-3", "welcome")):
        dead_of(store, contact_id, campaign)
    return store


def test_the_events_page_offers_a_bulk_replay_by_campaign_to_a_write_key(admin, dead_mix):
    html = admin.get("/events?status=dead").text

    form = re.search(r'<form class="filters bulk-replay" method="get" action="/events/replay" id="bulk-replay">'
                     r'(.*?)</form>', html, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)">', form) == ["", "welcome", "vip", "win-back"]


def test_a_read_key_gets_no_bulk_replay(reader, dead_mix):
    assert 'id="bulk-replay"' not in reader.get("/events?status=dead").text
    assert reader.get("/events/replay?campaign=vip").status_code == 403
    token = csrf_from(reader.get("/").text)
    assert reader.post("/events/replay", data={"csrf_token": token}).status_code == 403
    assert dead_mix.count_events("dead") == 3


def test_the_bulk_replay_confirmation_says_how_many(admin, dead_mix):
    vip = admin.get("/events/replay?campaign=vip").text
    every = admin.get("/events/replay").text
    none = admin.get("/events/replay?campaign=win-back").text

    assert "2 dead events</strong> of campaign <code>vip</code> will be pending again" in vip
    assert ">Replay 2 events</button>" in vip
    assert "3 dead events</strong> of every campaign" in every
    assert "No dead events of campaign <code>win-back</code>: nothing to replay." in none
    assert dead_mix.count_events("dead") == 3, "confirming changes nothing"


def test_confirming_a_bulk_replay_queues_the_campaigns_dead_events(admin, dead_mix, clock):
    page = admin.get("/events/replay?campaign=vip").text

    response = admin.post("/events/replay", data={"csrf_token": csrf_from(page), "campaign": "vip"})

    assert response.headers["Location"] == "/events?status=dead"
    assert {e.id: e.status for e in dead_mix.list_events(None, 10)} == {
        "evt_c-1_vip": "pending", "evt_c-2_vip": "pending", "evt_c-3_welcome": "dead"}
    assert dead_mix.get_event("evt_c-1_vip").next_attempt_at == clock.now
    assert "2 dead events of campaign vip pending again" in admin.get("/events?status=dead").text


@pytest.mark.parametrize("form", [{}, {"csrf_token": ""}, {"csrf_token": "forged-token"}])
def test_a_bulk_replay_without_the_session_csrf_token_is_refused(admin, dead_mix, form):
    response = admin.post("/events/replay", data={**form, "campaign": "vip"})

    assert response.status_code == 400 and "expired" in response.text
    assert dead_mix.count_events("dead") == 3


# --- delivery disabled -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [{"N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook/segment-events"}])
def test_delivery_disabled_shows_a_banner_with_the_reason_on_every_page(admin, shop):
    problem = admin.get("/healthz").get_json()["deliveryProblem"]
    assert "WEBHOOK_SECRET" in problem

    for path in BANNER_PAGES:
        html = admin.get(path).text
        assert f'<pre class="banner-detail">{escape(problem)}</pre>' in html, path
        assert "Webhook delivery is disabled." in banner(html, "delivery-disabled"), path


def test_no_delivery_disabled_banner_while_delivery_has_its_settings(admin, shop):
    for path in BANNER_PAGES:
        assert banner(admin.get(path).text, "delivery-disabled") is None, path


# --- narrow screens --------------------------------------------------------------------------------------------

def test_every_table_sits_in_a_scrolling_box(admin, shop, store):
    dead_event(store)
    for path in ("/", "/customers", "/customers/C-VIP", "/events"):
        html = admin.get(path).text
        assert html.count("<table") == html.count('<div class="scroll">\n  <table') + html.count(
            '<div class="scroll">\n<table') + html.count('<div class="scroll">\n    <table'), path


# --- the browser suite never skips in CI -----------------------------------------------------------------------

def run_browser_suite(environment: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **environment, "SEGMENT_WORKER_CHROMIUM": "/nonexistent/chromium"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           "tests/test_dashboard_browser.py", "-k", "overflow"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_chromium_the_browser_tests_skip_saying_how_to_get_it():
    result = run_browser_suite({"CI": ""})

    assert result.returncode == 0, result.stdout
    assert "skipped" in result.stdout.lower() and "apt-get install chromium" in result.stdout


def test_without_chromium_under_ci_the_browser_tests_fail_instead_of_skipping():
    result = run_browser_suite({"CI": "true"})

    assert result.returncode == 1, result.stdout
    assert "error" in result.stdout.lower() and "skipped" not in result.stdout.lower()
    assert "CI never skips the browser tests" in result.stdout
