"""The OpenAPI document is valid, lists every route, and real responses match the schemas it publishes."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from tests.conftest import NOW, RULES_YAML, make_order
from worker.evaluate import evaluate_due


@pytest.fixture
def document(client, read_headers) -> dict[str, Any]:
    response = client.get("/api/openapi.json", headers=read_headers)
    assert response.status_code == 200
    return response.get_json()


def normalized(path: str) -> str:
    return re.sub(r"<[^<>]+>|\{[^{}]+\}", "{}", path)


class ResponseChecker:
    """Validates responses against the document and remembers which documented answers were seen."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(self, method: str, path: str, response) -> None:
        status = str(response.status_code)
        answer = self.document["paths"][path][method.lower()]["responses"][status]
        if "$ref" in answer:
            answer = self.document["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
        if "content" not in answer:  # 204: nothing
            assert response.get_data() == b""
        elif "application/json" not in answer["content"]:
            assert response.mimetype in answer["content"]
        else:
            schema = {**answer["content"]["application/json"]["schema"], "components": self.document["components"]}
            Draft202012Validator(schema).validate(response.get_json())
        self.seen.add((method.lower(), path, status))


def test_the_document_is_valid_openapi_3_1(document):
    validate_spec(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_is_documented(app, document):
    # The dashboard's HTML pages (worker/api/dashboard.py) are for people, not part of the API.
    routes = {(method.lower(), normalized(rule.rule)) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.endpoint != "static" and not rule.endpoint.startswith("dashboard.")}
    documented = {(method, normalized(path)) for path, item in document["paths"].items() for method in item}

    assert routes == documented


def test_query_choices_come_from_the_rules(document):
    parameters = document["components"]["parameters"]

    assert parameters["segment"]["schema"]["enum"] == ["VIP", "Dormant", "New", "Active"]
    assert parameters["purchaseFrequency"]["schema"]["enum"] == ["Weekly", "Monthly", "Quarterly", "Occasional",
                                                                 "One-time", "None"]


def test_real_responses_match_the_documented_schemas(client, read_headers, admin_headers, store, rules, clock,
                                                     document):
    check = ResponseChecker(document)
    evaluate_due(store, rules, clock())
    orders = [make_order("C-1", "ORD-1", NOW - timedelta(days=40), "1000.25", email="ann@example.com", name="Ann"),
              make_order("C-1", "ORD-2", NOW - timedelta(days=10), "245.25"),
              make_order("C-2", "ORD-3", NOW - timedelta(days=1), "7000.00", status="paid")]

    check("POST", "/api/orders", client.post("/api/orders", json=orders, headers=admin_headers))
    check("POST", "/api/orders", client.post("/api/orders", json=[{"total": "x"}], headers=admin_headers))
    check("POST", "/api/orders", client.post("/api/orders", json=orders, headers=read_headers))
    check("POST", "/api/orders", client.post("/api/orders", data=b"[" + b" " * 6_000_000 + b"]",
                                             content_type="application/json", headers=admin_headers))
    check("GET", "/api/customers", client.get("/api/customers", headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers?limit=1&asOf=2026-06-01", headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers?limit=0", headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers?sort=-totalSpend&limit=1", headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers?sort=lastOrderDate&asOf=2026-06-01",
                                              headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers?sort=spend", headers=read_headers))
    check("GET", "/api/customers", client.get("/api/customers"))
    check("GET", "/api/customers.csv", client.get("/api/customers.csv?segment=VIP", headers=read_headers))
    check("GET", "/api/customers.csv", client.get("/api/customers.csv?segment=Gold", headers=read_headers))
    check("GET", "/api/customers/{contactID}", client.get("/api/customers/C-1", headers=read_headers))
    check("GET", "/api/customers/{contactID}", client.get("/api/customers/nobody", headers=read_headers))
    check("GET", "/api/customers/{contactID}/transitions",
          client.get("/api/customers/C-2/transitions", headers=read_headers))
    check("GET", "/api/customers/{contactID}/events", client.get("/api/customers/C-2/events", headers=read_headers))
    check("GET", "/api/customers/{contactID}/events", client.get("/api/customers/nobody/events",
                                                                 headers=read_headers))
    check("GET", "/api/customers/{contactID}/events", client.get("/api/customers/C-2/events?limit=0",
                                                                 headers=read_headers))
    check("GET", "/api/segments", client.get("/api/segments", headers=read_headers))
    check("GET", "/api/segments", client.get("/api/segments?asOf=2026-06-01", headers=read_headers))
    events = client.get("/api/events", headers=read_headers)
    check("GET", "/api/events", events)
    event_id = events.get_json()["data"][0]["id"]
    store.claim_due_events(NOW, 10, "test", 60)
    store.record_failed([event_id], NOW, None, "connection refused", 3, None)
    check("GET", "/api/events/{eventId}", client.get(f"/api/events/{event_id}", headers=read_headers))
    check("POST", "/api/events/{eventId}/replay", client.post(f"/api/events/{event_id}/replay", headers=admin_headers))
    check("POST", "/api/events/{eventId}/replay", client.post("/api/events/nope/replay", headers=admin_headers))
    check("POST", "/api/events/replay", client.post("/api/events/replay", json={"campaign": "vip"},
                                                    headers=admin_headers))
    check("POST", "/api/events/replay", client.post("/api/events/replay", headers=admin_headers))
    check("POST", "/api/events/replay", client.post("/api/events/replay", json={"status": "superseded"},
                                                    headers=admin_headers))
    check("POST", "/api/events/replay", client.post("/api/events/replay", json={}, headers=read_headers))
    candidate = RULES_YAML.replace("gt: 5000", "gt: 3000")
    check("POST", "/api/rules/preview", client.post("/api/rules/preview", data=candidate, headers=admin_headers))
    check("POST", "/api/rules/preview", client.post("/api/rules/preview", data="segments: [", headers=admin_headers))
    check("GET", "/api/campaigns", client.get("/api/campaigns", headers=read_headers))
    check("GET", "/api/campaigns/{campaign}/outcomes", client.get("/api/campaigns/vip/outcomes", headers=read_headers))
    check("GET", "/api/campaigns/{campaign}/outcomes", client.get("/api/campaigns/nope/outcomes", headers=read_headers))
    check("GET", "/api/campaigns/{campaign}/outcomes", client.get("/api/campaigns/vip/outcomes?effect=x",
                                                                 headers=read_headers))
    check("GET", "/api/experiments", client.get("/api/experiments", headers=read_headers))
    check("GET", "/api/experiments/{experiment}/outcomes", client.get("/api/experiments/nope/outcomes",
                                                                      headers=read_headers))
    created = client.post("/api/webhooks", json={"url": "https://n8n.example.com/webhook/x", "campaigns": ["vip"],
                                                 "description": "n8n"}, headers=admin_headers)
    check("POST", "/api/webhooks", created)
    check("POST", "/api/webhooks", client.post("/api/webhooks", json={"url": "ftp://x", "campaigns": ["vip"]},
                                               headers=admin_headers))
    check("POST", "/api/webhooks", client.post("/api/webhooks", json={}, headers=read_headers))
    check("GET", "/api/webhooks", client.get("/api/webhooks", headers=admin_headers))
    check("GET", "/api/webhooks", client.get("/api/webhooks", headers=read_headers))
    check("DELETE", "/api/webhooks/{subscriptionId}",
          client.delete(f"/api/webhooks/{created.get_json()['id']}", headers=admin_headers))
    check("DELETE", "/api/webhooks/{subscriptionId}", client.delete("/api/webhooks/nope", headers=admin_headers))
    check("GET", "/api/openapi.json", client.get("/api/openapi.json", headers=read_headers))
    check("GET", "/healthz", client.get("/healthz"))
    check("GET", "/metrics", client.get("/metrics", headers=read_headers))

    every_operation = {(method, path) for path, item in document["paths"].items() for method in item}
    assert {(method, path) for method, path, _ in check.seen} == every_operation
    assert {status for _, _, status in check.seen} >= {"200", "202", "400", "401", "403", "404", "413"}
