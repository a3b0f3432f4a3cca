"""The store's dashboard reads: transitions counted per UTC day and segment entered, customer search by id
prefix, email or name, customer pages sorted by spend or last order in both directions, counts per filter, a
customer's events, and dead events replayed in bulk. Run against every backend (SQLite, DynamoDB): each must pass
it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest

from tests.conftest import Backend
from tests.factories import T0, UTC, order
from worker.store.base import CustomerOrder, Evaluation, NewEvent, Store, Superseded, TransitionRecord


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


def record_transition(store: Store, contact_id: str, to_segment: str, occurred_at: datetime,
                      events: Sequence[NewEvent] = ()) -> TransitionRecord:
    """Move one customer (created with one order if unknown) into `to_segment`, as an evaluation would."""
    record = store.get_customer(contact_id)
    if record is None:
        store.upsert_orders([order(contact_id, f"{contact_id}-ORD-1", occurred_at)], occurred_at)
        record = store.get_customer(contact_id)
    transition = TransitionRecord(
        id=f"tr_{contact_id}_{to_segment}_{occurred_at.timestamp():.3f}", contact_id=contact_id,
        from_segment=record.segment, to_segment=to_segment, occurred_at=occurred_at, detected_at=occurred_at,
        rules_version="sha256:test")
    saved = store.save_evaluations([Evaluation(
        contact_id=contact_id, seen_version=record.version, seen_segment=record.segment, segment=to_segment,
        purchase_frequency="One-time", next_check_at=None, evaluated_at=occurred_at, transition=transition,
        events=tuple(events))])
    assert saved.transitions == 1, saved
    return transition


def add_customer(store: Store, contact_id: str, email: str | None = None, name: str | None = None) -> None:
    store.upsert_orders([order(contact_id, f"{contact_id}-ORD-1", T0 - timedelta(days=3), email=email, name=name)],
                        T0)


def found(store: Store, text: str, limit: int = 100) -> list[str]:
    return [record.contact_id for record in store.search_customers(text, limit)]


# --- transitions per day ---------------------------------------------------------------------------------------

def test_no_transitions_give_no_days(store):
    assert store.transitions_per_day(T0 - timedelta(days=90)) == []


def test_transitions_are_counted_per_day_and_segment_entered(store):
    day = datetime(2026, 2, 20, tzinfo=UTC)
    record_transition(store, "C-1", "New", day + timedelta(hours=9))
    record_transition(store, "C-2", "New", day + timedelta(hours=17))
    record_transition(store, "C-3", "VIP", day + timedelta(hours=12))
    record_transition(store, "C-1", "Active", day + timedelta(days=1, hours=1))

    assert store.transitions_per_day(day - timedelta(days=10)) == [
        ("2026-02-20", "New", 2), ("2026-02-20", "VIP", 1), ("2026-02-21", "Active", 1)]


def test_days_are_utc_calendar_days(store):
    midnight = datetime(2026, 2, 21, tzinfo=UTC)
    record_transition(store, "C-1", "Dormant", midnight - timedelta(milliseconds=1))
    record_transition(store, "C-2", "Dormant", midnight)

    assert store.transitions_per_day(midnight - timedelta(days=1)) == [
        ("2026-02-20", "Dormant", 1), ("2026-02-21", "Dormant", 1)]


def test_only_transitions_from_since_on_count(store):
    since = datetime(2026, 1, 1, tzinfo=UTC)
    record_transition(store, "C-1", "New", since - timedelta(milliseconds=1))
    record_transition(store, "C-2", "New", since)
    record_transition(store, "C-3", "New", since + timedelta(hours=5))

    assert store.transitions_per_day(since) == [("2026-01-01", "New", 2)]


def test_days_come_oldest_first_whatever_the_order_of_recording(store):
    for contact, days_back in (("C-1", 1), ("C-2", 30), ("C-3", 7)):
        record_transition(store, contact, "Active", T0 - timedelta(days=days_back))

    days = [day for day, _, _ in store.transitions_per_day(T0 - timedelta(days=60))]

    assert days == ["2026-01-22", "2026-02-14", "2026-02-20"]


# --- search ----------------------------------------------------------------------------------------------------

@pytest.fixture
def customers(store: Store) -> Store:
    add_customer(store, "C-100", "ann.lee@boxworks.example", "Ann Lee")
    add_customer(store, "C-101", "bob@cartonia.example", "Bob Stone")
    add_customer(store, "C-200", "carla@boxworks.example", "Carla Émile")
    add_customer(store, "X-C-1", "dan@wrapco.example", "Dan 100%_Cotton")
    add_customer(store, "C-300")  # no email, no name
    return store


def test_contact_id_matches_by_prefix(customers):
    assert found(customers, "C-1") == ["C-100", "C-101"]
    assert found(customers, "-10") == []  # inside an id is not a prefix (and no email or name has it)


def test_email_and_name_match_anywhere(customers):
    assert found(customers, "boxworks") == ["C-100", "C-200"]
    assert found(customers, "stone") == ["C-101"]
    assert found(customers, "lee@box") == ["C-100"]


def test_search_ignores_case(customers):
    assert found(customers, "ANN LEE") == ["C-100"]
    assert found(customers, "c-10") == ["C-100", "C-101"]
    assert found(customers, "BOXWORKS.EXAMPLE") == ["C-100", "C-200"]


def test_search_ignores_case_beyond_ascii(customers):
    assert found(customers, "émile") == ["C-200"]
    assert found(customers, "ÉMILE") == ["C-200"]


def test_wildcard_characters_are_literal(customers):
    assert found(customers, "%") == ["X-C-1"]
    assert found(customers, "0%_c") == ["X-C-1"]
    assert found(customers, "_") == ["X-C-1"]
    assert found(customers, "C_1") == []


def test_results_are_ordered_by_contact_id_and_limited(customers):
    assert found(customers, "example") == ["C-100", "C-101", "C-200", "X-C-1"]
    assert found(customers, "example", limit=2) == ["C-100", "C-101"]


def test_nothing_found_is_an_empty_list(customers):
    assert found(customers, "nobody-has-this") == []


def test_found_customers_are_whole_records(customers):
    [record] = customers.search_customers("bob@", 10)

    assert (record.contact_id, record.email, record.name) == ("C-101", "bob@cartonia.example", "Bob Stone")
    assert record.facts.order_count == 1


# --- customer pages in any order -------------------------------------------------------------------------------

def place(store: Store, contact_id: str, segment: str, frequency: str) -> None:
    """Store `segment` and `frequency` for a customer, as an evaluation would."""
    record = store.get_customer(contact_id)
    saved = store.save_evaluations([Evaluation(
        contact_id=contact_id, seen_version=record.version, seen_segment=record.segment, segment=segment,
        purchase_frequency=frequency, next_check_at=None, evaluated_at=T0)])
    assert saved.saved == 1


# (contact_id, spend in cents, days before T0 of the last order or None when no order counts, segment, frequency):
# ties on spend (C-1/C-3, C-2/C-4) and on the last order (C-1/C-4), and a customer whose only order was cancelled.
BASE = [("C-1", 100_00, 3, "Active", "Monthly"), ("C-2", 300_00, 10, "VIP", "Weekly"),
        ("C-3", 100_00, 40, "Active", "Weekly"), ("C-4", 300_00, 3, "VIP", "Monthly"),
        ("C-5", 200_00, 95, "Dormant", "Monthly"), ("C-6", 50_00, None, "New", "None")]


@pytest.fixture
def base(store: Store) -> Store:
    for contact_id, cents, days, segment, frequency in BASE:
        cancelled = days is None
        store.upsert_orders([order(contact_id, f"{contact_id}-ORD", T0 - timedelta(days=days or 1), cents,
                                   status="cancelled" if cancelled else None)], T0)
        place(store, contact_id, segment, frequency)
    return store


def expected(order: CustomerOrder, segment: str | None = None, frequency: str | None = None) -> list[str]:
    """BASE in `order`, worked out here from the table above, not by the store's own key."""
    def value(row: tuple) -> int:
        _, cents, days, _, _ = row
        if order.key == "total_spend":
            return cents if days is not None else 0  # a cancelled order does not count
        if order.key == "last_order":
            return -10**9 if days is None else -days  # no order: before every date
        return 0
    rows = [r for r in BASE if (segment is None or r[3] == segment) and (frequency is None or r[4] == frequency)]
    return [r[0] for r in sorted(rows, key=lambda r: (value(r), r[0]), reverse=order.descending)]


