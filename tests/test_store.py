"""The store contract, run against every backend (SQLite, DynamoDB): schema version, all-or-nothing batches, due
customers, optimistic saves, leases, the outbox; then what only one backend has (SQLite's WAL file)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.conftest import Backend
from tests.factories import T0, new_store, order
from worker.shards import ShardLeases
from worker.store.base import (
    SHARDS,
    CustomerOrder,
    CustomerRecord,
    Evaluation,
    NewEvent,
    SaveResult,
    ShardState,
    Store,
    StoreError,
    StoreUnavailable,
    Superseded,
    TransitionRecord,
    shard_of,
)
from worker.store.sqlite import SCHEMA_VERSION
from worker.subscriptions import new_subscription

SECOND = timedelta(seconds=1)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


def evaluation(record: CustomerRecord, segment: str = "New", next_check_at: datetime | None = None,
               at: datetime = T0, transition: TransitionRecord | None = None,
               events: tuple[NewEvent, ...] = ()) -> Evaluation:
    return Evaluation(contact_id=record.contact_id, seen_version=record.version, seen_segment=record.segment,
                      segment=segment, purchase_frequency="One-time", next_check_at=next_check_at, evaluated_at=at,
                      transition=transition, events=events)


def welcome(contact_id: str, n: int, at: datetime = T0) -> NewEvent:
    return NewEvent(id=f"evt_{contact_id}_{n:03d}", contact_id=contact_id, campaign="welcome", webhook="n8n",
                    type="segment.entered", occurred_at=at, body=f'{{"n": {n}}}')


def put_events(store: Store, count: int, at: datetime = T0, contact_id: str = "C-1") -> list[str]:
    """`count` pending events for one customer, due at `at`, in creation order."""
    store.upsert_orders([order(contact_id, f"ORD-{contact_id}", at - timedelta(days=1))], at)
    events = tuple(welcome(contact_id, n, at) for n in range(count))
    saved = store.save_evaluations([evaluation(store.get_customer(contact_id), at=at, events=events)])
    assert saved.events == count
    return [e.id for e in events]


def due_ids(store: Store, as_of: datetime, everyone: bool = False, batch_size: int = 100) -> list[list[str]]:
    return [[c.contact_id for c in batch] for batch in store.customers_to_evaluate(as_of, everyone, batch_size)]


# --- the database -------------------------------------------------------------------------------------------

def test_schema_version_is_recorded(store):
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_reopening_keeps_the_data(store, backend):
    store.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    store.close()
    reopened = backend.open()
    assert reopened.get_customer("C-1").facts.total_cents == 10_000
    reopened.close()


def test_database_from_a_newer_program_is_refused(store, backend):
    store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreUnavailable, match="newer than this program"):
        backend.open()


def test_meta_values_can_be_replaced(store):
    store.set_meta("k", "one")
    store.set_meta("k", "two")
    assert (store.get_meta("k"), store.get_meta("missing")) == ("two", None)


# --- a batch is stored whole or not at all ------------------------------------------------------------------

class ExplodingOrder:
    """Looks like an order until the store reads more than its reference."""

    order_ref = "ORD-BOOM"

    @property
    def contact_id(self) -> str:
        raise RuntimeError("cannot read contact_id")


@pytest.mark.parametrize(("case", "third"), [
    ("attribute_access_raises", ExplodingOrder()),
    ("value_too_large_for_sqlite", order("C-3", "ORD-3", T0, total_cents=2**70)),
])
def test_batch_that_fails_on_the_third_order_stores_nothing(store, case, third):
    store.upsert_orders([order("C-0", "ORD-0", T0 - 3 * SECOND, 500)], T0)
    before = [c for batch in store.iter_customers() for c in batch]
    batch = [order("C-1", "ORD-1", T0), order("C-0", "ORD-0", T0, 700), third, order("C-4", "ORD-4", T0)]
    with pytest.raises((RuntimeError, OverflowError)):
        store.upsert_orders(batch, T0)
    assert [c for batch in store.iter_customers() for c in batch] == before
    retry = store.upsert_orders(batch[:2], T0)  # the store is usable and ORD-1 was never written
    assert (retry.inserted, retry.updated) == (1, 1)


def test_batch_that_fails_while_refreshing_aggregates_stores_no_order(store):
    # Two orders whose sum overflows SQLite's 64-bit integers: the orders are written, then the aggregate fails.
    huge = [order("C-1", "ORD-1", T0, 2**62), order("C-1", "ORD-2", T0, 2**62)]
    with pytest.raises(StoreError):  # every backend: a customer's total spend beyond 64-bit integers
        store.upsert_orders(huge, T0)
    assert store.count_customers() == 0
    assert store.upsert_orders([order("C-1", "ORD-1", T0, 100)], T0).inserted == 1


# --- aggregates follow the orders ---------------------------------------------------------------------------

def test_an_order_sent_again_for_another_customer_moves_with_its_spend(store):
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=1), 500), order("C-1", "ORD-2", T0, 700)], T0)
    result = store.upsert_orders([order("C-2", "ORD-2", T0, 700)], T0)
    assert (result.inserted, result.updated, result.contact_ids) == (0, 1, frozenset({"C-1", "C-2"}))
    moved_from, moved_to = store.customers_by_id(["C-1", "C-2"])
    assert (moved_from.facts.order_count, moved_from.facts.total_cents, moved_from.last_order_ref) == (1, 500, "ORD-1")
    assert (moved_to.facts.order_count, moved_to.facts.total_cents, moved_to.last_order_ref) == (1, 700, "ORD-2")


def test_an_order_sent_again_changed_or_cancelled_replaces_what_was_counted(store):
    day_before = T0 - timedelta(days=1)
    store.upsert_orders([order("C-1", "ORD-1", day_before, 500), order("C-1", "ORD-2", T0, 700, name="Ann")], T0)
    store.upsert_orders([order("C-1", "ORD-1", day_before, 900, name="Anna")], T0)
    assert (store.get_customer("C-1").facts.total_cents, store.get_customer("C-1").name) == (1600, "Ann")
    store.upsert_orders([order("C-1", "ORD-2", T0, 700, status="cancelled", name="Ann")], T0)
    customer = store.get_customer("C-1")
    assert (customer.facts.order_count, customer.facts.total_cents, customer.facts.first_order_at,
            customer.facts.last_order_at, customer.last_order_ref, customer.name) == (
        1, 900, day_before, day_before, "ORD-1", "Ann")  # a cancelled order still names the customer


# --- which customers are evaluated --------------------------------------------------------------------------

@pytest.fixture
def evaluated(store) -> Store:
    """C-1 never re-checked, C-2 due tomorrow, C-3 due an hour ago, C-4 due tomorrow but changed since."""
    store.upsert_orders([order(c, f"ORD-{c}", T0 - timedelta(days=2)) for c in ("C-1", "C-2", "C-3", "C-4")], T0)
    due = {"C-1": None, "C-2": T0 + timedelta(days=1), "C-3": T0 - timedelta(hours=1), "C-4": T0 + timedelta(days=1)}
    records = store.customers_by_id(list(due))
    assert store.save_evaluations([evaluation(r, next_check_at=due[r.contact_id]) for r in records]).saved == 4
    store.upsert_orders([order("C-4", "ORD-C-4b", T0 - timedelta(hours=2))], T0)
    return store


def test_only_changed_or_due_customers_are_evaluated(evaluated):
    assert due_ids(evaluated, T0) == [["C-3", "C-4"]]


def test_customer_is_due_exactly_at_its_next_check(evaluated):
    assert due_ids(evaluated, T0 + timedelta(days=1)) == [["C-2", "C-3", "C-4"]]
    assert due_ids(evaluated, T0 + timedelta(days=1) - timedelta(milliseconds=1)) == [["C-3", "C-4"]]


def test_everyone_means_everyone_in_batches(evaluated):
    assert due_ids(evaluated, T0, everyone=True, batch_size=3) == [["C-1", "C-2", "C-3"], ["C-4"]]


def test_due_customers_of_some_shards_only(evaluated):
    shard = {c: shard_of(c) for c in ("C-1", "C-2", "C-3", "C-4")}
    for wanted in ({shard["C-3"]}, {shard["C-4"]}, {shard["C-3"], shard["C-4"]}, {shard["C-1"]}):
        expected = [c for c in ("C-3", "C-4") if shard[c] in wanted]
        got = [[r.contact_id for r in b] for b in evaluated.customers_to_evaluate(T0, False, 100, frozenset(wanted))]
        assert [c for b in got for c in b] == expected
    everyone = [r.contact_id for b in evaluated.customers_to_evaluate(T0, True, 100, frozenset({shard["C-1"]}))
                for r in b]
    assert everyone == [c for c in ("C-1", "C-2", "C-3", "C-4") if shard[c] == shard["C-1"]]


def test_every_customer_is_in_exactly_one_shard(store):
    contacts = [f"C-{n}" for n in range(60)]
    store.upsert_orders([order(c, f"ORD-{c}", T0 - timedelta(days=1)) for c in contacts], T0)
    by_shard = [[r.contact_id for b in store.customers_to_evaluate(T0, True, 1000, frozenset({s})) for r in b]
                for s in range(SHARDS)]
    assert sorted(c for ids in by_shard for c in ids) == sorted(contacts)
    assert sum(1 for ids in by_shard if ids) > SHARDS // 2  # spread, not all in one


def test_new_customers_are_due_until_evaluated(store):
    store.upsert_orders([order("C-9", "ORD-9", T0), order("C-8", "ORD-8", T0)], T0)
    assert due_ids(store, T0, batch_size=1) == [["C-8"], ["C-9"]]


def test_unchanged_reimport_does_not_make_a_customer_due(evaluated):
    evaluated.upsert_orders([order("C-1", "ORD-C-1", T0 - timedelta(days=2))], T0)
    assert due_ids(evaluated, T0) == [["C-3", "C-4"]]


# --- saves are optimistic -----------------------------------------------------------------------------------

def test_save_skips_a_customer_changed_since_it_was_read(store):
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=1))], T0)
    seen = store.get_customer("C-1")
    store.upsert_orders([order("C-1", "ORD-2", T0)], T0)  # an order arrives while the evaluation runs
    transition = TransitionRecord("trn_1", "C-1", None, "New", T0, T0, "sha256:x")
    result = store.save_evaluations([evaluation(seen, transition=transition, events=(welcome("C-1", 1),))])
    assert result == SaveResult(saved=0, transitions=0, events=0, skipped=1)
    assert store.get_customer("C-1").segment is None
    assert due_ids(store, T0) == [["C-1"]]
    assert store.transitions_for("C-1") == [] and store.list_events(None, 10) == []


def test_save_skips_a_customer_whose_segment_someone_else_stored(store):
    store.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    seen = store.get_customer("C-1")
    assert store.save_evaluations([evaluation(seen, segment="New")]).saved == 1
    assert store.save_evaluations([evaluation(seen, segment="Active")]).skipped == 1
    assert store.get_customer("C-1").segment == "New"


def test_save_stores_state_transition_and_events_once(store):
    store.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    transition = TransitionRecord("trn_1", "C-1", None, "New", T0, T0, "sha256:x")
    first = store.save_evaluations([evaluation(store.get_customer("C-1"), next_check_at=T0 + SECOND,
                                               transition=transition, events=(welcome("C-1", 1),))])
    again = store.save_evaluations([evaluation(store.get_customer("C-1"), transition=transition,
                                               events=(welcome("C-1", 1),))])
    assert first == SaveResult(saved=1, transitions=1, events=1, skipped=0)
    assert again == SaveResult(saved=1, transitions=0, events=0, skipped=0)
    customer = store.get_customer("C-1")
    assert (customer.segment, customer.purchase_frequency, customer.evaluated_at) == ("New", "One-time", T0)
    assert store.transitions_for("C-1") == [transition]
    assert [e.id for e in store.list_events("pending", 10)] == ["evt_C-1_001"]


# --- leases -------------------------------------------------------------------------------------------------

def test_lease_lifecycle(store):
    assert store.acquire_lease("evaluate", "A", T0, 30)
    assert not store.acquire_lease("evaluate", "B", T0 + 10 * SECOND, 30), "second holder is refused"
    assert store.acquire_lease("evaluate", "A", T0 + 20 * SECOND, 30), "holder renews"
    assert not store.acquire_lease("evaluate", "B", T0 + 40 * SECOND, 30), "renewal extended the lease"
    assert store.acquire_lease("evaluate", "B", T0 + 50 * SECOND, 30), "taken over once expired"
    assert not store.acquire_lease("evaluate", "A", T0 + 51 * SECOND, 30), "old holder lost it"
    store.release_lease("evaluate", "A")  # not the holder: nothing happens
    assert not store.acquire_lease("evaluate", "A", T0 + 52 * SECOND, 30)
    store.release_lease("evaluate", "B")
    assert store.acquire_lease("evaluate", "A", T0 + 53 * SECOND, 30), "free right after release"


def test_leases_are_independent_by_name(store):
    assert store.acquire_lease("evaluate", "A", T0, 30)
    assert store.acquire_lease("deliver", "B", T0, 30)


def test_lease_is_exclusive_across_connections(store, backend):
    other = backend.open()
    assert store.acquire_lease("evaluate", "A", T0, 30)
    assert not other.acquire_lease("evaluate", "B", T0, 30)
    other.close()


def test_shard_leases_take_renew_expire_and_are_taken_over(store):
    a = ShardLeases(store, "evaluate", "A", lambda: clock[0], 30)
    b = ShardLeases(store, "evaluate", "B", lambda: clock[0], 30)
    clock = [T0]
    walked_a = []
    for shard in a.walk():  # A holds each shard while it works on it: B can take none of them meanwhile
        walked_a.append(shard)
        assert not b.take(shard)
        assert store.leases("evaluate:", clock[0]) == {f"evaluate:{shard}": "A"}
    assert sorted(walked_a) == list(range(SHARDS))
    assert store.leases("evaluate:", clock[0]) == {}  # all released after the walk
    assert a.take(3) and a.take(5)
    clock[0] = T0 + 20 * SECOND
    a.renew()  # renewed at 20 s: held until 50 s
    clock[0] = T0 + 40 * SECOND
    assert not b.take(3)
    assert sorted(s for s in b.walk()) == [s for s in range(SHARDS) if s not in (3, 5)]
    clock[0] = T0 + 51 * SECOND  # A died: its leases lapsed
    assert store.leases("evaluate:", clock[0]) == {}
    assert b.take(3) and b.take(5)
    a.renew()  # A comes back: it lost both, and knows it
    assert a.held == set()
    assert store.leases("evaluate", clock[0]) == {"evaluate:3": "B", "evaluate:5": "B"}


def test_shares_of_the_shards_follow_the_live_processes(store):
    clock = [T0]
    a, b, c = (ShardLeases(store, "deliver", h, lambda: clock[0], 30) for h in "ABC")
    assert len(a.take_share(60)) == SHARDS  # alone: everything
    a.release_all()
    assert len(b.take_share(60)) == SHARDS // 2  # two live processes now: half each
    assert len(a.take_share(60)) == SHARDS // 2
    assert a.held.isdisjoint(b.held)
    assert c.take_share(60) == frozenset()  # C joins while A and B hold everything: nothing free this pass
    a.release_all()
    b.release_all()
    shares = [len(x.take_share(60)) for x in (a, b, c)]  # the next passes: a third each
    assert shares == [6, 6, 4] and set().union(a.held, b.held, c.held) == set(range(SHARDS))
    for x in (a, b, c):
        x.release_all()
    c.leave()
    clock[0] = T0 + 61 * SECOND  # B's membership lapsed too (it stopped renewing it): A alone again
    assert len(a.take_share(60)) == SHARDS


def test_update_meta_loses_no_concurrent_update(store, backend):
    def add(own: Store) -> None:
        for _ in range(15):
            own.update_meta("counter", lambda value: str(int(value or "0") + 1))

    opened = [backend.open() for _ in range(3)]
    threads = [threading.Thread(target=add, args=(own,)) for own in opened]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for own in opened:
        own.close()
    assert store.get_meta("counter") == "45"


def test_runs_of_several_processes_all_count(store):
    store.add_run(T0 + SECOND, 10, 1)
    store.add_run(T0, 5, 0)  # a process whose run began a moment earlier finishes later
    totals = store.last_run()
    assert (totals.at, totals.runs, totals.customers, totals.errors) == (T0 + SECOND, 2, 15, 1)


def test_shard_state_reads_as_the_whole_store_until_the_shard_has_its_own(store):
    assert store.shard_state(4) == ShardState()
    store.save_evaluated_version("v1")
    store.mark_first_run(T0)
    assert store.shard_state(4) == ShardState("v1", T0)
    store.save_shard_state(4, ShardState("v2", T0, T0 + SECOND))
    assert store.shard_state(4) == ShardState("v2", T0, T0 + SECOND)
    assert store.shard_state(5) == ShardState("v1", T0)


# --- the outbox ---------------------------------------------------------------------------------------------

def test_two_claimers_never_get_the_same_event(store, backend):
    ids = put_events(store, 120)
    claimed: dict[str, list[str]] = {"A": [], "B": [], "C": []}
    start = threading.Barrier(len(claimed))

    def claim(holder: str) -> None:
        own = backend.open()
        start.wait()
        while batch := own.claim_due_events(T0, 7, holder, 60):
            claimed[holder] += [e.id for e in batch]
        own.close()

    threads = [threading.Thread(target=claim, args=(h,)) for h in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    everything = [i for got in claimed.values() for i in got]
    assert len(everything) == len(set(everything))
    assert sorted(everything) == sorted(ids)


def test_claims_are_oldest_first_and_exclusive_until_they_expire(store):
    ids = put_events(store, 5)
    first = store.claim_due_events(T0, 3, "A", 60)
    assert [e.id for e in first] == ids[:3]
    assert [e.id for e in store.claim_due_events(T0, 10, "B", 60)] == ids[3:]
    assert store.claim_due_events(T0 + 59 * SECOND, 10, "B", 60) == []
    assert [e.id for e in store.claim_due_events(T0 + 60 * SECOND, 10, "B", 60)] == ids


def test_events_not_yet_due_are_not_claimed(store):
    put_events(store, 2, at=T0)
    assert store.claim_due_events(T0 - SECOND, 10, "A", 60) == []


def test_failed_attempt_without_next_attempt_is_dead_and_replay_makes_it_pending(store):
    [event_id] = put_events(store, 1)
    store.claim_due_events(T0, 1, "A", 60)
    store.record_failed([event_id], T0, 410, "Gone", 12, None)
    dead = store.get_event(event_id)
    assert (dead.status, dead.attempts, dead.last_status, dead.last_error) == ("dead", 1, 410, "Gone")
    assert [e.id for e in store.list_events("dead", 10)] == [event_id]
    assert store.claim_due_events(T0 + timedelta(days=1), 10, "A", 60) == []
    later = T0 + timedelta(hours=2)
    assert store.replay_event(event_id, later)
    replayed = store.get_event(event_id)
    assert (replayed.status, replayed.next_attempt_at) == ("pending", later)
    assert (replayed.attempts, len(store.attempts_for(event_id))) == (0, 1), "the schedule restarts, history stays"
    assert [e.id for e in store.claim_due_events(later, 10, "B", 60)] == [event_id]


def test_failed_attempt_with_next_attempt_is_retried_then(store):
    [event_id] = put_events(store, 1)
    store.claim_due_events(T0, 1, "A", 60)
    retry_at = T0 + 30 * SECOND
    store.record_failed([event_id], T0, 503, "Service Unavailable", 40, retry_at)
    event = store.get_event(event_id)
    assert (event.status, event.attempts, event.next_attempt_at) == ("pending", 1, retry_at)
    assert store.claim_due_events(retry_at - SECOND, 10, "A", 60) == []
    assert [e.id for e in store.claim_due_events(retry_at, 10, "A", 60)] == [event_id]


def test_delivered_event_is_recorded_with_its_attempts(store):
    [event_id] = put_events(store, 1)
    store.claim_due_events(T0, 1, "A", 60)
    store.record_failed([event_id], T0, None, "connection refused", 3, T0 + SECOND)
    store.record_delivered([event_id], T0 + 2 * SECOND, 200, 25)
    event = store.get_event(event_id)
    assert (event.status, event.attempts, event.delivered_at, event.last_error) == (
        "delivered", 2, T0 + 2 * SECOND, None)
    assert [(a.status, a.error) for a in store.attempts_for(event_id)] == [(None, "connection refused"), (200, None)]
    assert store.event_counts(T0 + 3 * SECOND)["delivered"] == 1


def test_several_deliveries_are_recorded_at_once_each_with_its_status_and_duration(store):
    first, second = put_events(store, 2)
    store.claim_due_events(T0, 2, "A", 60)
    store.record_deliveries([([first], 200, 12), ([second], 204, 30)], T0 + SECOND)
    assert [(store.get_event(i).status, store.get_event(i).last_status) for i in (first, second)] == [
        ("delivered", 200), ("delivered", 204)]
    assert [(a.status, a.duration_ms) for a in store.attempts_for(second)] == [(204, 30)]


def test_released_claims_are_due_again_with_their_attempts_kept(store):
    [event_id] = put_events(store, 1)
    store.claim_due_events(T0, 1, "A", 60)
    store.record_failed([event_id], T0, 503, "Service Unavailable", 40, T0 + SECOND)
    assert [e.id for e in store.claim_due_events(T0 + SECOND, 1, "A", 60)] == [event_id]
    store.release_claims([event_id], T0 + 2 * SECOND)
    event = store.get_event(event_id)
    assert (event.status, event.attempts, event.next_attempt_at) == ("pending", 1, T0 + 2 * SECOND)
    assert [e.id for e in store.claim_due_events(T0 + 2 * SECOND, 1, "B", 60)] == [event_id]


def test_transitions_and_attempts_are_counted_for_metrics(store):
    assert (store.transition_count(), store.attempt_counts()) == (
        0, {"delivered": 0, "http_error": 0, "network_error": 0})
    store.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    transition = TransitionRecord("trn_1", "C-1", None, "New", T0, T0, "sha256:x")
    store.save_evaluations([evaluation(store.get_customer("C-1"), transition=transition, events=(welcome("C-1", 1),))])
    [event] = store.claim_due_events(T0, 10, "A", 60)
    store.record_failed([event.id], T0, None, "connection refused", 3, T0 + SECOND)
    store.record_failed([event.id], T0 + SECOND, 503, "Service Unavailable", 3, T0 + 2 * SECOND)
    store.record_delivered([event.id], T0 + 2 * SECOND, 200, 3)
    assert (store.transition_count(), store.attempt_counts()) == (
        1, {"delivered": 1, "http_error": 1, "network_error": 1})


def test_replay_of_an_unknown_event_says_so(store):
    assert not store.replay_event("evt_nope", T0)


def test_a_customers_later_event_waits_while_an_earlier_one_awaits_its_retry(store):
    [first] = put_events(store, 1)
    store.claim_due_events(T0, 10, "A", 60)
    retry_at = T0 + timedelta(hours=1)
    store.record_failed([first], T0, 503, "Service Unavailable", 5, retry_at)
    later = welcome("C-1", 1, T0 + SECOND)
    assert store.save_evaluations([evaluation(store.get_customer("C-1"), at=T0 + SECOND, events=(later,))]).events == 1
    assert store.claim_due_events(T0 + timedelta(minutes=30), 10, "A", 60) == [], "the later one waits"
    assert [e.id for e in store.claim_due_events(retry_at, 10, "A", 60)] == [first], "the retry goes first, alone"
    store.record_delivered([first], retry_at, 200, 5)
    assert [e.id for e in store.claim_due_events(retry_at + SECOND, 10, "B", 60)] == [later.id]


def test_an_unordered_event_neither_waits_for_nor_holds_back_the_customers_other_events(store):
    [first] = put_events(store, 1)
    store.claim_due_events(T0, 10, "A", 60)
    store.record_failed([first], T0, 503, "Service Unavailable", 5, T0 + timedelta(hours=1))
    loose = replace(welcome("C-1", 1, T0 + SECOND), campaign="survey", ordered=False)
    strict = welcome("C-1", 2, T0 + SECOND)
    store.save_evaluations([evaluation(store.get_customer("C-1"), at=T0 + SECOND, events=(loose, strict))])
    claimed = store.claim_due_events(T0 + timedelta(minutes=1), 10, "A", 60)
    assert [(e.id, e.ordered) for e in claimed] == [(loose.id, False)], "the ordered one still waits for the retry"
    store.record_failed([loose.id], T0 + timedelta(minutes=1), 503, "Service Unavailable", 5, T0 + timedelta(days=1))
    store.record_delivered([first], T0 + timedelta(hours=1), 200, 5)
    assert [e.id for e in store.claim_due_events(T0 + timedelta(hours=1), 10, "B", 60)] == [strict.id], \
        "a retrying unordered event holds nothing back"


def test_an_evaluation_with_more_events_than_one_transaction_holds_stores_each_once(store):
    store.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    events = tuple(welcome("C-1", n) for n in range(120))
    assert store.save_evaluations([evaluation(store.get_customer("C-1"), events=events)]).events == 120
    assert store.save_evaluations([evaluation(store.get_customer("C-1"), events=events)]).events == 0
    assert [e.id for e in store.list_events("pending", 200)] == [e.id for e in events]


def test_a_superseded_event_is_final_counted_and_listed_with_its_reason(store):
    first, second = put_events(store, 2)
    claimed = store.claim_due_events(T0, 10, "A", 60)
    assert [e.id for e in claimed] == [first, second] and all(e.recheck for e in claimed)
    store.record_superseded([Superseded(first, "the customer is now Active, no longer VIP", "trn_undo")], T0)

    gone = store.get_event(first)
    assert (gone.status, gone.last_error, gone.superseded_by, gone.next_attempt_at) == (
        "superseded", "the customer is now Active, no longer VIP", "trn_undo", None)
    assert store.attempts_for(first) == [], "nothing was sent, so no attempt is recorded"
    assert [e.id for e in store.list_events("superseded", 10)] == [first]
    counts = store.event_counts(T0)
    assert (counts["superseded"], counts["pending"], counts["held_out"]) == (1, 1, 0)
    store.release_claims([second], T0)
    assert [e.id for e in store.claim_due_events(T0 + timedelta(days=1), 10, "B", 60)] == [second]


def test_only_a_pending_event_can_be_superseded(store):
    [event_id] = put_events(store, 1)
    store.claim_due_events(T0, 1, "A", 60)
    store.record_delivered([event_id], T0, 200, 5)
    store.record_superseded([Superseded(event_id, "too late")], T0)
    assert store.get_event(event_id).status == "delivered"


def test_a_replayed_superseded_event_is_sent_as_it_is_and_any_other_replay_is_checked(store):
    superseded, dead = put_events(store, 2)
    store.claim_due_events(T0, 10, "A", 60)
    store.record_superseded([Superseded(superseded, "moved on")], T0)
    store.record_failed([dead], T0, 410, "Gone", 3, None)

    assert store.replay_event(superseded, T0 + SECOND) and store.replay_event(dead, T0 + SECOND)
    replayed = {e.id: e for e in store.claim_due_events(T0 + SECOND, 10, "B", 60)}
    assert (replayed[superseded].status, replayed[superseded].recheck) == ("pending", False)
    assert replayed[dead].recheck is True


def test_a_segment_change_records_since_when_and_other_saves_keep_it(store):
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=2))], T0)
    moved = evaluation(store.get_customer("C-1"), "New")
    moved.segment_since = T0 - timedelta(days=2)
    store.save_evaluations([moved])
    assert store.get_customer("C-1").segment_since == T0 - timedelta(days=2)
    store.save_evaluations([evaluation(store.get_customer("C-1"), "New", at=T0 + SECOND)])  # no change: None
    assert store.get_customer("C-1").segment_since == T0 - timedelta(days=2)


@pytest.mark.parametrize("status", ["refunded", "Refunded ", "VOID", "cancelled", "canceled"])
def test_the_default_excluded_statuses_do_not_count(store, status):
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=3), 4000),
                         order("C-1", "ORD-2", T0 - timedelta(days=1), 2500, status=status)], T0)
    facts = store.get_customer("C-1").facts
    assert (facts.order_count, facts.total_cents) == (1, 4000)


def test_changing_the_excluded_statuses_recounts_only_the_customers_it_touches(store):
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=3), 4000),
                         order("C-1", "ORD-2", T0 - timedelta(days=1), 2500, status="returned"),
                         order("C-2", "ORD-3", T0 - timedelta(days=1), 700, status="refunded"),
                         order("C-3", "ORD-4", T0 - timedelta(days=1), 100, status="shipped")], T0)
    for record in store.customers_by_id(["C-1", "C-2", "C-3"]):
        store.save_evaluations([evaluation(record)])
    assert (store.get_customer("C-1").facts.total_cents, store.get_customer("C-2").facts.total_cents) == (6500, 0)

    assert store.apply_excluded_statuses(frozenset({"returned", "cancelled"})) == 2
    assert store.excluded_statuses() == frozenset({"returned", "cancelled"})
    one, two, three = store.customers_by_id(["C-1", "C-2", "C-3"])
    assert (one.facts.order_count, one.facts.total_cents, one.facts.last_order_at) == (1, 4000, T0 - timedelta(days=3))
    assert (two.facts.order_count, two.facts.total_cents) == (1, 700)
    assert three.facts.total_cents == 100
    assert sorted(c.contact_id for batch in store.customers_to_evaluate(T0, False, 10) for c in batch) == [
        "C-1", "C-2"], "the recounted customers are due; the others are left alone"
    assert store.apply_excluded_statuses(frozenset({"returned", "cancelled"})) == 0, "unchanged: nothing to do"
    store.upsert_orders([order("C-3", "ORD-5", T0, 900, status="Returned")], T0)
    assert store.get_customer("C-3").facts.total_cents == 100, "new orders follow the applied list"


def test_a_new_store_records_the_defaults_its_orders_are_counted_under_so_applying_them_recounts_nothing(store):
    from worker.store.base import DEFAULT_EXCLUDED, DEFAULT_EXCLUDED_JSON
    assert (store.get_meta("excluded_statuses"), store.get_meta("order_days_timezone")) == (DEFAULT_EXCLUDED_JSON,
                                                                                            "UTC")
    store.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=3), 4000)], T0)
    assert store.apply_excluded_statuses(DEFAULT_EXCLUDED) == 0 and store.apply_timezone("UTC") == 0
    # no full pass over the orders was started: a recount leaves its marker behind (emptied when it ends)
    assert store.get_meta("excluded_statuses:recounting") is None
    assert store.get_meta("order_days_timezone:recounting") is None


# --- SQLite only: the file ----------------------------------------------------------------------------------

def test_sqlite_database_is_in_wal_mode(tmp_path):
    opened = new_store(tmp_path)
    with sqlite3.connect(tmp_path / "segments.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opened.close()


def test_close_closes_the_connections_of_every_thread(tmp_path):
    opened = new_store(tmp_path)
    elsewhere = threading.Thread(target=opened.count_customers)
    elsewhere.start()
    elsewhere.join()
    connections = set(opened._opened)
    assert len(connections) == 2, "this thread's and the other's"
    opened.close()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert opened.count_customers() == 0, "a use after close opens a fresh connection"
    opened.close()


def test_a_version_1_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "segments.db"
    opened = new_store(tmp_path)
    opened.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=40)), order("C-2", "ORD-2", T0)], T0)
    for record in opened.customers_by_id(["C-1", "C-2"]):
        opened.save_evaluations([evaluation(record, "Active")])
    opened.save_evaluations([evaluation(opened.get_customer("C-2"), "VIP", at=T0 + SECOND, transition=TransitionRecord(
        "trn_1", "C-2", "Active", "VIP", T0, T0 + SECOND, "sha256:x"))])
    opened.set_meta("first_run_at", "2026-02-01T00:00:00.000Z")
    opened.close()
    with sqlite3.connect(path) as db:  # what a version 1 program left behind
        for table, column in (("customers", "segment_since"), ("events", "superseded_by"), ("events", "recheck"),
                              ("events", "ordered")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")

    upgraded = new_store(tmp_path)
    assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert upgraded.get_customer("C-2").segment_since == T0, "from its last transition"
    assert upgraded.get_customer("C-1").segment_since == datetime(2026, 2, 1, tzinfo=T0.tzinfo), \
        "recorded silently: since the first run"
    upgraded.close()


def test_a_claim_renewed_by_its_holder_outlives_its_first_expiry_and_no_one_else_can_renew_it(store):
    first, second = put_events(store, 2)
    store.claim_due_events(T0, 10, "A", 20)
    assert store.renew_claims([first], "A", T0 + timedelta(seconds=60)) == 1
    assert store.renew_claims([second], "B", T0 + timedelta(seconds=60)) == 0, "B holds nothing"
    later = T0 + timedelta(seconds=30)
    assert [e.id for e in store.claim_due_events(later, 10, "B", 20)] == [second], "only the renewed one is held"
    assert store.claim_due_events(T0 + timedelta(seconds=61), 10, "C", 20)[0].id == first


def test_a_version_2_database_gains_the_sorted_lists_column_and_indexes(tmp_path):
    path = tmp_path / "segments.db"
    opened = new_store(tmp_path)
    opened.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=3), 500), order("C-2", "ORD-2", T0, 100)], T0)
    opened.close()
    with sqlite3.connect(path) as db:  # what a version 2 program left behind
        for index in ("customers_by_last_order", "customers_by_segment_last_order", "events_by_contact"):
            db.execute(f"DROP INDEX {index}")
        db.execute("ALTER TABLE customers DROP COLUMN last_order_key")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

    upgraded = new_store(tmp_path)
    assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION)
    newest_first = upgraded.list_customers_sorted(None, None, CustomerOrder("last_order", descending=True), None, 5)
    assert [c.contact_id for c in newest_first] == ["C-2", "C-1"]
    with sqlite3.connect(path) as db:
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"customers_by_last_order", "customers_by_segment_last_order", "events_by_contact"} <= indexes
    upgraded.close()


def test_a_version_3_database_gains_purchase_days_counted_without_making_anyone_due(tmp_path):
    path = tmp_path / "segments.db"
    opened = new_store(tmp_path)
    opened.upsert_orders([order("C-1", "ORD-1", T0 - timedelta(days=3), 500),
                          order("C-1", "ORD-2", T0 - timedelta(hours=1), 100), order("C-1", "ORD-3", T0, 250)], T0)
    opened.save_evaluations([evaluation(opened.get_customer("C-1"), "Active")])
    opened.close()
    with sqlite3.connect(path) as db:  # what a version 3 program left behind
        db.execute("ALTER TABLE orders DROP COLUMN order_day")
        for column in ("purchase_days", "first_day_cents"):
            db.execute(f"ALTER TABLE customers DROP COLUMN {column}")
        db.execute("DELETE FROM meta WHERE key = 'order_days_timezone'")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

    upgraded = new_store(tmp_path)
    assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION)
    facts = upgraded.get_customer("C-1").facts
    assert (facts.purchase_days, facts.first_day_cents) == (2, 500)  # ORD-2 and ORD-3 share T0's day (UTC)
    assert upgraded.order_days_timezone() == "UTC"
    assert list(upgraded.customers_to_evaluate(T0, everyone=False, batch_size=10)) == [], "nobody made due"
    upgraded.close()


def test_a_version_4_database_gains_the_outcome_columns_and_the_campaign_index(tmp_path):
    path = tmp_path / "segments.db"
    opened = new_store(tmp_path)
    opened.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    opened.close()
    with sqlite3.connect(path) as db:  # what a version 4 program left behind
        db.execute("DROP INDEX events_by_campaign")
        for table, column in (("events", "outcome_until"), ("events", "outcome_orders"), ("events", "outcome_cents"),
                              ("customers", "holdouts")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")

    upgraded = new_store(tmp_path)
    assert upgraded.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert upgraded.get_customer("C-1").holdouts == {}
    assert upgraded.campaign_outcomes("vip", T0) == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_by_campaign'").fetchone()
    upgraded.close()


# --- webhook subscriptions ----------------------------------------------------------------------------------

def test_subscriptions_are_kept_in_order_and_removed(store, backend):
    first = new_subscription("https://n8n.example.com/a", ["welcome", "vip", "welcome"], "flow a", T0)
    second = new_subscription("https://n8n.example.com/b", ["win-back"], "", T0)
    store.add_subscription(first)
    store.add_subscription(second)
    other = backend.open()  # another process sees them, secrets included (it signs with them)
    assert other.subscriptions() == [first, second]
    assert first.campaigns == ("welcome", "vip")
    assert other.remove_subscription(first.id)
    assert not other.remove_subscription(first.id)
    other.close()
    assert store.subscriptions() == [second]


def test_subscriptions_made_at_once_are_all_kept(store, backend):
    made = [new_subscription(f"https://n8n.example.com/{n}", ["welcome"], "", T0) for n in range(6)]

    def add(subscriptions):
        own = backend.open()
        for subscription in subscriptions:
            own.add_subscription(subscription)
        own.close()

    threads = [threading.Thread(target=add, args=(made[n::3],)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(s.id for s in store.subscriptions()) == sorted(s.id for s in made)
