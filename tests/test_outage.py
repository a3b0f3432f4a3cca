"""A long outage: n8n is down for a whole simulated day while orders keep arriving and day thresholds pass.

The worker's jobs run in-process, tick by tick, on a clock that advances five minutes per tick. Nothing is lost
or given up on, the backlog drains in order per customer when n8n returns, the worker's memory stays flat, and
/metrics shows an operator what is happening (queue depth and age grow, then fall back to zero).
"""

from __future__ import annotations

import gc
import logging
import os
import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import READ_KEY
from tests.outbox_helpers import (
    ENV,
    LIFECYCLE,
    SECRET,
    T0,
    ReturningReceiver,
    StillClock,
    free_port,
    ingest,
    make_rules,
    order_json,
    rules_text,
)
from tests.receiver import Receiver
from worker.api import create_app
from worker.delivery import Senders, deliver_due
from worker.evaluate import evaluate_due
from worker.rules_file import RulesSource
from worker.scheduler import Jobs
from worker.settings import Settings
from worker.store.base import Store

TICK = timedelta(minutes=5)
OUTAGE_TICKS = 24 * 12  # one day
# Long enough that an event created at the start of the outage is still being retried when n8n returns:
# 40 hours of retries even with every delay jittered 20% short.
RETRY_SCHEDULE = [60, 300, 900] + [3600] * 50
# Memory is measured as live Python objects after a full collection (tracemalloc would slow the day fivefold and
# says the same: +50 kB over the day, all of it the growing store's caches) and as the process's resident size.
OBJECT_GROWTH_LIMIT = 1_000
RSS_GROWTH_LIMIT = 32 * 1024 * 1024
WARM_UP_TICKS = 24


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def rules_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(f"http://127.0.0.1:{port}/webhook/segment-events", first_run="baseline",
                               campaigns=LIFECYCLE, retry_schedule=RETRY_SCHEDULE), encoding="utf-8")
    return path


class Shop:
    """Orders as they arrive: new customers, repeat orders, big orders that make VIPs. Deterministic."""

    def __init__(self, store: Store, seed: int = 7):
        self.store = store
        self.rng = random.Random(seed)
        self.customers: list[str] = []
        self.orders = 0

    def open_with_history(self, clock: StillClock) -> None:
        """Customers known before the outage: some whose last order is 90 days old at T0 go Dormant at the next
        midnight, some are 74 days quiet and reach the at-risk milestone overnight."""
        for n in range(30):
            days = (90, 74, 20)[n % 3]
            self._order(f"H{n:03d}", clock.now - timedelta(days=days, hours=1), clock.now)

    def tick(self, clock: StillClock) -> None:
        if self.rng.random() < 0.5:
            self._order(f"N{len(self.customers):04d}", clock.now - timedelta(minutes=1), clock.now)
        if self.customers and self.rng.random() < 0.2:
            big = self.rng.random() < 0.3
            self._order(self.rng.choice(self.customers), clock.now - timedelta(minutes=2), clock.now,
                        total="6000.00" if big else "80.00")

    def _order(self, contact_id: str, order_at, now, total: str = "100.00") -> None:
        if contact_id not in self.customers:
            self.customers.append(contact_id)
        self.orders += 1
        ingest(self.store, [order_json(contact_id, f"{contact_id}-ORD-{self.orders}", order_at, total)], now)


def memory() -> tuple[int, int]:
    """(live Python objects after a full collection, resident set size in bytes)."""
    gc.collect()
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return len(gc.get_objects()), pages * os.sysconf("SC_PAGE_SIZE")


def metrics(app, *names: str) -> dict[str, float]:
    text = app.test_client().get("/metrics", headers={"X-API-Key": READ_KEY}).get_data(as_text=True)
    found = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key in names:
            found[key] = float(value)
    return found


QUEUE = ("segment_worker_events_pending", "segment_worker_events_dead",
         "segment_worker_events_oldest_pending_age_seconds",
         'segment_worker_delivery_attempts_total{outcome="network_error"}',
         'segment_worker_delivery_attempts_total{outcome="delivered"}', "segment_worker_last_evaluation_age_seconds")