def page_through(store: Store, order: CustomerOrder, limit: int, segment: str | None = None,
                 frequency: str | None = None) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = store.list_customers_sorted(segment, frequency, order, after, limit)
        pages.append([r.contact_id for r in page])
        if len(page) < limit:
            return pages
        after = order.position(page[-1])


ORDERS = [CustomerOrder(key, descending) for key in ("contact_id", "total_spend", "last_order")
          for descending in (False, True)]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: ("-" if o.descending else "") + o.key)
def test_pages_in_any_order_cover_everyone_once_with_ties_broken_by_contact_id(base, order):
    pages = page_through(base, order, limit=2)

    assert [c for page in pages for c in page] == expected(order)
    assert [len(page) for page in pages] == [2, 2, 2, 0]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: ("-" if o.descending else "") + o.key)
def test_the_page_before_a_row_is_the_page_after_it_in_the_reversed_order(base, order):
    everyone = expected(order)
    third = base.get_customer(everyone[2])

    before = base.list_customers_sorted(None, None, order.reversed(), order.position(third), 2)

    assert [r.contact_id for r in before][::-1] == everyone[:2]


def test_spend_pages_split_a_tie_between_two_pages_without_repeating_or_losing_a_row(base):
    by_spend = CustomerOrder("total_spend")

    first = base.list_customers_sorted(None, None, by_spend, None, 2)  # C-6 (0), then C-1 of the two at 100.00
    second = base.list_customers_sorted(None, None, by_spend, by_spend.position(first[-1]), 2)

    assert [r.contact_id for r in first] == ["C-6", "C-1"]
    assert [r.contact_id for r in second] == ["C-3", "C-5"]


