"""The outbox over HTTP: list by status with paging, one event with its attempts, replay of dead events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import NOW
from worker.evaluate import evaluate_due


@pytest.fixture
def welcomed(store, rules, clock, post_orders, make_orders) -> list[str]:
    """Three customers seen after the baseline run, so each has a pending welcome event; ids oldest first."""
    evaluate_due(store, rules, clock())
    for contact_id in ("C-1", "C-2", "C-3"):
        assert post_orders(make_orders(contact_id, first=NOW - timedelta(days=2))).status_code == 200
    return [event.id for event in store.list_events("pending", 10)]


def kill(store, event_id: str) -> None:
    """One delivery attempt that the receiver refuses for good."""
    claimed = store.claim_due_events(NOW, 10, "test", 60)
    assert event_id in [event.id for event in claimed]
    store.record_failed([event_id], NOW, 410, "HTTP 410 Gone", 12, None)


def test_new_customers_wait_in_the_outbox_as_pending_events(client, read_headers, welcomed):
    body = client.get("/api/events", headers=read_headers).get_json()

    assert body["count"] == 3
    assert body["nextCursor"] is None
    assert [(e["contactID"], e["campaign"], e["type"], e["status"]) for e in body["data"]] == [
        ("C-1", "welcome", "segment.entered", "pending"), ("C-2", "welcome", "segment.entered", "pending"),
        ("C-3", "welcome", "segment.entered", "pending")]
    assert body["data"][0]["createdAt"] == "2026-02-21T12:00:00.000Z"


def test_events_page_without_duplicates(client, read_headers, welcomed):
    seen, cursor = [], None
    for _ in range(4):
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/events", query_string=query, headers=read_headers).get_json()
        seen += [event["id"] for event in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == welcomed


def test_status_filter_lists_only_dead_events(client, read_headers, store, welcomed):
    kill(store, welcomed[1])

    dead = client.get("/api/events?status=dead", headers=read_headers).get_json()
    pending = client.get("/api/events?status=pending", headers=read_headers).get_json()

    assert [event["id"] for event in dead["data"]] == [welcomed[1]]
    assert dead["data"][0]["lastStatus"] == 410
    assert [event["id"] for event in pending["data"]] == [welcomed[0], welcomed[2]]


@pytest.mark.parametrize(("query", "parameter"), [("status=lost", "status"), ("limit=0", "limit"),
                                                  ("cursor=%%%", "cursor")])
def test_bad_event_queries_are_400(client, read_headers, query, parameter):
    response = client.get(f"/api/events?{query}", headers=read_headers)

    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"{parameter}:")


def test_one_event_shows_its_delivery_attempts(client, read_headers, store, welcomed):
    kill(store, welcomed[0])

    body = client.get(f"/api/events/{welcomed[0]}", headers=read_headers).get_json()

    assert body["data"]["status"] == "dead"
    assert body["data"]["attempts"] == 1
    assert body["attempts"] == [{"attemptedAt": "2026-02-21T12:00:00.000Z", "status": 410,
                                 "error": "HTTP 410 Gone", "durationMs": 12}]


def test_unknown_event_is_404(client, read_headers, admin_headers):
    shown = client.get("/api/events/evt_nope", headers=read_headers)
    replayed = client.post("/api/events/evt_nope/replay", headers=admin_headers)

    assert shown.status_code == replayed.status_code == 404
    assert shown.get_json() == {"error": "event 'evt_nope' not found"}


def test_replay_makes_a_dead_event_pending_and_due_now(client, admin_headers, store, clock, welcomed):
    kill(store, welcomed[0])
    clock.advance(hours=3)

    response = client.post(f"/api/events/{welcomed[0]}/replay", headers=admin_headers)

    assert response.status_code == 202
    event = response.get_json()["data"]
    assert (event["id"], event["status"], event["nextAttemptAt"]) == (welcomed[0], "pending",
                                                                      "2026-02-21T15:00:00.000Z")


def test_replay_needs_a_write_key(client, read_headers, store, welcomed):
    kill(store, welcomed[0])

    assert client.post(f"/api/events/{welcomed[0]}/replay", headers=read_headers).status_code == 403
    assert store.get_event(welcomed[0]).status == "dead"


# --- bulk replay -----------------------------------------------------------------------------------------------

def test_the_list_says_how_many_events_have_the_status(client, read_headers, store, welcomed):
    kill(store, welcomed[1])

    assert client.get("/api/events?limit=1", headers=read_headers).get_json()["total"] == 3
    assert client.get("/api/events?status=dead", headers=read_headers).get_json()["total"] == 1
    assert client.get("/api/events?status=pending&limit=1", headers=read_headers).get_json()["total"] == 2


def kill_all(store) -> None:
    claimed = [event.id for event in store.claim_due_events(NOW, 100, "test", 60)]
    store.record_failed(claimed, NOW, 410, "HTTP 410 Gone", 12, None)


@pytest.fixture
def dead_campaigns(store, rules, clock, post_orders, make_orders) -> None:
    """Dead: welcome for C-1, C-2 and C-3, and vip for C-3 (whose second order made it VIP)."""
    evaluate_due(store, rules, clock())
    for contact_id in ("C-1", "C-2"):
        post_orders(make_orders(contact_id, first=NOW - timedelta(days=2)))
    post_orders(make_orders("C-3", first=NOW - timedelta(days=2), total="6000.00"))
    kill_all(store)


def test_bulk_replay_queues_the_dead_events_of_a_campaign_and_says_how_many(client, admin_headers, store, clock,
                                                                            dead_campaigns):
    clock.advance(hours=1)

    response = client.post("/api/events/replay", json={"status": "dead", "campaign": "welcome"},
                           headers=admin_headers)

    assert response.status_code == 202
    assert response.get_json() == {"queued": 2, "remaining": 0, "status": "dead", "campaign": "welcome"}
    events = {(e.contact_id, e.campaign): e for e in store.list_events(None, 10)}
    assert {key: e.status for key, e in events.items()} == {("C-1", "welcome"): "pending",
                                                            ("C-2", "welcome"): "pending", ("C-3", "vip"): "dead"}
    assert events[("C-1", "welcome")].next_attempt_at == clock.now


def test_bulk_replay_without_a_body_replays_every_dead_event(client, admin_headers, store, dead_campaigns):
    response = client.post("/api/events/replay", headers=admin_headers)

    assert response.get_json()["queued"] == 3
    assert store.count_events("dead") == 0


def test_bulk_replay_is_bounded_and_says_what_remains(client, admin_headers, store, dead_campaigns):
    first = client.post("/api/events/replay", json={"limit": 2}, headers=admin_headers).get_json()
    second = client.post("/api/events/replay", json={"limit": 2}, headers=admin_headers).get_json()

    assert (first["queued"], first["remaining"]) == (2, 1)
    assert (second["queued"], second["remaining"]) == (1, 0)


def test_bulk_replay_needs_a_write_key(client, read_headers, store, dead_campaigns):
    response = client.post("/api/events/replay", json={}, headers=read_headers)

    assert response.status_code == 403
    assert store.count_events("dead") == 3


@pytest.mark.parametrize(("body", "problem"), [
    ({"status": "superseded"}, "status: a bulk replay takes dead events only"),
    ({"status": "pending"}, "status: a bulk replay takes dead events only"),
    ({"campaign": ""}, "campaign:"),
    ({"campaign": 5}, "campaign:"),
    ({"campaign": "\ud800"}, "campaign:"),
    ({"limit": 0}, "limit:"),
    ({"limit": 1001}, "limit:"),
    ({"limit": True}, "limit:"),
    ({"limit": "10"}, "limit:"),
    ({"campaigns": ["vip"]}, "unknown field(s) campaigns"),
    (["dead"], "the body must be a JSON object"),
    ("not json", "the body must be a JSON object"),
])
def test_bad_bulk_replays_are_400_and_replay_nothing(client, admin_headers, store, dead_campaigns, body, problem):
    if isinstance(body, str):
        response = client.post("/api/events/replay", data=body, headers=admin_headers)
    else:
        response = client.post("/api/events/replay", json=body, headers=admin_headers)

    assert response.status_code == 400
    assert response.get_json()["error"].startswith(problem)
    assert store.count_events("dead") == 3


def test_a_bulk_replay_by_curl_without_a_json_content_type_is_read_as_json(client, admin_headers, store,
                                                                            dead_campaigns):
    response = client.post("/api/events/replay", data='{"campaign": "vip"}',
                           content_type="application/x-www-form-urlencoded", headers=admin_headers)

    assert response.get_json()["queued"] == 1
