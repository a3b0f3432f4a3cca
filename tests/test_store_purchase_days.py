"""Purchase days, the churn and value model's aggregates, on every backend (SQLite, DynamoDB): the distinct local
days with a counted order and the spend on the first of them, kept at ingest through cancellations, moves and
re-dated orders, counted again when the timezone changes, and read back as purchase rows (now or as of a moment).
Then what only DynamoDB has: customers and orders stored before purchase days were kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.conftest import Backend
from tests.factories import T0, order
from worker.store import open_store
from worker.store.base import CustomerRecord, Evaluation, PurchaseRow, Store

UTC = timezone.utc
FEB_10 = datetime(2026, 2, 10, tzinfo=UTC)  # midnight UTC; orders are placed at hours of this and later days


def at(day: int, hour: int) -> datetime:
    """An instant `day` days after 10 February 2026, at `hour` UTC."""
    return FEB_10 + timedelta(days=day, hours=hour)


def ordinal(day: int) -> int:
    """The UTC calendar day of at(day, ...), as the store counts it (date.toordinal())."""
    return (date(2026, 2, 10) + timedelta(days=day)).toordinal()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


def days_of(store: Store, contact_id: str) -> tuple[int, int, int, int]:
    """(purchase_days, first_day_cents, order_count, total_cents) of one customer."""
    facts = store.get_customer(contact_id).facts
    return facts.purchase_days, facts.first_day_cents, facts.order_count, facts.total_cents


def settle(store: Store, *contact_ids: str, segment: str = "New") -> None:
    """Save an evaluation of each customer, so that it is not due until something changes it."""
    records: list[CustomerRecord] = store.customers_by_id(list(contact_ids))
    saved = store.save_evaluations([
        Evaluation(contact_id=r.contact_id, seen_version=r.version, seen_segment=r.segment, segment=segment,
                   purchase_frequency="One-time", next_check_at=None, evaluated_at=T0) for r in records])
    assert saved.saved == len(contact_ids)


def due(store: Store, as_of: datetime = T0) -> list[str]:
    return [c.contact_id for batch in store.customers_to_evaluate(as_of, False, 100) for c in batch]


def rows(store: Store, until: datetime | None = None, batch_size: int = 5000) -> list[PurchaseRow]:
    return [row for batch in store.purchase_rows(until, batch_size) for row in batch]


# --- days follow the orders ---------------------------------------------------------------------------------

def test_orders_on_one_day_are_one_purchase_day_and_the_first_day_s_spend_is_their_sum(store):
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(0, 18), 2500),
                         order("C-1", "ORD-3", at(2, 10), 700)], T0)
    assert days_of(store, "C-1") == (2, 3500, 3, 4200)
    again = store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000)], T0)
    assert (again.unchanged, again.updated, again.inserted) == (1, 0, 0), "re-sent as it is: unchanged"
    assert days_of(store, "C-1") == (2, 3500, 3, 4200)


def test_the_first_day_is_the_earliest_whatever_order_the_orders_arrive_in(store):
    store.upsert_orders([order("C-1", "ORD-3", at(2, 10), 700)], T0)
    assert days_of(store, "C-1") == (1, 700, 1, 700)
    store.upsert_orders([order("C-1", "ORD-2", at(0, 18), 2500)], T0)  # an earlier day: the first day moves
    assert days_of(store, "C-1") == (2, 2500, 2, 3200)
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000)], T0)  # the first day again: its spend grows
    assert days_of(store, "C-1") == (2, 3500, 3, 4200)
    store.upsert_orders([order("C-1", "ORD-4", at(2, 23), 50), order("C-1", "ORD-5", at(5, 1), 10)], T0)
    assert days_of(store, "C-1") == (3, 3500, 5, 4260), "later days add days, not first-day spend"


def test_a_customer_without_orders_has_no_purchase_days(store):
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000, status="cancelled")], T0)
    assert days_of(store, "C-1") == (0, 0, 0, 0)


def test_an_excluded_order_is_no_purchase_day_and_cancelling_or_restoring_one_moves_the_count(store):
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(1, 9), 500),
                         order("C-1", "ORD-3", at(3, 9), 200, status="cancelled")], T0)
    assert days_of(store, "C-1") == (2, 1000, 2, 1500), "the cancelled order's day does not count"
    store.upsert_orders([order("C-1", "ORD-2", at(1, 9), 500, status="cancelled")], T0)
    assert days_of(store, "C-1") == (1, 1000, 1, 1000), "cancelling the only order of a day removes the day"
    store.upsert_orders([order("C-1", "ORD-2", at(1, 9), 500, status="shipped")], T0)
    assert days_of(store, "C-1") == (2, 1000, 2, 1500), "restoring it brings the day back"
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000, status="refunded")], T0)
    assert days_of(store, "C-1") == (1, 500, 1, 500), "the first day cancelled: the next day is the first"
    store.upsert_orders([order("C-1", "ORD-3", at(3, 9), 200)], T0)
    assert days_of(store, "C-1") == (2, 500, 2, 700)


def test_an_order_moved_to_another_customer_takes_its_day_along(store):
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(1, 9), 500),
                         order("C-2", "ORD-3", at(4, 9), 300)], T0)
    store.upsert_orders([order("C-2", "ORD-2", at(1, 9), 500)], T0)
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((1, 1000, 1, 1000), (2, 500, 2, 800))
    store.upsert_orders([order("C-2", "ORD-1", at(0, 9), 1000)], T0)
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((0, 0, 0, 0), (3, 1000, 3, 1800))
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000)], T0)  # and back
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((1, 1000, 1, 1000), (2, 500, 2, 800))


def test_a_re_dated_order_moves_its_day_and_the_first_day_s_spend(store):
    store.upsert_orders([order("C-1", "ORD-1", at(3, 9), 1000), order("C-1", "ORD-2", at(5, 9), 500)], T0)
    assert days_of(store, "C-1") == (2, 1000, 2, 1500)
    store.upsert_orders([order("C-1", "ORD-2", at(1, 9), 500)], T0)  # earlier than the first day
    assert days_of(store, "C-1") == (2, 500, 2, 1500)
    store.upsert_orders([order("C-1", "ORD-2", at(3, 20), 500)], T0)  # onto the other order's day
    assert days_of(store, "C-1") == (1, 1500, 2, 1500)
    store.upsert_orders([order("C-1", "ORD-2", at(3, 20), 800)], T0)  # the same day, another total
    assert days_of(store, "C-1") == (1, 1800, 2, 1800)


# --- the timezone of the days -------------------------------------------------------------------------------

def test_applying_a_timezone_counts_the_days_again_and_marks_only_the_customers_whose_days_moved(store):
    received = datetime(2026, 3, 2, 12, tzinfo=UTC)
    store.upsert_orders([
        order("C-1", "ORD-1", datetime(2026, 3, 1, 2, tzinfo=UTC), 1000),  # 28 February, 21:00 in New York
        order("C-1", "ORD-2", datetime(2026, 3, 1, 20, tzinfo=UTC), 2500),  # 1 March, 15:00 in New York
        order("C-2", "ORD-3", datetime(2026, 3, 1, 12, tzinfo=UTC), 300),  # 1 March in both
        order("C-2", "ORD-4", datetime(2026, 3, 1, 14, tzinfo=UTC), 400),
    ], received)
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((1, 3500, 2, 3500), (1, 700, 2, 700))
    settle(store, "C-1", "C-2")
    assert due(store, received) == []
    assert store.apply_timezone("UTC") == 0, "the days are UTC days already"

    assert store.apply_timezone("America/New_York") == 1
    assert store.order_days_timezone() == "America/New_York"
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((2, 1000, 2, 3500), (1, 700, 2, 700))
    assert due(store, received) == ["C-1"], "the recounted customer is changed; the other is left alone"
    assert store.apply_timezone("America/New_York") == 0, "the same timezone again: nothing to do"
    feb_28, mar_1 = date(2026, 2, 28).toordinal(), date(2026, 3, 1).toordinal()
    expected = [PurchaseRow("C-1", "New", feb_28, mar_1, 2, 3500, 1000),
                PurchaseRow("C-2", "New", mar_1, mar_1, 1, 700, 700)]
    assert rows(store) == expected
    assert rows(store, until=received) == expected

    store.upsert_orders([order("C-2", "ORD-5", datetime(2026, 3, 2, 4, tzinfo=UTC), 50)], received)
    assert days_of(store, "C-2") == (1, 750, 3, 750), "new orders get their day in the applied timezone"
    assert store.apply_timezone("UTC") == 2
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((1, 3500, 2, 3500), (2, 700, 3, 750))



def test_a_recount_cut_short_runs_again_and_orders_stored_meanwhile_get_the_new_timezone(store):
    received = datetime(2026, 3, 2, 12, tzinfo=UTC)
    store.upsert_orders([order("C-1", "ORD-1", datetime(2026, 3, 1, 2, tzinfo=UTC), 1000),
                         order("C-1", "ORD-2", datetime(2026, 3, 1, 20, tzinfo=UTC), 2500)], received)
    # a process stopped mid-recount left the new timezone recorded and the recount marked as still to do
    store.set_meta("order_days_timezone", "America/New_York")
    store.set_meta("order_days_timezone:recounting", "America/New_York")
    store.upsert_orders([order("C-2", "ORD-3", datetime(2026, 3, 1, 2, tzinfo=UTC), 50)], received)
    assert days_of(store, "C-2")[0] == 1 and rows(store)[-1].first_day == date(2026, 2, 28).toordinal(), \
        "an order stored meanwhile is counted in the recorded timezone"
    assert days_of(store, "C-1")[0] == 1, "not recounted yet"
    assert store.apply_timezone("America/New_York") == 1
    assert days_of(store, "C-1")[0] == 2
    assert store.apply_timezone("America/New_York") == 0, "done: nothing left to recount"

# --- purchase rows ------------------------------------------------------------------------------------------

@pytest.fixture
def purchases(store) -> Store:
    """C-1: two orders on day 0, one on day 2, one on day 6 (after the backtest's moment); C-2: a cancelled order
    on day 1 and one on day 4; C-3: orders after the moment only; C-4: a cancelled order only."""
    store.upsert_orders([
        order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(0, 18), 2500),
        order("C-1", "ORD-3", at(2, 10), 700), order("C-1", "ORD-4", at(6, 10), 90),
        order("C-2", "ORD-5", at(1, 9), 400, status="cancelled"), order("C-2", "ORD-6", at(4, 9), 600),
        order("C-3", "ORD-7", at(5, 9), 5000), order("C-3", "ORD-8", at(7, 9), 100),
        order("C-4", "ORD-9", at(1, 9), 800, status="void"),
    ], T0)
    settle(store, "C-1", segment="VIP")
    return store


def test_purchase_rows_come_from_the_stored_aggregates_in_contact_id_order(purchases):
    assert rows(purchases) == [
        PurchaseRow("C-1", "VIP", ordinal(0), ordinal(6), 3, 4290, 3500),
        PurchaseRow("C-2", None, ordinal(4), ordinal(4), 1, 600, 600),
        PurchaseRow("C-3", None, ordinal(5), ordinal(7), 2, 5100, 5000),
    ]
    assert [[row.contact_id for row in batch] for batch in purchases.purchase_rows(batch_size=2)] == [
        ["C-1", "C-2"], ["C-3"]]


def test_purchase_rows_until_a_moment_count_only_the_orders_dated_no_later(purchases):
    until = at(4, 9)  # ORD-6's own time: an order at the moment counts
    assert rows(purchases, until=until) == [
        PurchaseRow("C-1", "VIP", ordinal(0), ordinal(2), 2, 4200, 3500),
        PurchaseRow("C-2", None, ordinal(4), ordinal(4), 1, 600, 600),
    ]
    assert rows(purchases, until=until - timedelta(milliseconds=1)) == [
        PurchaseRow("C-1", "VIP", ordinal(0), ordinal(2), 2, 4200, 3500)]
    assert rows(purchases, until=at(0, 12)) == [PurchaseRow("C-1", "VIP", ordinal(0), ordinal(0), 1, 1000, 1000)]
    assert rows(purchases, until=at(0, 8)) == []
    assert rows(purchases, until=at(30, 0)) == rows(purchases), "after every order: the stored aggregates"
    assert [len(batch) for batch in purchases.purchase_rows(until=at(30, 0), batch_size=1)] == [1, 1, 1]


def test_an_empty_store_has_no_purchase_rows(store):
    assert rows(store) == [] and rows(store, until=T0) == []


# --- DynamoDB only: items stored before purchase days were kept ------------------------------------------------

@pytest.fixture
def dynamo_store(dynamodb_endpoint: str) -> Iterator[Store]:
    from tests.conftest import new_dynamodb_url

    opened = open_store(new_dynamodb_url(dynamodb_endpoint))
    yield opened
    opened.close()


def _forget_days(store: Store, contact_ids: list[str], refs: list[str]) -> None:
    """Make the items look as an older version wrote them: no order_day, no purchase-day attributes, and no
    timezone of purchase days recorded (new tables record UTC)."""
    from worker.store.dynamodb.items import _to_item

    client, tables = store._client, store._tables  # type: ignore[attr-defined]
    client.delete_item(TableName=tables["meta"], Key=_to_item({"key": "order_days_timezone"}))
    for ref in refs:
        client.update_item(TableName=tables["orders"], Key=_to_item({"order_ref": ref}),
                           UpdateExpression="REMOVE order_day")
    for contact_id in contact_ids:
        client.update_item(TableName=tables["customers"], Key=_to_item({"contact_id": contact_id}),
                           UpdateExpression="REMOVE purchase_days, first_day_cents, purchase_day_set")


def test_customers_and_orders_stored_without_days_still_read_and_are_counted_when_the_timezone_is_applied(
        dynamo_store):
    store = dynamo_store
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(1, 9), 500),
                         order("C-2", "ORD-3", at(2, 9), 300)], T0)
    _forget_days(store, ["C-1", "C-2"], ["ORD-1", "ORD-2", "ORD-3"])
    assert days_of(store, "C-1") == (0, 0, 2, 1500), "read with no days until they are counted"
    assert rows(store)[0] == PurchaseRow("C-1", None, ordinal(0), ordinal(1), 0, 1500, 0)
    assert rows(store, until=at(30, 0))[0] == PurchaseRow("C-1", None, ordinal(0), ordinal(1), 2, 1500, 1000), (
        "a backtest counts an order without its day by its time")
    store.upsert_orders([order("C-1", "ORD-4", at(3, 9), 70)], T0)  # folded into the old totals meanwhile
    settle(store, "C-1", "C-2")

    assert store.get_meta("order_days_timezone") is None, "tables older than purchase days: none applied yet"
    assert store.apply_timezone("UTC") == 2, "orders without a day are given one and their customers recounted"
    assert (days_of(store, "C-1"), days_of(store, "C-2")) == ((3, 1000, 3, 1570), (1, 300, 1, 300))
    assert due(store) == ["C-1", "C-2"]
    assert store.apply_timezone("UTC") == 0


def test_an_unchanged_re_send_of_an_order_stored_without_its_day_gives_it_one(dynamo_store):
    store = dynamo_store
    store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(1, 9), 500)], T0)
    _forget_days(store, ["C-1"], ["ORD-1", "ORD-2"])
    result = store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000), order("C-1", "ORD-2", at(1, 9), 500)], T0)
    assert result.updated == 2, "the stored item lacks the day, so it is written again"
    assert days_of(store, "C-1") == (2, 1000, 2, 1500)
    assert store.upsert_orders([order("C-1", "ORD-1", at(0, 9), 1000)], T0).unchanged == 1
    item = store._get_item("orders", {"order_ref": "ORD-1"})  # type: ignore[attr-defined]
    assert int(item["order_day"]) == ordinal(0)