def test_a_day_without_n8n_loses_nothing_and_drains_in_order(store: Store, rules_file: Path, port: int,
                                                             tmp_path: Path) -> None:
    clock = StillClock(T0)
    worker = Jobs(store, RulesSource(rules_file, ENV), clock=clock, holder="outage-worker")
    worker.rng.seed(11)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/segments.db", rules_file=str(rules_file),
                        api_keys=(READ_KEY,), env=ENV)
    app = create_app(settings, store=store, rules_source=worker.rules_source, clock=clock)
    shop = Shop(store)
    shop.open_with_history(clock)
    assert worker.evaluate_once().baseline  # the base before the outage is recorded silently

    quiet = logging.getLogger("worker")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a day of "delivery failed" warnings would fill the test's log capture
    try:
        for tick in range(OUTAGE_TICKS):
            if tick == WARM_UP_TICKS:
                warmed_up = memory()
            clock.advance(minutes=5)
            shop.tick(clock)
            worker.evaluate_once()
            run = worker.deliver_once()
            assert run.delivered == 0 and run.dead == 0
        objects, rss = (end - start for end, start in zip(memory(), warmed_up, strict=True))
    finally:
        quiet.setLevel(level)

    during = metrics(app, *QUEUE)
    queued = store.list_events(None, limit=100_000)
    print(f"\noutage: {len(shop.customers)} customers, {shop.orders} orders, {len(queued)} events queued, "
          f"{int(during[QUEUE[3]])} failed attempts; over {OUTAGE_TICKS - WARM_UP_TICKS} ticks {objects:+d} live "
          f"objects, RSS {rss / 1e6:+.1f} MB")
    assert {e.campaign for e in queued} >= {"welcome", "vip", "win-back", "at-risk"}
    # Each retry re-checks its event first: a customer who ordered again meanwhile is no longer at risk, so that
    # event is superseded (with why) instead of waiting for n8n.
    assert {e.status for e in queued} <= {"pending", "superseded"}
    assert all(e.last_error and "superseded" != e.last_error for e in queued if e.status == "superseded")
    waiting = [e for e in queued if e.status == "pending"]
    assert during[QUEUE[0]] == len(waiting) and during[QUEUE[1]] == 0
    assert during[QUEUE[2]] >= 23.5 * 3600  # the oldest event has waited about a day: what an alert looks at
    assert during[QUEUE[3]] > len(queued) and during[QUEUE[5]] == 0
    runs = metrics(app, "segment_worker_evaluation_runs_total", "segment_worker_transitions_total")
    assert runs["segment_worker_evaluation_runs_total"] == OUTAGE_TICKS + 1
    assert runs["segment_worker_transitions_total"] >= len([e for e in queued if e.campaign == "welcome"])
    assert objects < OBJECT_GROWTH_LIMIT, f"{objects} more live objects after a day of ticks"
    assert rss < RSS_GROWTH_LIMIT, f"the resident size grew by {rss} bytes over a day of ticks"

    with ReturningReceiver(SECRET, port) as receiver:
        for _ in range(30):  # the longest retry delay is an hour (plus jitter): 2.5 simulated hours at most
            clock.advance(minutes=5)
            worker.evaluate_once()
            worker.deliver_once()
            if not store.list_events("pending", limit=1):
                break
        arrived = [r for r in receiver.requests if 200 <= r.status < 300]
    worker.close()

    after = metrics(app, *QUEUE)
    final = {e.id: e.status for e in store.list_events(None, limit=100_000) if e.id in {q.id for q in queued}}
    delivered = sorted(i for i, status in final.items() if status == "delivered")
    assert set(final.values()) <= {"delivered", "superseded"} and len(delivered) >= len(waiting) * 0.9
    assert after[QUEUE[0]] == after[QUEUE[1]] == after[QUEUE[2]] == 0
    assert after[QUEUE[4]] == len(delivered)
    ids = [r.headers["webhook-id"] for r in arrived]
    assert sorted(ids) == delivered, "every event arrives exactly once, none that was superseded"
    assert all(r.signature_valid and r.json["id"] == r.headers["webhook-id"] for r in arrived)
    assert_in_order_per_customer(queued, ids)


