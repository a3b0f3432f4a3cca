"""API keys: every /api route is closed without a valid key, read keys cannot write, keys never reach the log."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import pytest

from tests.conftest import ADMIN_KEY, READ_KEY
from worker.api import create_app

WRITE_ROUTES = {("POST", "/api/orders"), ("POST", "/api/events/<event_id>/replay")}


def api_requests(app) -> list[tuple[str, str]]:
    """(method, concrete URL) for every method of every rule under /api, placeholders filled in."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "x", rule.rule)
        found += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_route_table_covers_the_documented_routes(app):
    rules = {(method, rule.rule) for rule in app.url_map.iter_rules() for method in rule.methods}

    assert {("GET", "/api/customers"), ("GET", "/api/customers/<contact_id>"), ("GET", "/api/segments"),
            ("GET", "/api/customers/<contact_id>/transitions"), ("GET", "/api/events"),
            ("GET", "/api/events/<event_id>"), ("GET", "/api/openapi.json"), *WRITE_ROUTES} <= rules


@pytest.mark.parametrize("headers", [
    {},
    {"X-API-Key": "wrong"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Basic {READ_KEY}"},
    {"Authorization": "Bearer "},
    {"X-API-Key": READ_KEY[:-1]},
], ids=["none", "bad-x-api-key", "bad-bearer", "not-bearer", "empty-bearer", "prefix-of-a-key"])
def test_every_api_route_answers_401_without_a_valid_key(app, client, headers):
    for number, (method, url) in enumerate(api_requests(app)):
        # An address of its own per route: more wrong keys than the slow-down allows come from this test.
        response = client.open(url, method=method, headers=headers, json=[],
                               environ_base={"REMOTE_ADDR": f"10.0.{number // 250}.{number % 250 + 1}"})

        assert response.status_code == 401, (method, url)
        assert "API key" in response.get_json()["error"], (method, url)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_api_paths_answer_401_without_a_key_and_404_with_one(client, read_headers):
    assert client.get("/api/nothing-here").status_code == 401
    response = client.get("/api/nothing-here", headers=read_headers)
    assert response.status_code == 404
    assert "error" in response.get_json()


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {READ_KEY}"},
    {"Authorization": f"bearer {READ_KEY}"},
    {"X-API-Key": READ_KEY},
    {"X-API-Key": ADMIN_KEY},
], ids=["bearer", "bearer-lowercase", "x-api-key", "admin-key-reads"])
def test_a_valid_key_reads_in_either_header(client, headers):
    assert client.get("/api/customers", headers=headers).status_code == 200


def test_a_read_key_cannot_write_while_admin_keys_are_set(client, read_headers, make_orders):
    orders = client.post("/api/orders", json=make_orders("C-1"), headers=read_headers)
    replay = client.post("/api/events/x/replay", headers=read_headers)

    assert orders.status_code == replay.status_code == 403
    assert orders.get_json() == {"error": "this API key may read but not write"}
    assert client.get("/api/customers/C-1", headers=read_headers).status_code == 404


def test_an_admin_key_writes(client, admin_headers, make_orders):
    assert client.post("/api/orders", json=make_orders("C-1"), headers=admin_headers).status_code == 200


def test_any_key_may_write_while_no_admin_keys_are_set(settings, store, rules_source, clock, make_orders):
    app = create_app(replace(settings, admin_api_keys=()), store=store, rules_source=rules_source, clock=clock)

    response = app.test_client().post("/api/orders", json=make_orders("C-1"), headers={"X-API-Key": READ_KEY})

    assert response.status_code == 200


def test_without_configured_keys_everything_is_refused_and_the_log_says_why(
        settings, store, rules_source, clock, caplog):
    with caplog.at_level(logging.WARNING):
        app = create_app(replace(settings, api_keys=(), admin_api_keys=()), store=store,
                         rules_source=rules_source, clock=clock)
    client = app.test_client()

    assert client.get("/api/customers", headers={"X-API-Key": ""}).status_code == 401
    assert client.get("/api/customers", headers={"Authorization": "Bearer anything"}).status_code == 401
    assert [r.getMessage() for r in caplog.records if "API_KEYS" in r.getMessage()] == [
        "API_KEYS is not set: every /api request is refused with 401 until keys are configured"]


def test_keys_never_reach_the_log(client, read_headers, admin_headers, make_orders, caplog):
    with caplog.at_level(logging.DEBUG):
        client.get("/api/customers", headers=read_headers)
        client.get("/api/customers", headers={"X-API-Key": "a-wrong-key-value"})
        client.post("/api/orders", json=make_orders("C-1"), headers=read_headers)
        client.post("/api/orders", json=make_orders("C-1"), headers=admin_headers)

    for secret in (READ_KEY, ADMIN_KEY, "a-wrong-key-value"):
        assert secret not in caplog.text


def test_healthz_needs_no_key(client):
    assert client.get("/healthz").status_code == 200


def test_metrics_needs_a_key_unless_public(settings, store, rules_source, clock, read_headers):
    closed = create_app(settings, store=store, rules_source=rules_source, clock=clock).test_client()
    public_settings = replace(settings, env={**settings.env, "METRICS_PUBLIC": "true"})
    public = create_app(public_settings, store=store, rules_source=rules_source, clock=clock).test_client()

    assert closed.get("/metrics").status_code == 401
    assert closed.get("/metrics", headers=read_headers).status_code == 200
    assert public.get("/metrics").status_code == 200
    assert public.get("/api/customers").status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/api/customers", "/api/nothing-here", "/metrics"])
def test_security_headers_are_on_every_response(client, read_headers, path):
    response = client.get(path, headers=read_headers)

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