def test_a_customer_without_a_counted_order_comes_first_by_last_order_and_last_in_reverse(base):
    oldest_first = base.list_customers_sorted(None, None, CustomerOrder("last_order"), None, 10)
    newest_first = base.list_customers_sorted(None, None, CustomerOrder("last_order", descending=True), None, 10)

    assert oldest_first[0].contact_id == newest_first[-1].contact_id == "C-6"
    assert oldest_first[0].facts.last_order_at is None


@pytest.mark.parametrize(("segment", "frequency"), [("VIP", None), (None, "Monthly"), ("Active", "Weekly"),
                                                    ("Dormant", "Weekly")])
@pytest.mark.parametrize("order", ORDERS[2:], ids=lambda o: ("-" if o.descending else "") + o.key)
def test_sorted_pages_keep_to_the_filters(base, order, segment, frequency):
    pages = page_through(base, order, limit=1, segment=segment, frequency=frequency)

    assert [c for page in pages for c in page] == expected(order, segment, frequency)


def test_sorted_pages_hold_whole_records(base):
    [first] = base.list_customers_sorted("VIP", None, CustomerOrder("total_spend", descending=True), None, 1)

    assert (first.contact_id, first.segment, first.purchase_frequency, first.facts.total_cents) == (
        "C-4", "VIP", "Monthly", 300_00), "of the two at 300.00, the later contact_id first: all descending"
    assert first.facts.last_order_at == T0 - timedelta(days=3)


@pytest.mark.parametrize(("segment", "frequency", "count"), [
    (None, None, 6), ("VIP", None, 2), ("Active", None, 2), ("Gold", None, 0), (None, "Monthly", 3),
    (None, "Weekly", 2), ("Active", "Weekly", 1), ("New", "Weekly", 0)])
def test_customers_are_counted_per_filter_or_the_backend_says_it_cannot(base, backend, segment, frequency, count):
    counted = base.count_customers_where(segment, frequency)

    if backend.name == "dynamodb" and segment is not None and frequency is not None:
        assert counted is None, "no index holds both: counting would read the whole segment"
    else:
        assert counted == count


# --- a customer's events ---------------------------------------------------------------------------------------

def campaign_event(contact_id: str, campaign: str, n: int, at: datetime = T0) -> NewEvent:
    return NewEvent(id=f"evt_{contact_id}_{campaign}_{n}", contact_id=contact_id, campaign=campaign, webhook="n8n",
                    type="segment.entered", occurred_at=at - timedelta(hours=n), body="{}")


def queue(store: Store, contact_id: str, events: Sequence[NewEvent]) -> None:
    """Events queued for a customer (created with one order if unknown) by one evaluation."""
    if store.get_customer(contact_id) is None:
        store.upsert_orders([order(contact_id, f"{contact_id}-ORD-Q", T0 - timedelta(days=1))], T0)
    record = store.get_customer(contact_id)
    saved = store.save_evaluations([Evaluation(
        contact_id=contact_id, seen_version=record.version, seen_segment=record.segment, segment="New",
        purchase_frequency="One-time", next_check_at=None, evaluated_at=T0, events=tuple(events))])
    assert saved.events == len(events)


def kill(store: Store, event_ids: Sequence[str]) -> None:
    """One refused attempt each: dead at once."""
    claimed = {e.id for e in store.claim_due_events(T0, 100, "test", 60)}
    assert set(event_ids) <= claimed
    store.release_claims(sorted(claimed - set(event_ids)), T0)
    store.record_failed(list(event_ids), T0, 410, "HTTP 410 Gone", 5, None)