def assert_in_order_per_customer(queued, arrival_ids: list[str]) -> None:
    """Each customer's events arrive in the order they were queued (the outbox's order), e.g. welcome before vip."""
    queued_order = {e.id: n for n, e in enumerate(queued)}
    contact = {e.id: e.contact_id for e in queued}
    per_customer: dict[str, list[str]] = defaultdict(list)
    for event_id in arrival_ids:
        per_customer[contact[event_id]].append(event_id)
    several = {c: ids for c, ids in per_customer.items() if len(ids) > 1}
    assert several, "the story should give some customers more than one event"
    for contact_id, ids in several.items():
        assert ids == sorted(ids, key=queued_order.get), f"{contact_id}'s events arrived out of order"


# The rule that keeps each customer's events in order, at the two places it lives (store claim, delivery unit).


def test_a_customers_later_event_waits_while_an_earlier_one_is_being_retried(store: Store) -> None:
    rules = make_rules("http://127.0.0.1:9/hook", campaigns=LIFECYCLE)
    ingest(store, [order_json("C1", "C1-ORD-1", T0 - timedelta(days=1))], T0)
    evaluate_due(store, rules, T0)
    (welcome,) = store.claim_due_events(T0, 10, "a", 60)
    store.record_failed([welcome.id], T0, 500, "HTTP 500", 5, T0 + timedelta(minutes=10))
    later = T0 + timedelta(minutes=1)
    ingest(store, [order_json("C1", "C1-ORD-2", later, "6000.00"), order_json("C2", "C2-ORD-1", later)], later)
    evaluate_due(store, rules, later)

    claimed = store.claim_due_events(later, 10, "a", 60)

    assert [e.contact_id for e in claimed] == ["C2"], "C1's vip waits for C1's welcome"
    store.record_delivered([claimed[0].id], later, 200, 5)
    retry = T0 + timedelta(minutes=10)
    assert [e.id for e in store.claim_due_events(retry, 10, "a", 60)] == [welcome.id]
    store.record_delivered([welcome.id], retry, 200, 5)
    assert [e.campaign for e in store.claim_due_events(retry, 10, "a", 60)] == ["vip"]


def test_a_failure_stops_the_rest_of_that_customers_events_in_the_same_run(store: Store) -> None:
    with Receiver(SECRET) as receiver:
        rules = make_rules(receiver.url, campaigns=LIFECYCLE)
        ingest(store, [order_json("C1", "C1-ORD-1", T0 - timedelta(days=100))], T0)
        evaluate_due(store, rules, T0)
        senders = Senders()
        try:
            assert deliver_due(store, rules, senders, T0, "a").delivered == 1  # win-back
            ingest(store, [order_json("C1", "C1-ORD-2", T0, "6000.00")], T0)
            evaluate_due(store, rules, T0)  # Dormant -> VIP: vip and reactivated, in that order
            receiver.respond_with(503)
            run = deliver_due(store, rules, senders, T0, "a", random.Random(1))
        finally:
            senders.close()

    assert (run.attempted, len(receiver.requests)) == (1, 2), "the 503 stopped C1's second event"
    first, second = store.list_events("pending", 10)
    assert (first.campaign, first.attempts, second.campaign, second.attempts) == ("vip", 1, "reactivated", 0)
    retry = first.next_attempt_at
    assert store.claim_due_events(retry - timedelta(milliseconds=1), 10, "b", 60) == [], "reactivated waits for vip"
    assert [e.campaign for e in store.claim_due_events(retry, 10, "b", 60)] == ["vip"]
    store.record_delivered([first.id], retry, 200, 5)
    assert [e.campaign for e in store.claim_due_events(retry, 10, "b", 60)] == ["reactivated"], \
        "reactivated was handed back at once, not left claimed for minutes"
