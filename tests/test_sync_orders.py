"""sync-orders: another system's DynamoDB orders table, with its own attribute names, read by a parallel scan into
either store backend; invalid items are reported, an interrupted sync resumes from its checkpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from tests.conftest import Backend, new_dynamodb_url
from tests.dynamo_server import REGION
from tests.factories import T0
from worker.cli_store import sync_orders as sync_orders_command
from worker.serialize import iso
from worker.store.base import Store
from worker.store.dynamodb import SourceTable
from worker.sync import SyncError, order_record, parse_attribute_map, sync_orders

THEIR_NAMES = "contactID=customer_id,orderReference=order_id,orderDate=created_at,total=amount,status=state"
MAPPING = parse_attribute_map(THEIR_NAMES)


@dataclass(frozen=True)
class TheirOrder:
    customer: str | int
    reference: str
    days_ago: int
    cents: int
    state: str = "paid"

    def item(self) -> dict[str, Any]:
        return {"order_id": self.reference, "customer_id": self.customer, "amount": Decimal(self.cents) / 100,
                "created_at": iso(T0 - timedelta(days=self.days_ago)), "state": self.state, "warehouse": "north"}


# Six customers (one with a numeric id, as some systems store them), 30 orders, two of them cancelled.
VALID = [TheirOrder(customer if n % 6 else 4711, f"SO-{n:03d}", n * 3, 1_000 + n * 25,
                    "CANCELLED" if n in (7, 20) else "paid")
         for n in range(30) for customer in [f"K-{n % 6}"]]
INVALID = [
    {"order_id": "SO-BAD-1", "customer_id": "K-1", "amount": "lots", "created_at": iso(T0), "state": "paid"},
    {"order_id": "SO-BAD-2", "customer_id": "K-2", "amount": Decimal("10.00"), "state": "paid"},
    {"order_id": "SO-BAD-3", "customer_id": "K-3", "amount": Decimal("10.00"), "created_at": "yesterday"},
]


def expected_totals() -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for o in VALID:
        if o.state != "CANCELLED":
            count, cents = totals.get(str(o.customer), (0, 0))
            totals[str(o.customer)] = (count + 1, cents + o.cents)
    return totals


@pytest.fixture
def source(dynamodb_endpoint: str) -> Iterator[SourceTable]:
    """Their table, filled; our code only ever scans it."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=dynamodb_endpoint)
    name = f"their_orders_{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}])
    table = boto3.resource("dynamodb", region_name=REGION, endpoint_url=dynamodb_endpoint).Table(name)
    with table.batch_writer() as batch:
        for item in [o.item() for o in VALID] + INVALID:
            batch.put_item(Item=item)
    yield SourceTable(name, REGION, dynamodb_endpoint)
    client.delete_table(TableName=name)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    yield opened
    opened.close()


def totals(store: Store) -> dict[str, tuple[int, int]]:
    return {c.contact_id: (c.facts.order_count, c.facts.total_cents) for batch in store.iter_customers()
            for c in batch}


# --- mapping their names to ours ----------------------------------------------------------------------------

def test_attribute_map_names_their_attribute_for_each_of_our_fields():
    assert MAPPING == {"contactID": "customer_id", "orderReference": "order_id", "orderDate": "created_at",
                       "total": "amount", "status": "state", "email": "email", "name": "name"}
    assert parse_attribute_map("") == {name: name for name in MAPPING}
    assert parse_attribute_map("email=name")["email"] == "name" and "name" not in parse_attribute_map("email=name")


@pytest.mark.parametrize(("text", "problem"), [
    ("contactID", "is not field=attribute"),
    ("customer=customer_id", "unknown field 'customer'"),
    ("contactID=id,orderReference=id", "'id' is mapped to two fields"),
])
def test_a_bad_attribute_map_is_refused_with_the_reason(text, problem):
    with pytest.raises(SyncError, match=problem):
        parse_attribute_map(text)


def test_their_item_becomes_an_order_record_in_our_field_names():
    item = {"customer_id": Decimal(4711), "order_id": "SO-1", "created_at": "2026-02-01", "amount": Decimal("12.5"),
            "warehouse": "north"}
    assert order_record(item, MAPPING) == {"contactID": 4711, "orderReference": "SO-1", "orderDate": "2026-02-01",
                                           "total": Decimal("12.5")}


# --- the sync -----------------------------------------------------------------------------------------------

def test_sync_ingests_every_valid_item_and_reports_the_invalid_ones(store, source):
    result = sync_orders(store, source, MAPPING, T0, segments=3, page_size=4)
    assert (result.items, result.inserted, result.updated, result.rejected) == (33, 30, 0, 3)
    assert (result.segments, result.resumed, result.customers) == (3, False, set(expected_totals()))
    assert totals(store) == expected_totals()
    assert sorted(e.split(": ", 1)[1] for e in result.errors) == sorted([
        "total: 'lots' is not a decimal amount", "orderDate: is required",
        "orderDate: 'yesterday' is not an ISO 8601 date or datetime (e.g. 2026-02-21 or 2026-02-21T08:30:00Z)"])
    assert all(e.startswith(f"{source.name} segment ") for e in result.errors)


class CrashingStore:
    """The real store, until its `crash_at`-th order batch: then the process 'dies' (an exception)."""

    def __init__(self, store: Store, crash_at: int):
        self.store, self.crash_at, self.batches = store, crash_at, 0

    def upsert_orders(self, orders: Any, now: Any) -> Any:
        self.batches += 1
        if self.batches == self.crash_at:
            raise RuntimeError("the process died")
        return self.store.upsert_orders(orders, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_an_interrupted_sync_resumes_from_its_checkpoint_and_a_finished_one_starts_over(store, source):
    with pytest.raises(RuntimeError, match="died"):
        sync_orders(CrashingStore(store, crash_at=4), source, MAPPING, T0, segments=3, page_size=4)
    resumed = sync_orders(store, source, MAPPING, T0, segments=2, page_size=4)
    assert (resumed.resumed, resumed.segments) == (True, 3), "the checkpoint's segment count wins"
    assert resumed.items < 33, "pages stored before the crash are not read again"
    assert totals(store) == expected_totals()
    again = sync_orders(store, source, MAPPING, T0, segments=2, page_size=4)
    assert (again.resumed, again.segments, again.items, again.inserted, again.unchanged) == (False, 2, 33, 0, 30)


def test_sync_orders_command_reads_the_mapping_from_the_environment(dynamodb_endpoint, source):
    url = new_dynamodb_url(dynamodb_endpoint)
    runner = CliRunner()
    result = runner.invoke(sync_orders_command, ["--table", source.name, "--segments", "2"],
                           env={"DATABASE_URL": url, "SYNC_ATTRIBUTES": THEIR_NAMES})
    assert result.exit_code == 0, result.output
    assert "items read: 33\nimported: 30\nupdated: 0\nunchanged: 0\nrejected: 3\ncustomers changed: 6" in result.output
    assert f"rejected {source.name} segment" in result.output
    missing = runner.invoke(sync_orders_command, ["--table", "no_such_table"], env={"DATABASE_URL": url})
    assert missing.exit_code == 1 and "no_such_table" in missing.output and "not found" in missing.output