def test_a_customers_events_come_in_the_order_they_were_queued_whatever_their_status(store):
    queue(store, "C-1", [campaign_event("C-1", "welcome", 1)])
    queue(store, "C-2", [campaign_event("C-2", "welcome", 1)])
    queue(store, "C-1", [campaign_event("C-1", "vip", 2), campaign_event("C-1", "win-back", 3)])
    kill(store, ["evt_C-1_vip_2"])

    events = store.events_for("C-1")

    assert [(e.id, e.status) for e in events] == [
        ("evt_C-1_welcome_1", "pending"), ("evt_C-1_vip_2", "dead"), ("evt_C-1_win-back_3", "pending")]
    assert events[1].last_error == "HTTP 410 Gone" and events[1].attempts == 1
    assert [e.id for e in store.events_for("C-2")] == ["evt_C-2_welcome_1"]
    assert store.events_for("C-NOBODY") == []


def test_a_customers_latest_events_are_kept_when_there_are_more_than_the_limit(store):
    for n in range(5):
        queue(store, "C-1", [campaign_event("C-1", "welcome", n)])

    assert [e.id for e in store.events_for("C-1", limit=2)] == ["evt_C-1_welcome_3", "evt_C-1_welcome_4"]


# --- dead events replayed in bulk ------------------------------------------------------------------------------

@pytest.fixture
def outbox(store: Store) -> Store:
    """Dead: vip x3 (C-1, C-2, C-3, oldest first) and welcome x1 (C-4); a superseded vip (C-5), a delivered vip
    (C-6) and a pending vip (C-7)."""
    events = {c: campaign_event(c, "welcome" if c == "C-4" else "vip", 1) for c in
              ("C-1", "C-2", "C-3", "C-4", "C-5", "C-6", "C-7")}
    for contact_id, event in events.items():
        queue(store, contact_id, [event])
    kill(store, [events[c].id for c in ("C-1", "C-2", "C-3", "C-4")])
    store.claim_due_events(T0, 10, "test", 60)
    store.record_superseded([Superseded(events["C-5"].id, "moved on")], T0)
    store.record_delivered([events["C-6"].id], T0, 200, 5)
    store.release_claims([events["C-7"].id], T0)
    return store


def statuses(store: Store) -> dict[str, str]:
    return {e.contact_id: e.status for e in store.list_events(None, 100)}


def test_dead_events_of_one_campaign_are_replayed_as_one_replay_each_and_nothing_else_moves(outbox):
    later = T0 + timedelta(hours=1)

    assert outbox.replay_dead_events(later, campaign="vip") == 3

    assert statuses(outbox) == {"C-1": "pending", "C-2": "pending", "C-3": "pending", "C-4": "dead",
                                "C-5": "superseded", "C-6": "delivered", "C-7": "pending"}
    replayed = outbox.get_event("evt_C-1_vip_1")
    assert (replayed.attempts, replayed.next_attempt_at, replayed.recheck) == (0, later, True)
    assert len(outbox.attempts_for(replayed.id)) == 1, "the history stays"
    assert {e.contact_id for e in outbox.claim_due_events(later, 10, "B", 60)} == {"C-1", "C-2", "C-3", "C-7"}


def test_replaying_every_dead_event_leaves_superseded_ones_alone(outbox):
    assert outbox.replay_dead_events(T0, campaign=None) == 4

    assert outbox.count_events("dead") == 0
    assert statuses(outbox)["C-5"] == "superseded"


def test_a_bulk_replay_stops_at_its_limit_oldest_first_and_the_next_one_goes_on(outbox):
    assert outbox.replay_dead_events(T0, campaign="vip", limit=2) == 2
    assert [c for c, s in sorted(statuses(outbox).items()) if s == "dead"] == ["C-3", "C-4"]
    assert outbox.replay_dead_events(T0, campaign="vip", limit=2) == 1
    assert outbox.replay_dead_events(T0, campaign="vip", limit=2) == 0


def test_dead_events_are_counted_per_campaign(outbox):
    assert (outbox.count_events("dead"), outbox.count_events("dead", "vip"), outbox.count_events("dead", "welcome"),
            outbox.count_events("dead", "nope"), outbox.count_events("superseded", "vip")) == (4, 3, 1, 0, 1)


def test_two_bulk_replays_at_once_replay_each_dead_event_once(outbox, backend):
    replayed: list[int] = []
    start = threading.Barrier(2)

    def replay() -> None:
        own = backend.open()
        start.wait()
        replayed.append(own.replay_dead_events(T0, campaign=None))
        own.close()

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(replayed) == 4
    assert outbox.count_events("dead") == 0
