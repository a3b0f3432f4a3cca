"""Order input: validation naming record and field, CSV / JSON Lines files, and the aggregates the upsert keeps."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.factories import T0, UTC, new_store, order
from worker import ingest
from worker.ingest import (
    ImportInterrupted,
    OrdersRejected,
    RecordError,
    import_order_file,
    ingest_orders,
    parse_order,
    parse_orders,
    parse_record,
    read_order_file,
)
from worker.store.base import IngestResult, Order, Store

VALID = {"contactID": "C-1", "orderReference": "ORD-1", "orderDate": "2026-02-20T08:30:00.000Z",
         "total": "149.90", "email": "ann@example.com", "name": "Ann", "status": "paid"}


def record(**changes: Any) -> dict[str, Any]:
    """VALID with fields changed; a value of ... removes the field."""
    merged = {**VALID, **changes}
    return {k: v for k, v in merged.items() if v is not ...}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = new_store(tmp_path)
    yield opened
    opened.close()


# --- one record ---------------------------------------------------------------------------------------------

def test_valid_order_is_parsed_exactly():
    assert parse_orders([VALID]) == [Order(
        contact_id="C-1", order_ref="ORD-1", order_at=datetime(2026, 2, 20, 8, 30, tzinfo=UTC), total_cents=14_990,
        status="paid", email="ann@example.com", name="Ann")]


@pytest.mark.parametrize(("case", "changes", "expected"), [
    ("only_required_fields", {"email": ..., "name": ..., "status": ...}, {"email": None, "name": None, "status": None}),
    ("date_only_is_utc_midnight", {"orderDate": "2026-02-20"}, {"order_at": datetime(2026, 2, 20, tzinfo=UTC)}),
    ("offset_is_converted_to_utc", {"orderDate": "2026-02-20T08:30:00+02:00"},
     {"order_at": datetime(2026, 2, 20, 6, 30, tzinfo=UTC)}),
    ("no_offset_means_utc", {"orderDate": "2026-02-20T08:30:00"},
     {"order_at": datetime(2026, 2, 20, 8, 30, tzinfo=UTC)}),
    ("integer_total", {"total": 12}, {"total_cents": 1_200}),
    ("decimal_total", {"total": Decimal("0.10")}, {"total_cents": 10}),
    ("float_total_as_written", {"total": 149.9}, {"total_cents": 14_990}),
    ("one_decimal_text", {"total": "0.1"}, {"total_cents": 10}),
    ("zero_total", {"total": "0"}, {"total_cents": 0}),
    ("spaces_trimmed", {"contactID": "  C-1  ", "total": " 5.00 "}, {"contact_id": "C-1", "total_cents": 500}),
    ("numeric_contact_id_is_text", {"contactID": 1234}, {"contact_id": "1234"}),
])
def test_valid_variations(case, changes, expected):
    parsed = parse_orders([record(**changes)])[0]
    assert {k: getattr(parsed, k) for k in expected} == expected


BAD = [
    # (case, record, field named, words in the message)
    ("missing_contact_id", record(contactID=...), "contactID", "required"),
    ("blank_contact_id", record(contactID="   "), "contactID", "required"),
    ("missing_order_reference", record(orderReference=...), "orderReference", "required"),
    ("missing_total", record(total=...), "total", "required"),
    ("unknown_field", record(discount="5"), "discount", "unknown field"),
    ("negative_total", record(total="-1.00"), "total", "negative"),
    ("non_numeric_total", record(total="12,50 EUR"), "total", "not a decimal amount"),
    ("not_a_number_total", record(total="NaN"), "total", "not a decimal amount"),
    ("more_than_two_decimals", record(total="1.234"), "total", "more than two decimal places"),
    ("boolean_total", record(total=True), "total", "decimal amount"),
    ("list_total", record(total=[1]), "total", "decimal amount"),
    ("date_that_does_not_parse", record(orderDate="yesterday"), "orderDate", "ISO 8601"),
    ("impossible_date", record(orderDate="2026-02-30"), "orderDate", "ISO 8601"),
    ("numeric_date", record(orderDate=20260220), "orderDate", "ISO 8601"),
    ("date_out_of_range", record(orderDate="9999-12-31T23:59:59-12:00"), "orderDate", "supported range"),
    ("implausible_year", record(orderDate="1066-10-14"), "orderDate", "between 1970 and 2200"),
    ("contact_id_not_text", record(contactID={"id": 1}), "contactID", "text"),
]


@pytest.mark.parametrize(("item", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_record_is_rejected_naming_record_and_field(item, field, words):
    with pytest.raises(OrdersRejected) as caught:
        parse_orders([VALID, item])
    assert len(caught.value.errors) == 1
    error = caught.value.errors[0]
    assert error.startswith("record 1")
    assert field in error and words in error


def test_record_that_is_not_an_object_is_rejected():
    with pytest.raises(OrdersRejected) as caught:
        parse_orders([["C-1", "ORD-1"]])
    assert caught.value.errors[0].startswith("record 0: ")


def test_error_names_the_order_reference_when_there_is_one():
    with pytest.raises(RecordError) as caught:
        parse_order(record(total="-5"), "record 7")
    assert str(caught.value) == "record 7 (orderReference ORD-1): total: -5 is negative"


def test_batch_with_any_bad_record_lists_every_error():
    items = [VALID, record(orderReference="ORD-2", total="x"), record(orderReference="ORD-3"),
             record(orderReference="ORD-4", orderDate="soon"), record(orderReference="ORD-5", contactID=...)]
    with pytest.raises(OrdersRejected) as caught:
        parse_orders(items)
    errors = caught.value.errors
    assert [e.split(":", 1)[0] for e in errors] == [
        "record 1 (orderReference ORD-2)", "record 3 (orderReference ORD-4)", "record 4 (orderReference ORD-5)"]
    assert ["total" in errors[0], "orderDate" in errors[1], "contactID" in errors[2]] == [True, True, True]
    assert "3 invalid order record(s)" in str(caught.value)


# --- files --------------------------------------------------------------------------------------------------

def read_file(name: str, content: str) -> tuple[list[Order], list[str]]:
    """What import-orders does: every good record, and every bad one named by file and line."""
    orders, errors = [], []
    for where, raw in read_order_file(Path(name), io.StringIO(content)):
        try:
            orders.append(parse_record(where, raw))
        except RecordError as exc:
            errors.append(str(exc))
    return orders, errors


def test_csv_file_reports_bad_lines_with_file_and_line():
    content = ("contactID,orderReference,orderDate,total,email,name,status\n"
               "C-1,ORD-1,2026-02-01T10:00:00Z,100.10,ann@example.com,Ann,\n"
               "C-1,ORD-2,2026-02-02T10:00:00Z,abc,,,\n"
               "C-2,ORD-3,2026-02-03,0.20,,,cancelled\n"
               ",ORD-4,2026-02-04,1.00,,,\n")
    orders, errors = read_file("orders.csv", content)
    assert [(o.order_ref, o.total_cents, o.email, o.status) for o in orders] == [
        ("ORD-1", 10_010, "ann@example.com", None), ("ORD-3", 20, None, "cancelled")]
    assert len(errors) == 2
    assert errors[0].startswith("orders.csv:3 (orderReference ORD-2): total")
    assert errors[1].startswith("orders.csv:5 (orderReference ORD-4): contactID")


def test_csv_file_without_a_required_column_is_reported_on_line_1():
    orders, errors = read_file("orders.csv", "contactID,orderReference,total\nC-1,ORD-1,1.00\n")
    assert orders == []
    assert errors == ["orders.csv:1: header lacks column(s) orderDate"]


def test_csv_row_with_more_values_than_columns_is_reported():
    content = "contactID,orderReference,orderDate,total\nC-1,ORD-1,2026-02-01,1.00,extra\n"
    assert read_file("orders.csv", content)[1] == ["orders.csv:2: more values than header columns"]


def test_jsonl_file_reports_bad_lines_with_file_and_line():
    content = ('{"contactID": "C-1", "orderReference": "ORD-1", "orderDate": "2026-02-01", "total": 0.1}\n'
               "\n"
               '{"contactID": "C-1", "orderReference": "ORD-2", \n'
               '{"contactID": "C-1", "orderReference": "ORD-3", "orderDate": "2026-02-03", "total": 1.005}\n'
               '{"contactID": "C-2", "orderReference": "ORD-4", "orderDate": "2026-02-04", "total": "2.50"}\n')
    orders, errors = read_file("orders.jsonl", content)
    assert [(o.order_ref, o.total_cents) for o in orders] == [("ORD-1", 10), ("ORD-4", 250)]
    assert len(errors) == 2
    assert errors[0].startswith("orders.jsonl:3: not valid JSON")
    assert errors[1].startswith("orders.jsonl:4 (orderReference ORD-3): total")


def test_unknown_file_type_is_refused():
    with pytest.raises(ValueError, match="orders.xlsx: unknown file type"):
        list(read_order_file(Path("orders.xlsx"), io.StringIO("")))


# --- the upsert and the aggregates it keeps -----------------------------------------------------------------

def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def test_reimporting_the_same_file_changes_nothing(store):
    content = ("contactID,orderReference,orderDate,total,name\n"
               "C-1,ORD-1,2026-01-05,10.00,Ann\nC-1,ORD-2,2026-01-09,20.00,Ann\nC-2,ORD-3,2026-01-07,5.55,Bob\n")
    first = ingest_orders(store, read_file("orders.csv", content)[0], T0)
    customers = {c.contact_id: c for c in store.customers_by_id(["C-1", "C-2"])}
    second = ingest_orders(store, read_file("orders.csv", content)[0], T0 + timedelta(hours=1))
    assert first == IngestResult(inserted=3, updated=0, unchanged=0, contact_ids=frozenset({"C-1", "C-2"}))
    assert second == IngestResult(inserted=0, updated=0, unchanged=3, contact_ids=frozenset())
    assert {c.contact_id: c for c in store.customers_by_id(["C-1", "C-2"])} == customers
    assert customers["C-1"].facts.total_cents == 3_000 and customers["C-1"].facts.order_count == 2


def test_updated_order_replaces_its_total_not_adds(store):
    store.upsert_orders([order("C-1", "ORD-1", at(5), 10_000)], T0)
    result = store.upsert_orders([order("C-1", "ORD-1", at(5), 15_000)], T0)
    customer = store.get_customer("C-1")
    assert (result.inserted, result.updated) == (0, 1)
    assert (customer.facts.order_count, customer.facts.total_cents) == (1, 15_000)


@pytest.mark.parametrize("status", ["cancelled", "Canceled", "CANCELLED", " canceled "])
def test_cancelled_order_does_not_count(store, status):
    store.upsert_orders([order("C-1", "ORD-1", at(5), 10_000), order("C-1", "ORD-2", at(9), 99_999, status)], T0)
    customer = store.get_customer("C-1")
    assert (customer.facts.order_count, customer.facts.total_cents) == (1, 10_000)
    assert (customer.facts.last_order_at, customer.last_order_ref) == (at(5), "ORD-1")


def test_customer_whose_only_order_is_cancelled_has_no_orders(store):
    store.upsert_orders([order("C-1", "ORD-1", at(5), 10_000, "cancelled")], T0)
    customer = store.get_customer("C-1")
    assert customer.facts.order_count == 0 and customer.facts.total_cents == 0
    assert (customer.facts.first_order_at, customer.facts.last_order_at, customer.last_order_ref) == (None, None, None)


def test_cancelling_an_existing_order_removes_it_from_the_aggregates(store):
    store.upsert_orders([order("C-1", "ORD-1", at(2), 1_000), order("C-1", "ORD-2", at(5), 2_000),
                         order("C-1", "ORD-3", at(9), 4_000)], T0)
    version = store.get_customer("C-1").version
    result = store.upsert_orders([order("C-1", "ORD-3", at(9), 4_000, "Canceled")], T0)
    customer = store.get_customer("C-1")
    assert result.updated == 1 and result.contact_ids == {"C-1"}
    assert (customer.facts.order_count, customer.facts.total_cents) == (2, 3_000)
    assert (customer.facts.first_order_at, customer.facts.last_order_at, customer.last_order_ref) == (
        at(2), at(5), "ORD-2")
    assert customer.version > version


def test_order_moved_to_another_contact_updates_both_customers(store):
    store.upsert_orders([order("C-1", "ORD-1", at(2), 1_000), order("C-1", "ORD-2", at(5), 2_000)], T0)
    result = store.upsert_orders([order("C-2", "ORD-2", at(5), 2_000)], T0)
    one, two = store.get_customer("C-1"), store.get_customer("C-2")
    assert result.contact_ids == {"C-1", "C-2"}
    assert (one.facts.order_count, one.facts.total_cents, one.facts.last_order_at, one.last_order_ref) == (
        1, 1_000, at(2), "ORD-1")
    assert (two.facts.order_count, two.facts.total_cents, two.facts.first_order_at, two.last_order_ref) == (
        1, 2_000, at(5), "ORD-2")


def test_first_and_last_dates_and_last_reference_follow_the_orders(store):
    store.upsert_orders([order("C-1", "ORD-B", at(9), 100), order("C-1", "ORD-A", at(3), 100),
                         order("C-1", "ORD-C", at(6), 100)], T0)
    customer = store.get_customer("C-1")
    assert (customer.facts.first_order_at, customer.facts.last_order_at, customer.last_order_ref) == (
        at(3), at(9), "ORD-B")
    store.upsert_orders([order("C-1", "ORD-B", at(1), 100)], T0)  # the date of ORD-B was wrong
    customer = store.get_customer("C-1")
    assert (customer.facts.first_order_at, customer.facts.last_order_at, customer.last_order_ref) == (
        at(1), at(6), "ORD-C")


def test_name_and_email_come_from_the_latest_order_carrying_them(store):
    store.upsert_orders([
        order("C-1", "ORD-1", at(2), 100, email="old@example.com", name="Ann Old"),
        order("C-1", "ORD-2", at(5), 100, email="ann@example.com"),
        order("C-1", "ORD-3", at(8), 100, name="Ann New"),
        order("C-1", "ORD-4", at(9), 100),
    ], T0)
    customer = store.get_customer("C-1")
    assert (customer.name, customer.email) == ("Ann New", "ann@example.com")


def test_cents_are_exact_from_text_to_aggregate(store):
    items = [record(orderReference="ORD-1", total="0.10"), record(orderReference="ORD-2", total="0.20")]
    ingest_orders(store, parse_orders(items), T0)
    customer = store.get_customer("C-1")
    assert customer.facts.total_cents == 30
    assert customer.facts.total_spend == Decimal("0.30")


def test_many_small_amounts_sum_exactly(store):
    store.upsert_orders([order("C-1", f"ORD-{n}", at(1) + timedelta(minutes=n), 10) for n in range(1000)], T0)
    assert store.get_customer("C-1").facts.total_spend == Decimal("100.00")


# --- whole files, on every backend --------------------------------------------------------------------------

GOOD_CSV = ("contactID,orderReference,orderDate,total\n"
            "C-1,F-1,2026-02-01,10.00\nC-1,F-2,2026-02-02,5.50\nC-2,F-3,2026-02-03,1.00\n")


def test_a_file_is_imported_with_counts_and_progress(backend, tmp_path):
    store = backend.open()
    path = tmp_path / "orders.csv"
    path.write_text(GOOD_CSV, encoding="utf-8")
    seen: list[int] = []
    result = import_order_file(store, path, T0, on_progress=seen.append)
    assert (result.inserted, result.updated, result.unchanged, result.stored) == (3, 0, 0, True)
    assert result.customers == {"C-1", "C-2"} and sum(seen) == 3
    assert store.get_customer("C-1").facts.total_cents == 1_550


def test_one_bad_record_anywhere_stores_nothing_of_the_file_and_keeps_what_was_there(backend, tmp_path):
    store = backend.open()
    store.upsert_orders([order("C-0", "EARLIER", T0 - timedelta(days=3), 700)], T0)
    path = tmp_path / "orders.csv"
    path.write_text(GOOD_CSV + "C-3,F-4,2026-02-04,-1\n", encoding="utf-8")
    result = import_order_file(store, path, T0)
    assert not result.stored
    assert result.rejected == ["orders.csv:5 (orderReference F-4): total: -1 is negative"]
    assert store.get_customer("C-1") is None and store.get_customer("C-2") is None
    assert store.get_customer("C-0").facts.total_cents == 700


def test_skip_invalid_stores_the_rest(backend, tmp_path):
    store = backend.open()
    path = tmp_path / "orders.csv"
    path.write_text(GOOD_CSV + "C-3,F-4,2026-02-04,-1\n", encoding="utf-8")
    result = import_order_file(store, path, T0, skip_invalid=True)
    assert result.stored and result.inserted == 3 and len(result.rejected) == 1
    assert store.get_customer("C-3") is None and store.get_customer("C-2") is not None


def test_a_file_without_records_is_refused(backend, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("contactID,orderReference,orderDate,total\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no order records found"):
        import_order_file(backend.open(), path, T0)


def test_a_file_whose_header_cannot_be_read_is_refused_even_with_skip_invalid(backend, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("contactID;orderReference;orderDate;total\nC-1;F-1;2026-02-01;1.00\n", encoding="utf-8")
    with pytest.raises(ValueError, match="orders.csv:1: header lacks column.*looks semicolon-separated"):
        import_order_file(backend.open(), path, T0, skip_invalid=True)


def test_skip_invalid_with_every_record_bad_stores_nothing(backend, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("contactID,orderReference,orderDate,total\nC-1,F-1,soon,1.00\n", encoding="utf-8")
    result = import_order_file(backend.open(), path, T0, skip_invalid=True)
    assert not result.stored and len(result.rejected) == 1


# --- batches and the checkpoint that lets an interrupted import resume ----------------------------------------

def test_an_interrupted_import_keeps_its_batches_and_resumes_after_them(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "BATCH", 2)
    store = backend.open()
    path = tmp_path / "orders.csv"
    path.write_text(GOOD_CSV + "C-3,F-4,2026-02-04,2.00\nC-3,F-5,2026-02-05,3.00\n", encoding="utf-8")
    upsert, calls = store.upsert_orders, []

    def full_disk_on_the_second_batch(orders, now):
        calls.append(len(orders))
        if len(calls) == 2:
            raise OSError("disk full")
        return upsert(orders, now)

    monkeypatch.setattr(store, "upsert_orders", full_disk_on_the_second_batch)
    with pytest.raises(ImportInterrupted, match="orders.csv: the import stopped .disk full.; its first 2 record"):
        import_order_file(store, path, T0)
    assert store.get_customer("C-1").facts.order_count == 2 and store.get_customer("C-2") is None

    monkeypatch.setattr(store, "upsert_orders", upsert)
    seen: list[int] = []
    result = import_order_file(store, path, T0, on_progress=seen.append)
    assert (result.resumed_after, result.inserted, result.unchanged, sum(seen)) == (2, 3, 0, 5)
    assert store.get_customer("C-3").facts.total_cents == 500

    again = import_order_file(store, path, T0)  # finished: a new run starts from the top, and changes nothing
    assert (again.resumed_after, again.inserted, again.unchanged) == (0, 0, 5)


def test_without_skip_invalid_a_bad_record_refuses_the_file_even_when_the_rest_is_stored(backend, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(ingest, "BATCH", 2)
    store = backend.open()
    path = tmp_path / "orders.csv"
    path.write_text(GOOD_CSV + "C-3,F-4,2026-02-04,-1\n", encoding="utf-8")
    assert import_order_file(store, path, T0, skip_invalid=True).inserted == 3
    result = import_order_file(store, path, T0)
    assert not result.stored and result.rejected == ["orders.csv:5 (orderReference F-4): total: -1 is negative"]
