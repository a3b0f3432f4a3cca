"""Webhook subscriptions (POST/GET/DELETE /api/webhooks): the API's keys and validation, and delivery to two
subscriptions beside a rules.yaml webhook, each event signed with its destination's own secret and verified by a
real receiver on 127.0.0.1 with the standardwebhooks library."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from rules import Rules
from tests.conftest import ADMIN_KEY, READ_KEY
from tests.outbox_helpers import ENV, SECRET, T0, WELCOME_AS_QUEUED, drain, ingest, order_json, rules_text
from tests.receiver import Receiver
from worker.delivery import DeliveryRun, Senders
from worker.evaluate import evaluate_due
from worker.rules_file import RulesSource
from worker.store.base import Store
from worker.subscriptions import new_subscription, webhook_name, webhook_of

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
READER = {"Authorization": f"Bearer {READ_KEY}"}


def subscribe(client: FlaskClient, body: object, headers: dict[str, str] = ADMIN):  # noqa: ANN201
    return client.post("/api/webhooks", data=json.dumps(body), headers=headers, content_type="application/json")


def deliver_all(store: Store, rules: Rules) -> DeliveryRun:
    """Every event due a second after T0 sent, through one set of senders closed afterwards."""
    senders = Senders()
    try:
        return drain(store, rules, senders, T0 + timedelta(seconds=1))
    finally:
        senders.close()


def test_a_subscription_is_created_listed_without_its_secret_and_deleted(client: FlaskClient) -> None:
    created = subscribe(client, {"url": "https://n8n.example.com/webhook/abc", "campaigns": ["welcome", "vip"],
                                 "description": "n8n: Welcome flow"})
    assert created.status_code == 201
    body = created.get_json()
    assert body["id"].startswith("sub_") and body["secret"].startswith("whsec_")
    assert (body["url"], body["campaigns"], body["description"]) == (
        "https://n8n.example.com/webhook/abc", ["welcome", "vip"], "n8n: Welcome flow")
    other = subscribe(client, {"url": "http://127.0.0.1:5678/webhook/x", "campaigns": ["win-back"]}).get_json()
    assert other["secret"] != body["secret"] and other["id"] != body["id"]

    listed = client.get("/api/webhooks", headers=ADMIN).get_json()
    assert listed["count"] == 2 and [s["id"] for s in listed["data"]] == [body["id"], other["id"]]
    assert all("secret" not in s for s in listed["data"])

    assert client.delete(f"/api/webhooks/{body['id']}", headers=ADMIN).status_code == 204
    assert client.delete(f"/api/webhooks/{body['id']}", headers=ADMIN).status_code == 404
    assert [s["id"] for s in client.get("/api/webhooks", headers=ADMIN).get_json()["data"]] == [other["id"]]


def test_subscriptions_need_an_admin_key(client: FlaskClient) -> None:
    body = {"url": "https://n8n.example.com/webhook/abc", "campaigns": ["welcome"]}
    assert subscribe(client, body, headers={}).status_code == 401
    assert subscribe(client, body, headers=READER).status_code == 403
    assert client.get("/api/webhooks", headers=READER).status_code == 403
    assert client.delete("/api/webhooks/sub_x", headers=READER).status_code == 403
    assert client.get("/api/webhooks", headers=ADMIN).get_json()["count"] == 0


@pytest.mark.parametrize(("body", "names"), [
    ({"url": "ftp://n8n.example.com/x", "campaigns": ["welcome"]}, "url"),
    ({"url": "javascript:alert(1)", "campaigns": ["welcome"]}, "url"),
    ({"url": "https://", "campaigns": ["welcome"]}, "url"),
    ({"campaigns": ["welcome"]}, "url"),
    ({"url": "https://n8n.example.com/x", "campaigns": []}, "campaigns"),
    ({"url": "https://n8n.example.com/x", "campaigns": "welcome"}, "campaigns"),
    ({"url": "https://n8n.example.com/x", "campaigns": ["welcome", "nope"]}, "'nope' not in the rules"),
    ({"url": "https://n8n.example.com/x", "campaigns": ["welcome"], "description": "x" * 201}, "description"),
    ({"url": "https://n8n.example.com/x", "campaigns": ["welcome"], "secret": "mine"}, "unknown field(s) secret"),
    (["https://n8n.example.com/x"], "JSON object"),
])
def test_a_bad_subscription_is_refused_with_what_is_wrong(client: FlaskClient, body: object, names: str) -> None:
    answer = subscribe(client, body)
    assert answer.status_code == 400
    assert names in answer.get_json()["error"]
    assert client.get("/api/webhooks", headers=ADMIN).get_json()["count"] == 0


def test_a_body_that_is_not_json_is_refused(client: FlaskClient) -> None:
    answer = client.post("/api/webhooks", data="{not json", headers=ADMIN, content_type="application/json")
    assert answer.status_code == 400 and "not valid JSON" in answer.get_json()["error"]


def test_webhook_allowed_hosts_applies_to_subscriptions(tmp_path: Path, store: Store) -> None:
    from tests.conftest import RULES_YAML
    from worker.api.app import create_app
    from worker.settings import Settings

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES_YAML, encoding="utf-8")
    env = {"WEBHOOK_SECRET": SECRET, "N8N_WEBHOOK_URL": "http://n8n.example.com/webhook/x"}
    settings = Settings(database_url="sqlite:///unused", rules_file=str(rules_file), api_keys=(READ_KEY,),
                        admin_api_keys=(ADMIN_KEY,), webhook_allowed_hosts=("n8n.example.com",), env=env)
    client = create_app(settings, store=store, rules_source=RulesSource(rules_file, env)).test_client()
    refused = subscribe(client, {"url": "https://evil.example.net/x", "campaigns": ["welcome"]})
    assert refused.status_code == 400 and "WEBHOOK_ALLOWED_HOSTS" in refused.get_json()["error"]
    assert subscribe(client, {"url": "https://n8n.example.com/x", "campaigns": ["welcome"]}).status_code == 201


def test_each_event_reaches_two_subscriptions_and_the_rules_webhook_each_signed_with_its_own_secret(
        tmp_path: Path, store: Store, receiver: Receiver) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url + "/rules-webhook", campaigns=WELCOME_AS_QUEUED), encoding="utf-8")
    rules = RulesSource(path, ENV).current()
    first = new_subscription(receiver.url + "/first", ["welcome"], "first flow", T0)
    second = new_subscription(receiver.url + "/second", ["welcome", "vip"], "second flow", T0)
    elsewhere = new_subscription(receiver.url + "/vip-only", ["vip"], "hears no welcome", T0)
    for subscription in (first, second, elsewhere):
        store.add_subscription(subscription)
    ingest(store, [order_json(f"C{n}", f"C{n}-ORD-1", T0 - timedelta(days=1)) for n in range(5)], T0)
    run = evaluate_due(store, rules, T0)
    assert run.events == 15  # 5 welcomes, each for the rules webhook and for the two subscriptions to welcome

    receiver.respond_with(200, times=100)
    drained = deliver_all(store, rules)
    assert drained.delivered == 15
    rules_path = urlsplit(receiver.url + "/rules-webhook").path
    secrets = {urlsplit(s.url).path: s.secret for s in (first, second)}
    by_path: dict[str, list[str]] = {}
    for request in receiver.requests:
        headers = dict(request.headers.items())
        if request.path == rules_path:  # the rules webhook's WEBHOOK_SECRET: the receiver checks it
            assert request.signature_valid
            payload = request.json
        else:
            payload = Verifier(secrets[request.path]).verify(request.body, headers)
            assert not request.signature_valid  # not signed with WEBHOOK_SECRET
            for wrong in set(secrets) - {request.path}:  # nor with the other subscription's secret
                with pytest.raises(WebhookVerificationError):
                    Verifier(secrets[wrong]).verify(request.body, headers)
        assert payload["id"] == request.headers["webhook-id"]
        by_path.setdefault(request.path, []).append(payload["customer"]["contactID"])
    expected = [f"C{n}" for n in range(5)]
    assert {p: sorted(c) for p, c in by_path.items()} == {p: expected for p in (rules_path, *secrets)}
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 15


def test_the_events_of_a_deleted_subscription_go_dead_with_why(tmp_path: Path, store: Store,
                                                              receiver: Receiver) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url, campaigns=WELCOME_AS_QUEUED), encoding="utf-8")
    rules = RulesSource(path, ENV).current()
    gone = new_subscription(receiver.url + "/gone", ["welcome"], "", T0)
    store.add_subscription(gone)
    ingest(store, [order_json("C1", "C1-ORD-1", T0 - timedelta(days=1))], T0)
    assert evaluate_due(store, rules, T0).events == 2
    assert store.remove_subscription(gone.id)
    receiver.respond_with(200, times=10)
    run = deliver_all(store, rules)
    assert (run.delivered, run.dead) == (1, 1)
    [dead] = store.list_events("dead", limit=10)
    assert dead.webhook == webhook_name(gone.id) and "was deleted" in dead.last_error
    assert [r.path for r in receiver.requests] == [urlsplit(receiver.url).path]


def test_a_subscription_is_sent_to_like_a_paced_rules_webhook() -> None:
    webhook = webhook_of(new_subscription("https://n8n.example.com/x", ["welcome"], "", T0))
    assert (webhook.url, webhook.batch_size, webhook.max_per_second) == ("https://n8n.example.com/x", 1, 15)
    assert webhook.secret.startswith("whsec_")
