"""The store's dashboard reads: transitions counted per UTC day and segment entered, and customer search by id
prefix, email or name. Run against every backend (SQLite, DynamoDB): each must pass it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest

from tests.conftest import Backend
from tests.factories import T0, UTC, order
from worker.store.base import Evaluation, NewEvent, Store, TransitionRecord


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
