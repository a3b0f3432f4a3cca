"""Outbox delivery against a real receiver on 127.0.0.1: retries, dead letters, replay, batches, keep-alive."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from rules import RulesError, parse_rules
from tests.outbox_helpers import (
    ENV,
    SECRET,
    T0,
    WELCOME_AS_QUEUED,
    ReturningReceiver,
    drain,
    free_port,
    make_rules,
    queue_welcomes,
    rules_text,
)
from tests.receiver import Receiver
from worker.cli import main
from worker.delivery import DeliveryRun, Senders, deliver_due
from worker.store import open_store
from worker.store.base import Store

NOW = T0 + timedelta(minutes=1)  # when the delivery runs; events were queued at T0


def test_retried_after_two_500s_and_delivered_on_the_third_attempt(store: Store, senders: Senders,
                                                                   receiver: Receiver) -> None:
    receiver.respond_with(500, times=2, body="n8n hiccup")
    rules = make_rules(receiver.url)
    (event_id,) = queue_welcomes(store, rules, 1)
    rng = random.Random(7)

    now = NOW
    assert deliver_due(store, rules, senders, now, "t", rng) == DeliveryRun(retrying=1)
    first_retry = store.get_event(event_id).next_attempt_at
    assert timedelta(seconds=4) <= first_retry - now <= timedelta(seconds=6)  # 5 s, jitter 20 %
    assert deliver_due(store, rules, senders, first_retry - timedelta(milliseconds=1), "t", rng).attempted == 0

    now = first_retry
    assert deliver_due(store, rules, senders, now, "t", rng) == DeliveryRun(retrying=1)
    second_retry = store.get_event(event_id).next_attempt_at
    assert timedelta(seconds=24) <= second_retry - now <= timedelta(seconds=36)  # 30 s, jitter 20 %

    assert deliver_due(store, rules, senders, second_retry, "t", rng) == DeliveryRun(delivered=1)
    event = store.get_event(event_id)
    assert (event.status, event.attempts, event.last_status, event.last_error) == ("delivered", 3, 200, None)
    attempts = store.attempts_for(event_id)
    assert [a.status for a in attempts] == [500, 500, 200]
    assert [a.attempted_at for a in attempts] == [NOW, first_retry, second_retry]
    assert "HTTP 500" in attempts[0].error and "n8n hiccup" in attempts[0].error
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event_id] * 3
    assert all(r.signature_valid for r in receiver.requests)
    assert receiver.delivered_ids() == [event_id]


@pytest.mark.parametrize("replay_with", ["store", "cli"])
def test_400_is_dead_at_once_and_a_replay_delivers_it(replay_with: str, store: Store, senders: Senders,
                                                      receiver: Receiver, database_url: str,
                                                      tmp_path: Path) -> None:
    receiver.respond_with(400, body="missing field")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules_text(receiver.url, campaigns=WELCOME_AS_QUEUED), encoding="utf-8")
    rules = make_rules(receiver.url, campaigns=WELCOME_AS_QUEUED)
    (event_id,) = queue_welcomes(store, rules, 1)

    assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(dead=1)
    dead = store.get_event(event_id)
    assert (dead.status, dead.attempts, dead.last_status, dead.next_attempt_at) == ("dead", 1, 400, None)
    assert "HTTP 400" in dead.last_error
    assert deliver_due(store, rules, senders, NOW + timedelta(days=1), "t").attempted == 0  # never retried

    if replay_with == "store":
        assert store.replay_event(event_id, NOW)
    else:
        env = {"DATABASE_URL": database_url, "RULES_FILE": str(rules_file), "WEBHOOK_SECRET": SECRET}
        listed = CliRunner().invoke(main, ["events", "list", "--status", "dead"], env=env)
        assert listed.exit_code == 0 and event_id in listed.output and "HTTP 400" in listed.output
        replayed = CliRunner().invoke(main, ["events", "replay", event_id], env=env)
        assert replayed.exit_code == 0, replayed.output
        assert event_id in replayed.output
    assert store.get_event(event_id).status == "pending"

    # The CLI replays as of the real clock, so the delivery is asked for then.
    later = max(NOW, datetime.now(timezone.utc)) + timedelta(seconds=1)
    assert deliver_due(store, rules, senders, later, "t") == DeliveryRun(delivered=1)
    assert store.get_event(event_id).status == "delivered"
    assert [a.status for a in store.attempts_for(event_id)] == [400, 200]
    assert receiver.delivered_ids() == [event_id]


def test_replaying_an_unknown_event_fails_in_the_cli(database_url: str, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules_text("http://127.0.0.1:9/hook"), encoding="utf-8")
    env = {"DATABASE_URL": database_url, "RULES_FILE": str(rules_file), "WEBHOOK_SECRET": SECRET}
    open_store(database_url).close()  # an existing store, without that event
    result = CliRunner().invoke(main, ["events", "replay", "evt_nope"], env=env)
    assert result.exit_code == 1
    assert "evt_nope" in result.output and "not found" in result.output


def stopped_receiver_port() -> int:
    with Receiver(SECRET) as stopped:
        return urlsplit(stopped.url).port


@pytest.mark.parametrize("down_port", [stopped_receiver_port, free_port], ids=["stopped", "closed-port"])
def test_events_wait_while_the_receiver_is_down_and_go_out_when_it_returns(
        store: Store, down_port: Callable[[], int]) -> None:
    port = down_port()
    rules = make_rules(f"http://127.0.0.1:{port}/webhook/segment-events")
    ids = queue_welcomes(store, rules, 3)
    senders = Senders()
    try:
        assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(retrying=3)
        waiting = [store.get_event(i) for i in ids]
        assert all(e.status == "pending" and e.next_attempt_at > NOW for e in waiting)
        assert all("connection refused" in e.last_error and e.last_status is None for e in waiting)
        assert deliver_due(store, rules, senders, NOW + timedelta(seconds=2), "t").attempted == 0

        retry_at = max(e.next_attempt_at for e in waiting)
        with ReturningReceiver(SECRET, port) as back:
            assert drain(store, rules, senders, retry_at) == DeliveryRun(delivered=3)
            senders.close()  # close keep-alive connections before the receiver stops
        assert sorted(back.delivered_ids()) == sorted(ids)
        assert all(r.signature_valid for r in back.requests)
        assert all(store.get_event(i).status == "delivered" for i in ids)
        assert [a.status for a in store.attempts_for(ids[0])] == [None, 200]
    finally:
        senders.close()


def test_429_waits_at_least_as_long_as_retry_after_says(store: Store, senders: Senders, receiver: Receiver) -> None:
    receiver.respond_with(429, headers={"Retry-After": "120"})
    rules = make_rules(receiver.url)
    (event_id,) = queue_welcomes(store, rules, 1)
    assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(retrying=1)
    event = store.get_event(event_id)
    assert event.status == "pending" and event.last_status == 429
    assert event.next_attempt_at >= NOW + timedelta(seconds=120)
    assert deliver_due(store, rules, senders, NOW + timedelta(seconds=119), "t").attempted == 0
    assert deliver_due(store, rules, senders, event.next_attempt_at, "t") == DeliveryRun(delivered=1)


def test_404_from_an_inactive_n8n_workflow_is_retried(store: Store, senders: Senders, receiver: Receiver) -> None:
    receiver.respond_with(404, body='{"message":"The requested webhook is not registered."}')
    rules = make_rules(receiver.url)
    (event_id,) = queue_welcomes(store, rules, 1)
    assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(retrying=1)
    event = store.get_event(event_id)
    assert (event.status, event.last_status) == ("pending", 404)
    assert "workflow active" in event.last_error
    assert deliver_due(store, rules, senders, event.next_attempt_at, "t") == DeliveryRun(delivered=1)


def test_static_header_from_the_rules_passes_n8n_header_auth(store: Store, senders: Senders,
                                                              receiver: Receiver) -> None:
    receiver.require_header("X-Segment-Token", "s3cret-token")
    rules = make_rules(receiver.url, headers={"X-Segment-Token": "s3cret-token"})
    (event_id,) = queue_welcomes(store, rules, 1)
    assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(delivered=1)
    (request,) = receiver.requests
    assert request.headers["X-Segment-Token"] == "s3cret-token"
    assert request.signature_valid and request.headers["webhook-id"] == event_id


def test_403_from_a_wrong_header_auth_is_dead(store: Store, senders: Senders, receiver: Receiver) -> None:
    receiver.require_header("X-Segment-Token", "s3cret-token")
    rules = make_rules(receiver.url, headers={"X-Segment-Token": "stale-token"})
    (event_id,) = queue_welcomes(store, rules, 1)
    assert deliver_due(store, rules, senders, NOW, "t") == DeliveryRun(dead=1)
    event = store.get_event(event_id)
    assert (event.status, event.last_status) == ("dead", 403)
    assert "HTTP 403" in event.last_error
    assert "stale-token" not in event.last_error


def test_exhausted_retries_make_the_event_dead(store: Store, senders: Senders, tmp_path: Path) -> None:
    with Receiver(SECRET, default_status=503) as failing:
        rules = make_rules(failing.url, retry_schedule=[1, 1])
        (event_id,) = queue_welcomes(store, rules, 1)
        now, runs = NOW, []
        for _ in range(5):
            runs.append(deliver_due(store, rules, senders, now, "t"))
            event = store.get_event(event_id)
            if event.status != "pending":
                break
            assert timedelta(seconds=0.8) <= event.next_attempt_at - now <= timedelta(seconds=1.2)
            now = event.next_attempt_at
        senders.close()
    assert runs == [DeliveryRun(retrying=1), DeliveryRun(retrying=1), DeliveryRun(dead=1)]
    assert (event.status, event.attempts, event.next_attempt_at) == ("dead", 3, None)
    assert "HTTP 503" in event.last_error
    assert [a.status for a in store.attempts_for(event_id)] == [503, 503, 503]


def test_a_replayed_event_gets_the_retry_schedule_again(store: Store, senders: Senders) -> None:
    with Receiver(SECRET, default_status=500) as failing:
        rules = make_rules(failing.url, retry_schedule=[1, 1])
        (event_id,) = queue_welcomes(store, rules, 1)
        now = NOW
        for _ in range(3):
            deliver_due(store, rules, senders, now, "t")
            now = store.get_event(event_id).next_attempt_at or now
        assert (store.get_event(event_id).status, store.get_event(event_id).attempts) == ("dead", 3)

        # n8n is fixed, the event replayed, and the very first try meets a passing 500: that is worth a retry.
        assert store.replay_event(event_id, now)
        assert deliver_due(store, rules, senders, now, "t") == DeliveryRun(retrying=1)
        senders.close()
    assert store.get_event(event_id).status == "pending"


def test_batches_of_50_carry_120_events_in_3_posts(store: Store, senders: Senders, receiver: Receiver) -> None:
    rules = make_rules(receiver.url, batch_size=50)
    ids = queue_welcomes(store, rules, 120)
    assert drain(store, rules, senders, NOW) == DeliveryRun(delivered=120)
    requests = receiver.requests
    assert len(requests) == 3
    assert all(r.signature_valid for r in requests)
    assert all(set(r.json) == {"events"} for r in requests)
    assert sorted(len(r.json["events"]) for r in requests) == [20, 50, 50]
    carried = [event["id"] for r in requests for event in r.json["events"]]
    assert sorted(carried) == sorted(ids) and len(set(carried)) == 120
    batch_ids = [r.headers["webhook-id"] for r in requests]
    assert len(set(batch_ids)) == 3 and not set(batch_ids) & set(ids)
    assert all(event["campaign"] == "welcome" for r in requests for event in r.json["events"])
    assert all(store.get_event(i).status == "delivered" and store.get_event(i).attempts == 1 for i in ids)


def test_50_events_reuse_at_most_max_concurrency_connections(store: Store, senders: Senders,
                                                              receiver: Receiver) -> None:
    rules = make_rules(receiver.url, max_concurrency=3)
    ids = queue_welcomes(store, rules, 50)
    assert drain(store, rules, senders, NOW) == DeliveryRun(delivered=50)
    assert sorted(receiver.delivered_ids()) == sorted(ids)
    assert 1 <= receiver.connections <= 3


def test_max_per_second_paces_the_sends_to_n8n(store: Store, senders: Senders, receiver: Receiver) -> None:
    rules = make_rules(receiver.url, max_per_second=40, max_concurrency=4)
    ids = queue_welcomes(store, rules, 21)
    assert drain(store, rules, senders, NOW) == DeliveryRun(delivered=21)
    arrivals = sorted(r.received_at for r in receiver.requests)
    # 21 sends at most 40 a second span at least 20 intervals of 25 ms, whatever the concurrency
    assert (arrivals[-1] - arrivals[0]).total_seconds() >= 0.45
    assert sorted(receiver.delivered_ids()) == sorted(ids)


def test_events_of_a_webhook_removed_from_the_rules_go_dead_naming_it(store: Store, senders: Senders,
                                                                      receiver: Receiver) -> None:
    old_rules = make_rules(receiver.url)
    ids = queue_welcomes(store, old_rules, 2)
    new_rules = make_rules(receiver.url, webhook="n8n-v2",
                           campaigns="  welcome: {on: {entered: New}, webhook: n8n-v2}\n")
    assert deliver_due(store, new_rules, senders, NOW, "t") == DeliveryRun(dead=2)
    for event_id in ids:
        event = store.get_event(event_id)
        assert event.status == "dead"
        assert "'n8n'" in event.last_error and "no longer defined" in event.last_error
    assert receiver.requests == []

    assert all(store.replay_event(i, NOW) for i in ids)  # the webhook is back: replay delivers
    assert drain(store, old_rules, senders, NOW) == DeliveryRun(delivered=2)
    assert sorted(receiver.delivered_ids()) == sorted(ids)


def test_a_webhook_secret_that_cannot_sign_fails_its_events_not_the_delivery_run(store: Store, senders: Senders,
                                                                                 receiver: Receiver) -> None:
    text = rules_text(receiver.url).replace("${WEBHOOK_SECRET}", "whsec_not base64!")
    try:
        rules = parse_rules(text, env=ENV)
    except RulesError as refused:  # refused when the rules load is as good: nothing is ever queued for it
        assert "secret" in str(refused)
        return
    (event_id,) = queue_welcomes(store, rules, 1)
    run = deliver_due(store, rules, senders, NOW, "t")
    assert run.attempted == 1
    event = store.get_event(event_id)
    assert "secret" in event.last_error and "n8n" in event.last_error
    assert receiver.requests == []


def test_delivery_throughput_to_a_local_receiver(store: Store, senders: Senders, receiver: Receiver) -> None:
    rules = make_rules(receiver.url)
    ids = queue_welcomes(store, rules, 300)
    started = time.perf_counter()
    assert drain(store, rules, senders, NOW) == DeliveryRun(delivered=300)
    seconds = time.perf_counter() - started
    rate = len(ids) / seconds
    print(f"\ndelivered {len(ids)} events one per POST in {seconds:.2f}s: {rate:.0f} events/s")
    assert len(set(receiver.delivered_ids())) == 300
    assert rate > 50
