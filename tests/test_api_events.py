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
