"""Dashboard sessions end when they should (sign-out in any process, idle time, the absolute limit), wrong keys from
one address are slowed down, and keys too short to be safe are refused at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from tests.conftest import ADMIN_KEY, NOW, READ_KEY
from tests.dashboard_helpers import csrf_from, sign_in
from tests.test_dashboard import dead_event
from worker.api import create_app
from worker.api.auth import FAILURE_LIMIT, FAILURE_WINDOW_SECONDS, KeyFailures
from worker.api.dashboard import SESSION_HOURS, SESSION_IDLE_MINUTES
from worker.settings import MIN_API_KEY_CHARS, Settings, SettingsError
from worker.store import open_store
from worker.store.base import Store

ELSEWHERE = {"REMOTE_ADDR": "192.0.2.7"}




@pytest.fixture
def other_store(database_url: str) -> Iterator[Store]:
    """A second handle on the same SQLite file: what another gunicorn process sees."""
    opened = open_store(database_url)
    yield opened
    opened.close()


@pytest.fixture
def other_client(settings, other_store, rules_source, clock) -> FlaskClient:
    """The dashboard as another worker process serves it: its own app, the same store and keys."""
    return create_app(settings, store=other_store, rules_source=rules_source, clock=clock).test_client()


def sign_out(client: FlaskClient) -> None:
    token = csrf_from(client.get("/").text)
    assert client.post("/signout", data={"csrf_token": token}).headers["Location"] == "/signin"


def wrong_keys(client: FlaskClient, count: int) -> list[int]:
    return [client.get("/api/customers", headers={"X-API-Key": f"wrong-key-{n:020d}"}).status_code
            for n in range(count)]


# --- sign-out ---------------------------------------------------------------------------------------------------

def test_a_cookie_kept_after_sign_out_is_refused(admin, store):
    dead = dead_event(store)
    token = csrf_from(admin.get("/").text)
    kept = admin.get_cookie("session").value

    sign_out(admin)
    admin.set_cookie("session", kept)

    page = admin.get("/")
    assert (page.status_code, page.headers["Location"]) == (302, "/signin")
    replay = admin.post(f"/events/{dead}/replay", data={"csrf_token": token, "back": "overview"})
    assert (replay.status_code, replay.headers["Location"]) == (302, "/signin")
    assert store.get_event(dead).status == "dead"


def test_a_refused_cookie_says_why_on_the_sign_in_page(admin):
    kept = admin.get_cookie("session").value
    sign_out(admin)
    admin.set_cookie("session", kept)

    page = admin.get("/", follow_redirects=True)

    assert "This session was signed out; sign in again." in page.text
    assert 'name="api_key"' in page.text


def test_signing_out_in_one_process_ends_the_session_in_another(admin, other_client):
    kept = admin.get_cookie("session").value
    other_client.set_cookie("session", kept)
    assert other_client.get("/").status_code == 200

    sign_out(other_client)
    admin.set_cookie("session", kept)
    other_client.set_cookie("session", kept)

    assert admin.get("/").status_code == 302
    assert other_client.get("/").status_code == 302


def test_a_cookie_from_one_process_is_refused_by_another_after_sign_out_there(admin, other_client):
    kept = admin.get_cookie("session").value

    sign_out(admin)
    other_client.set_cookie("session", kept)

    assert other_client.get("/").status_code == 302


def test_signing_in_again_after_sign_out_works_at_the_same_moment(admin):
    sign_out(admin)

    assert sign_in(admin, ADMIN_KEY).status_code == 302
    assert admin.get("/").status_code == 200


def test_signing_out_ends_the_other_sessions_of_that_key_only(app, admin):
    same_key, other_key = app.test_client(), app.test_client()
    sign_in(same_key, ADMIN_KEY)
    sign_in(other_key, READ_KEY)

    sign_out(admin)

    assert same_key.get("/").status_code == 302
    assert other_key.get("/").status_code == 200


# --- idle and absolute limits -------------------------------------------------------------------------------------

def test_an_idle_session_expires(admin, clock):
    clock.advance(minutes=SESSION_IDLE_MINUTES + 1)

    page = admin.get("/")

    assert (page.status_code, page.headers["Location"]) == (302, "/signin")
    assert f"Signed out after {SESSION_IDLE_MINUTES} minutes without activity" in admin.get("/signin").text
    assert admin.get("/").status_code == 302  # the session is gone, not just refused once


def test_a_session_idle_for_exactly_the_limit_still_lasts(admin, clock):
    clock.advance(minutes=SESSION_IDLE_MINUTES)

    assert admin.get("/").status_code == 200


def test_activity_keeps_a_session_alive(admin, clock):
    for _ in range(6):
        clock.advance(minutes=20)
        assert admin.get("/events").status_code == 200

    assert clock.now - NOW == timedelta(minutes=120)


def test_a_busy_session_still_ends_hours_after_sign_in(admin, clock):
    step = timedelta(minutes=25)
    while clock.now + step - NOW <= timedelta(hours=SESSION_HOURS):
        clock.advance(minutes=25)
        assert admin.get("/").status_code == 200

    clock.advance(minutes=25)

    assert admin.get("/").status_code == 302
    assert f"Signed out {SESSION_HOURS} hours after signing in" in admin.get("/signin").text


def test_pages_write_nothing_to_the_store(admin, store, clock, monkeypatch):
    writes = []
    monkeypatch.setattr(store, "set_meta", lambda key, value: writes.append(key))

    for _ in range(5):
        clock.advance(minutes=10)
        assert admin.get("/").status_code == 200

    assert [key for key in writes if key.startswith("dashboard")] == []


# --- wrong keys ---------------------------------------------------------------------------------------------------

def test_repeated_wrong_keys_get_429_with_retry_after(client):
    assert wrong_keys(client, FAILURE_LIMIT) == [401] * FAILURE_LIMIT

    refused = client.get("/api/customers", headers={"X-API-Key": "another-wrong-key-0123456"})

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(FAILURE_WINDOW_SECONDS)
    assert "too many wrong API keys" in refused.get_json()["error"]


def test_a_slowed_address_is_refused_even_with_a_right_key(client, read_headers):
    wrong_keys(client, FAILURE_LIMIT)

    assert client.get("/api/customers", headers=read_headers).status_code == 429


def test_a_right_key_from_another_address_still_works(client, read_headers):
    wrong_keys(client, FAILURE_LIMIT)

    assert client.get("/api/customers", headers=read_headers, environ_base=ELSEWHERE).status_code == 200


def test_the_slow_down_ends_when_the_window_passes(client, clock, read_headers):
    wrong_keys(client, FAILURE_LIMIT)
    clock.advance(seconds=FAILURE_WINDOW_SECONDS - 20)
    assert client.get("/api/customers", headers=read_headers).headers["Retry-After"] == "20"

    clock.advance(seconds=20)

    assert client.get("/api/customers", headers=read_headers).status_code == 200
    assert wrong_keys(client, 1) == [401]


def test_right_keys_and_missing_keys_do_not_count(client, read_headers):
    for _ in range(3 * FAILURE_LIMIT):
        assert client.get("/api/customers", headers=read_headers).status_code == 200
        assert client.get("/api/customers").status_code == 401

    assert wrong_keys(client, FAILURE_LIMIT - 1) == [401] * (FAILURE_LIMIT - 1)
    assert client.get("/api/customers", headers=read_headers).status_code == 200


def test_wrong_keys_spread_beyond_the_window_are_not_slowed(client, clock):
    assert wrong_keys(client, FAILURE_LIMIT - 1) == [401] * (FAILURE_LIMIT - 1)
    clock.advance(seconds=FAILURE_WINDOW_SECONDS)

    assert wrong_keys(client, FAILURE_LIMIT - 1) == [401] * (FAILURE_LIMIT - 1)


def test_wrong_dashboard_sign_ins_count_with_the_api(client):
    for _ in range(FAILURE_LIMIT):
        assert sign_in(client, "not-the-key-0123456789").status_code == 401

    refused = sign_in(client, ADMIN_KEY)

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(FAILURE_WINDOW_SECONDS)
    assert "Too many wrong keys came from this address" in refused.text
    assert client.get("/").status_code == 302
    assert client.get("/api/customers", headers={"X-API-Key": READ_KEY}).status_code == 429


def test_the_slow_down_logs_the_address_but_no_key(client, caplog):
    with caplog.at_level(logging.INFO):
        wrong_keys(client, FAILURE_LIMIT + 2)

    blocked = [r.getMessage() for r in caplog.records if "wrong API keys from" in r.getMessage()]
    assert blocked == [f"{FAILURE_LIMIT} wrong API keys from 127.0.0.1 within 60 s: refusing it for 60 s"]
    assert "wrong-key-" not in caplog.text


def test_the_failure_count_forgets_the_least_recent_addresses_beyond_its_size():
    failures = KeyFailures(limit=2, window=timedelta(minutes=1), max_addresses=3)
    failures.record("198.51.100.1", NOW)
    failures.record("198.51.100.1", NOW)
    assert failures.retry_after("198.51.100.1", NOW) == 60

    for address in ("198.51.100.2", "198.51.100.3", "198.51.100.4"):
        failures.record(address, NOW)

    assert failures.retry_after("198.51.100.1", NOW) is None
    assert len(failures._tallies) == 3


# --- key length ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["API_KEYS", "ADMIN_API_KEYS"])
def test_short_keys_are_refused_at_start_up(name):
    short = "hunter2-hunter2-xyz"  # one character short

    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: f"{'a' * MIN_API_KEY_CHARS}, {short}"})

    message = str(refused.value)
    assert message.startswith(f"{name}:")
    assert f"at least {MIN_API_KEY_CHARS} characters" in message
    assert "key 2 of 2" in message
    assert short not in message


def test_keys_of_the_minimum_length_are_accepted():
    settings = Settings.from_env({"API_KEYS": READ_KEY, "ADMIN_API_KEYS": "a" * MIN_API_KEY_CHARS})

    assert settings.api_keys == (READ_KEY,)
    assert len(ADMIN_KEY) >= MIN_API_KEY_CHARS and len(READ_KEY) >= MIN_API_KEY_CHARS
