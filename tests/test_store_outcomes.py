"""Campaign holdouts and outcomes in the store, on every backend (SQLite, DynamoDB): held-out events that are kept
and never sent, the customer's holdout groups, each measured event's outcome kept exact at ingest (late orders,
cancellations, re-dated and moved orders), and the per-month sums of a campaign's report. Then what only DynamoDB
has: an order that races the customer's first measured event or another measurement, and tables of version 4,
which gain the index of a campaign's events."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import Backend, new_dynamodb_url
from tests.dynamo_server import REGION
from tests.factories import T0, order
from worker.store import open_store
from worker.store.base import Evaluation, NewEvent, OutcomeCell, Store, StoreUnavailable, TransitionRecord
from worker.store.dynamodb import TABLES, DynamoConfig, DynamoDBStore, create_tables, make_client
from worker.store.dynamodb import tables as dynamo_tables

UTC = timezone.utc
DAY = timedelta(days=1)
WINDOW = 30 * DAY
FIRST_ORDER = T0 - 60 * DAY  # every customer's first order: before every event, so it measures nothing


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


def event(contact_id: str, occurred_at: datetime = T0, until: datetime | None = T0 + WINDOW,
          campaign: str = "win-back", held_out: bool = False, n: int = 1) -> NewEvent:
    """A campaign event of the customer, measured until `until` (None: not measured)."""
    return NewEvent(id=f"evt_{campaign}_{contact_id}_{n}", contact_id=contact_id, campaign=campaign, webhook="n8n",
                    type="segment.entered", occurred_at=occurred_at, body="{}", held_out=held_out,
                    outcome_until=until)


def save(store: Store, contact_id: str, *events: NewEvent, at: datetime = T0,
         holdouts: Mapping[str, bool] | None = None) -> None:
    """An evaluation of the customer (a customer with an order, as read now) that stores `events`."""
    record = store.get_customer(contact_id)
    saved = store.save_evaluations([Evaluation(
        contact_id=contact_id, seen_version=record.version, seen_segment=record.segment, segment="Dormant",
        purchase_frequency="One-time", next_check_at=None, evaluated_at=at, events=events, holdouts=holdouts)])
    assert saved.saved == 1


def customer_with(store: Store, contact_id: str, *events: NewEvent, **options: object) -> list[str]:
    """A customer with one order long before, evaluated with `events`; their ids."""
    store.upsert_orders([order(contact_id, f"FIRST-{contact_id}", FIRST_ORDER)], T0)
    save(store, contact_id, *events, **options)
    return [e.id for e in events]


def outcome(store: Store, event_id: str) -> tuple[int, int]:
    found = store.get_event(event_id)
    return found.outcome_orders, found.outcome_cents


# --- held out -------------------------------------------------------------------------------------------------

def test_a_held_out_event_is_kept_counted_and_listed_but_never_claimed_or_replayed(store):
    held, sent = customer_with(store, "C-1", event("C-1", held_out=True),
                               event("C-1", campaign="welcome", held_out=False))

    assert store.get_event(held).status == "held_out"
    assert [e.id for e in store.claim_due_events(T0 + DAY, 10, "A", 60)] == [sent]
    store.record_delivered([sent], T0 + DAY, 200, 5)
    counts = store.event_counts(T0)
    assert (counts["held_out"], counts["delivered"], counts["pending"]) == (1, 1, 0)
    assert store.count_events("held_out") == 1 and store.count_events("held_out", "win-back") == 1
    assert [e.id for e in store.list_events("held_out", 10)] == [held]
    assert {e.id for e in store.list_events(None, 10)} == {held, sent}

    assert store.replay_event(held, T0 + DAY) is False, "the control group is never sent"
    assert store.get_event(held).status == "held_out"
    assert store.claim_due_events(T0 + 2 * DAY, 10, "B", 60) == []


def test_an_event_reads_back_its_group_and_outcome_window(store):
    held, sent, unmeasured = customer_with(store, "C-1", event("C-1", held_out=True),
                                           event("C-1", campaign="welcome"),
                                           event("C-1", campaign="vip", until=None))
    records = {e.id: e for e in store.events_for("C-1")}
    assert (records[held].held_out, records[held].outcome_until) == (True, T0 + WINDOW)
    assert (records[sent].held_out, records[sent].outcome_until) == (False, T0 + WINDOW)
    assert (records[unmeasured].held_out, records[unmeasured].outcome_until) == (False, None)


def test_holdouts_saved_with_an_evaluation_are_read_back_and_kept_until_new_ones_are_drawn(store):
    store.upsert_orders([order("C-1", "ORD-1", FIRST_ORDER), order("C-2", "ORD-2", FIRST_ORDER)], T0)
    assert store.get_customer("C-1").holdouts == {}, "no group drawn yet"
    save(store, "C-1", event("C-1", held_out=True), holdouts={"win-back": True, "welcome": False})
    assert store.get_customer("C-1").holdouts == {"win-back": True, "welcome": False}
    assert [c.holdouts for c in store.customers_by_id(["C-1", "C-2"])] == [{"win-back": True, "welcome": False}, {}]

    save(store, "C-1", at=T0 + DAY)  # drew nothing new: holdouts None
    assert store.get_customer("C-1").holdouts == {"win-back": True, "welcome": False}
    save(store, "C-1", event("C-1", campaign="vip"), at=T0 + 2 * DAY,
         holdouts={"win-back": True, "welcome": False, "vip": False})
    assert store.get_customer("C-1").holdouts == {"win-back": True, "welcome": False, "vip": False}


# --- outcomes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("placed", "status", "expected"), [
    (T0 + 2 * DAY, None, (1, 1500)),
    (T0 + timedelta(milliseconds=1), None, (1, 1500)),
    (T0 + WINDOW - DAY, None, (1, 1500)),
    (T0, None, (0, 0)),  # at the event: not after it
    (T0 - DAY, None, (0, 0)),
    (T0 + WINDOW, None, (0, 0)),  # the end of the window is exclusive
    (T0 + WINDOW + DAY, None, (0, 0)),
    (T0 + 2 * DAY, "cancelled", (0, 0)),
    (T0 + 2 * DAY, "Refunded", (0, 0)),
    (T0 + 2 * DAY, "shipped", (1, 1500)),
], ids=["inside", "a-moment-after", "the-day-before-the-end", "at-the-event", "before", "at-the-end", "after",
        "cancelled", "refunded", "shipped"])
def test_an_order_counts_in_the_outcome_only_after_the_event_and_before_the_end_of_its_window(
        store, placed, status, expected):
    [measured] = customer_with(store, "C-1", event("C-1"))
    store.upsert_orders([order("C-1", "ORD-1", placed, 1500, status=status)], T0 + DAY)
    assert outcome(store, measured) == expected


def test_every_order_in_the_window_adds_up_and_the_other_events_are_measured_by_their_own(store):
    first, second = customer_with(store, "C-1", event("C-1", T0, T0 + WINDOW),
                                  event("C-1", T0 + 10 * DAY, T0 + 15 * DAY, campaign="vip"))
    store.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 1000)], T0 + DAY)
    store.upsert_orders([order("C-1", "ORD-2", T0 + 12 * DAY, 2500), order("C-1", "ORD-3", T0 + 20 * DAY, 400)],
                        T0 + 20 * DAY)
    assert outcome(store, first) == (3, 3900)
    assert outcome(store, second) == (1, 2500)


def test_cancelling_a_counted_order_later_takes_it_out_and_re_dating_moves_it(store):
    [measured] = customer_with(store, "C-1", event("C-1"))
    store.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 1000), order("C-1", "ORD-2", T0 + 3 * DAY, 2000)], T0)
    assert outcome(store, measured) == (2, 3000)
    store.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 1000, status="cancelled")], T0 + 4 * DAY)
    assert outcome(store, measured) == (1, 2000)
    store.upsert_orders([order("C-1", "ORD-2", T0 + WINDOW + DAY, 2000)], T0 + 5 * DAY)  # re-dated past the end
    assert outcome(store, measured) == (0, 0)
    store.upsert_orders([order("C-1", "ORD-1", T0 + 2 * DAY, 1200)], T0 + 6 * DAY)  # counted again, changed
    assert outcome(store, measured) == (1, 1200)


def test_an_order_moved_to_another_customer_moves_its_outcome(store):
    [one] = customer_with(store, "C-1", event("C-1"))
    [two] = customer_with(store, "C-2", event("C-2"))
    store.upsert_orders([order("C-1", "ORD-X", T0 + DAY, 1800)], T0 + DAY)
    assert (outcome(store, one), outcome(store, two)) == ((1, 1800), (0, 0))
    store.upsert_orders([order("C-2", "ORD-X", T0 + DAY, 1800)], T0 + 2 * DAY)
    assert (outcome(store, one), outcome(store, two)) == ((0, 0), (1, 1800))


def test_orders_placed_after_the_event_before_it_was_saved_count_as_soon_as_it_is_saved(store):
    store.upsert_orders([order("C-1", "FIRST", FIRST_ORDER), order("C-1", "ORD-1", T0 + DAY, 700),
                         order("C-1", "ORD-2", T0 + 2 * DAY, 300), order("C-1", "ORD-3", T0 - DAY, 5000)], T0)
    measured = event("C-1")
    save(store, "C-1", measured, at=T0 + 3 * DAY)  # the move dated T0, found three days later
    assert outcome(store, measured.id) == (2, 1000)


def test_an_event_without_an_outcome_window_measures_nothing(store):
    [unmeasured] = customer_with(store, "C-1", event("C-1", until=None))
    store.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 700)], T0 + DAY)
    assert outcome(store, unmeasured) == (0, 0)
    assert store.campaign_outcomes("win-back", T0) == []


def test_changing_the_excluded_statuses_measures_the_outcomes_again(store):
    [measured] = customer_with(store, "C-1", event("C-1"))
    store.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 700, status="returned"),
                         order("C-1", "ORD-2", T0 + 2 * DAY, 300)], T0 + 2 * DAY)
    assert outcome(store, measured) == (2, 1000)
    assert store.apply_excluded_statuses(frozenset({"returned"})) == 1
    assert outcome(store, measured) == (1, 300)


# --- a campaign's outcomes ------------------------------------------------------------------------------------

def test_campaign_outcomes_sum_each_month_group_and_closed_window_exactly(store):
    jan_10, jan_20, jan_31_late = (datetime(2026, 1, 10, 9, tzinfo=UTC), datetime(2026, 1, 20, 9, tzinfo=UTC),
                                   datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    feb_15 = datetime(2026, 2, 15, 9, tzinfo=UTC)
    one = customer_with(store, "C-1", event("C-1", jan_10, jan_10 + WINDOW))
    customer_with(store, "C-2", event("C-2", jan_20, jan_20 + WINDOW))  # sent, closed, no order
    customer_with(store, "C-3", event("C-3", jan_31_late, jan_31_late + 10 * DAY, held_out=True))
    customer_with(store, "C-4", event("C-4", feb_15, feb_15 + WINDOW))  # still open at T0
    customer_with(store, "C-5", event("C-5", jan_10, jan_10 + WINDOW, campaign="vip"))  # another campaign
    customer_with(store, "C-6", event("C-6", jan_10, None))  # not measured
    store.upsert_orders([
        order("C-1", "O-1", jan_10 + DAY, 1000), order("C-1", "O-2", jan_10 + 2 * DAY, 3000),
        order("C-3", "O-3", jan_31_late + DAY, 2500), order("C-4", "O-4", feb_15 + DAY, 700),
        order("C-5", "O-5", jan_10 + DAY, 9900), order("C-6", "O-6", jan_10 + DAY, 8800),
    ], T0)
    assert outcome(store, one[0]) == (2, 4000)

    assert store.campaign_outcomes("win-back", T0) == [
        # cents_squared sums each event's spend squared: 4000², not 1000² + 3000²
        OutcomeCell("2026-01", held_out=False, closed=True, events=2, converted=1, orders=2, cents=4000,
                    cents_squared=16_000_000),
        OutcomeCell("2026-01", held_out=True, closed=True, events=1, converted=1, orders=1, cents=2500,
                    cents_squared=6_250_000),  # 23:30 UTC on 31 January: January, whatever the rules' timezone
        OutcomeCell("2026-02", held_out=False, closed=False, events=1, converted=1, orders=1, cents=700,
                    cents_squared=490_000),
    ]
    assert store.campaign_outcomes("vip", T0) == [OutcomeCell("2026-01", False, True, 1, 1, 1, 9900, 98_010_000)]
    assert store.campaign_outcomes("welcome", T0) == []


def test_a_window_is_closed_from_its_end_on(store):
    start = T0 - 10 * DAY
    customer_with(store, "C-1", event("C-1", start, T0))
    assert [cell.closed for cell in store.campaign_outcomes("win-back", T0 - timedelta(milliseconds=1))] == [False]
    assert [cell.closed for cell in store.campaign_outcomes("win-back", T0)] == [True]


# --- what a threshold experiment's report reads -----------------------------------------------------------------

def moved(store: Store, contact_id: str, to_segment: str, at: datetime, n: int = 1) -> None:
    """A transition of the customer into `to_segment` at `at`, saved as an evaluation saves it."""
    record = store.get_customer(contact_id)
    transition = TransitionRecord(id=f"trn_{contact_id}_{n}", contact_id=contact_id, from_segment=record.segment,
                                  to_segment=to_segment, occurred_at=at, detected_at=at, rules_version="v")
    saved = store.save_evaluations([Evaluation(
        contact_id=contact_id, seen_version=record.version, seen_segment=record.segment, segment=to_segment,
        purchase_frequency="One-time", next_check_at=None, evaluated_at=at, transition=transition,
        segment_since=at)])
    assert saved.saved == 1


def test_segment_entries_are_each_customer_s_first_move_into_the_segment_within_the_span(store):
    for contact_id in ("C-1", "C-2", "C-3", "C-4"):
        store.upsert_orders([order(contact_id, f"FIRST-{contact_id}", FIRST_ORDER)], T0)
    moved(store, "C-1", "VIP", T0 + DAY)
    moved(store, "C-1", "Active", T0 + 2 * DAY, n=2)
    moved(store, "C-1", "VIP", T0 + 3 * DAY, n=3)  # entered again: the first entry is the one that counts
    moved(store, "C-2", "VIP", T0)  # at the start itself: not after it
    moved(store, "C-3", "Dormant", T0 + DAY)  # another segment
    moved(store, "C-4", "VIP", T0 + 10 * DAY)  # after the span

    assert store.segment_entries("VIP", T0, T0 + 5 * DAY) == [("C-1", T0 + DAY)]
    assert store.segment_entries("VIP", T0 - DAY, T0 + 10 * DAY) == [("C-1", T0 + DAY), ("C-2", T0),
                                                                     ("C-4", T0 + 10 * DAY)]
    assert store.segment_entries("Gold", T0 - DAY, T0 + 10 * DAY) == []


def test_orders_in_windows_count_counted_orders_strictly_inside_each_window_in_the_order_given(store):
    store.upsert_orders([order("C-1", "A", T0 + DAY, 1_000), order("C-1", "B", T0 + 5 * DAY, 2_000),
                         order("C-1", "X", T0 + 2 * DAY, 9_000, status="cancelled"),
                         order("C-2", "C", T0 + 3 * DAY, 4_000)], T0 + 6 * DAY)
    windows = [("C-2", T0, T0 + 10 * DAY), ("C-1", T0, T0 + 5 * DAY), ("C-1", T0 + DAY, T0 + 6 * DAY),
               ("C-9", T0, T0 + 10 * DAY)]
    # C-1's first window ends at B (exclusive); its second starts at A (exclusive); C-9 has no orders
    assert store.orders_in_windows(windows) == [(1, 4_000), (1, 1_000), (1, 2_000), (0, 0)]
    assert store.orders_in_windows([]) == []


def test_spend_between_counts_every_customer_of_the_base_without_its_first_order(store):
    store.upsert_orders([
        order("A", "A-1", T0 - DAY, 1_000), order("A", "A-2", T0 + DAY, 2_000), order("A", "A-3", T0 + 2 * DAY, 4_000),
        order("A", "A-X", T0 + DAY, 8_000, status="cancelled"), order("A", "A-4", T0 + 6 * DAY, 16_000),
        order("B", "B-1", T0 + DAY, 32_000), order("B", "B-2", T0 + 3 * DAY, 64_000),  # B's first is no outcome
        order("C", "C-1", T0 + 6 * DAY, 128_000),  # not a customer yet by the end of the span
        order("D", "D-1", T0 - 9 * DAY, 256_000),  # a customer who bought nothing in the span
    ], T0 + 7 * DAY)
    assert store.spend_between(T0, T0 + 5 * DAY) == [("A", 2, 6_000), ("B", 1, 64_000), ("D", 0, 0)]


# --- DynamoDB only: races, and tables of version 4 -------------------------------------------------------------

class Meanwhile:
    """A real client that runs `meanwhile` once, just before its first UpdateItem on the table named `noun`: another
    process's work landing between this one's reads and its write."""

    def __init__(self, client: Any, noun: str, meanwhile: Callable[[], None]):
        self.client = client
        self.noun = noun
        self.meanwhile: Callable[[], None] | None = meanwhile

    def update_item(self, **request: Any) -> Any:
        if self.meanwhile is not None and request["TableName"].endswith(self.noun):
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return self.client.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def racing(url: str, noun: str, meanwhile: Callable[[], None]) -> DynamoDBStore:
    config = DynamoConfig.from_url(url)
    return DynamoDBStore(config, Meanwhile(make_client(config.region, config.endpoint_url), noun, meanwhile))


def test_an_order_counted_while_the_customer_s_first_measured_event_is_saved_is_measured(dynamodb_endpoint):
    url = new_dynamodb_url(dynamodb_endpoint)
    other = open_store(url)
    other.upsert_orders([order("C-1", "FIRST", FIRST_ORDER)], T0)
    measured = event("C-1")
    # the ingest read the customer without measured events; the event is saved (and measured without the new
    # order, which the customer does not count yet) before the ingest writes the customer
    ingest = racing(url, "customers", lambda: save(other, "C-1", measured))
    ingest.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 900)], T0 + DAY)
    assert outcome(other, measured.id) == (1, 900)
    assert other.get_customer("C-1").facts.order_count == 2


def test_a_measurement_that_lands_after_a_newer_one_is_made_again(dynamodb_endpoint):
    url = new_dynamodb_url(dynamodb_endpoint)
    other = open_store(url)
    [measured] = customer_with(other, "C-1", event("C-1"))
    cancel = [order("C-1", "ORD-1", T0 + DAY, 900, status="cancelled")]
    # the order is measured; before that measurement is written, another process cancels the order and measures
    # nothing to change (the stored outcome is still none)
    ingest = racing(url, "events", lambda: other.upsert_orders(cancel, T0 + 2 * DAY))
    ingest.upsert_orders([order("C-1", "ORD-1", T0 + DAY, 900)], T0 + DAY)
    assert outcome(other, measured) == (0, 0)
    assert other.get_customer("C-1").facts.order_count == 1


def test_tables_of_version_4_are_refused_until_init_db_adds_the_index_of_a_campaign_s_events(dynamodb_endpoint):
    config = DynamoConfig(REGION, dynamodb_endpoint, f"v4tables{uuid.uuid4().hex[:8]}_")
    client = make_client(config.region, config.endpoint_url)
    url = f"dynamodb://?region={REGION}&endpoint_url={dynamodb_endpoint}&table_prefix={config.table_prefix}"
    try:
        for design in TABLES:  # what init-db of version 4 made: no by_campaign index
            design = replace(design, indexes=tuple(i for i in design.indexes if i.name != "by_campaign"))
            client.create_table(TableName=config.table(design.noun), BillingMode="PAY_PER_REQUEST",
                                **dynamo_tables._table_definition(design))
        old = DynamoDBStore(config)
        old.set_meta("schema_version", "4")
        old.upsert_orders([order("C-1", "ORD-1", FIRST_ORDER)], T0)
        record = old.get_customer("C-1")
        old.save_evaluations([Evaluation("C-1", record.version, None, "New", "One-time", None, T0,
                                         events=(event("C-1", until=None),))])  # as version 4 stored it

        with pytest.raises(StoreUnavailable, match="init-db` to add the index of events by campaign"):
            open_store(url)
        assert [created for _, created in create_tables(config)] == [False] * len(TABLES)

        upgraded = open_store(url)
        upgraded.upsert_orders([order("C-1", "ORD-2", T0 + DAY, 500)], T0 + DAY)
        [stored] = upgraded.events_for("C-1")
        assert (stored.outcome_until, stored.outcome_orders, stored.outcome_cents) == (None, 0, 0)
        assert upgraded.campaign_outcomes("win-back", T0) == [], "events stored before are not measured"
        save(upgraded, "C-1", event("C-1", T0, T0 + WINDOW, n=2), at=T0 + 2 * DAY)
        assert upgraded.campaign_outcomes("win-back", T0) == [OutcomeCell("2026-02", False, False, 1, 1, 1, 500,
                                                                          250_000)]
        upgraded.close()
    finally:
        for design in TABLES:
            try:
                client.delete_table(TableName=config.table(design.noun))
            except client.exceptions.ResourceNotFoundException:
                pass
