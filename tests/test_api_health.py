"""/healthz and /metrics: rules status, store reachability, Prometheus gauges and request counts per app."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta

from tests.conftest import NOW, WEBHOOK_SECRET
from worker.api import create_app
from worker.rules_file import RulesSource


def test_healthz_reports_the_rules_in_force(client, rules):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["rulesVersion"] == rules.rules_version
    assert body["rulesError"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["rulesLoadedAt"])
    assert body["database"] == "ok"


def test_healthz_is_degraded_while_a_refused_rules_file_is_ignored(client, rules, rules_file):
    rules_file.write_text(rules_file.read_text() + "\nsurprise: true\n")

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["rulesVersion"] == rules.rules_version
    assert "rules.yaml" in body["rulesError"] and "surprise" in body["rulesError"]


def test_healthz_is_503_when_the_store_does_not_answer(client, store, monkeypatch):
    def broken(key: str) -> str | None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "get_meta", broken)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.get_json()["database"] == "unavailable"
    assert "disk I/O" not in response.get_data(as_text=True)


def test_healthz_never_shows_secrets_or_webhook_urls(client):
    text = client.get("/healthz").get_data(as_text=True)

    assert WEBHOOK_SECRET not in text
    assert "127.0.0.1" not in text


def test_metrics_show_customers_per_segment_and_the_outbox(client, read_headers, post_orders, make_orders):
    post_orders(make_orders("C-1", first=NOW - timedelta(days=2)) + make_orders("C-2", total="6000.00"))

    text = client.get("/metrics", headers=read_headers).get_data(as_text=True)

    assert 'segment_worker_customers{segment="New"} 1.0' in text
    assert 'segment_worker_customers{segment="VIP"} 1.0' in text
    assert 'segment_worker_customers{segment="Dormant"} 0.0' in text
    assert "segment_worker_events_pending 0.0" in text
    assert "segment_worker_events_dead 0.0" in text
    assert "segment_worker_events_oldest_pending_age_seconds 0.0" in text


def test_metrics_count_requests_by_route_not_by_path(client, read_headers):
    client.get("/api/customers/C-1", headers=read_headers)
    client.get("/api/customers/C-2", headers=read_headers)
    client.get("/api/customers")

    text = client.get("/metrics", headers=read_headers).get_data(as_text=True)

    assert ('segment_worker_http_requests_total{method="GET",route="/api/customers/<contact_id>",status="404"} 2.0'
            in text)
    assert 'segment_worker_http_requests_total{method="GET",route="/api/customers",status="401"} 1.0' in text
    assert "C-1" not in text


def test_each_app_counts_its_own_requests(client, read_headers, settings, store, rules_source, clock):
    client.get("/api/customers", headers=read_headers)
    other = create_app(settings, store=store, rules_source=rules_source, clock=clock).test_client()

    text = other.get("/metrics", headers=read_headers).get_data(as_text=True)

    assert 'route="/api/customers"' not in text


def delivery_disabled_client(settings, store, rules_file, clock):
    """The app with rules whose webhook needs WEBHOOK_SECRET, which the environment lacks."""
    source = RulesSource(rules_file, {"N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook"})
    return create_app(settings, store=store, rules_source=source, clock=clock).test_client()


def test_healthz_is_degraded_but_200_while_delivery_is_disabled_and_says_why(settings, store, rules_file, clock):
    response = delivery_disabled_client(settings, store, rules_file, clock).get("/healthz")

    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["delivery"], body["rulesError"]) == ("degraded", "disabled", None)
    assert body["deliveryProblem"].startswith("delivery is disabled: WEBHOOK_SECRET is not set (needed by webhook n8n)")


def test_healthz_says_delivery_is_ok_when_every_webhook_has_its_settings(client):
    body = client.get("/healthz").get_json()

    assert (body["status"], body["delivery"], body["deliveryProblem"]) == ("ok", "ok", None)


def test_metrics_gauge_delivery_disabled(client, read_headers, settings, store, rules_file, clock):
    disabled = delivery_disabled_client(settings, store, rules_file, clock)

    assert "segment_worker_delivery_disabled 1.0" in disabled.get("/metrics", headers=read_headers).text
    assert "segment_worker_delivery_disabled 0.0" in client.get("/metrics", headers=read_headers).text
