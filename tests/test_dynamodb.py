"""What only the DynamoDB store has: init-db, the table and index design, queries that never scan, retries of
unprocessed batch items, and two worker processes on one endpoint losing no aggregate and duplicating no event.
(Everything both backends do is in test_store.py and test_evaluate.py.)"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from tests.conftest import new_dynamodb_url
from tests.dynamo_server import REGION
from tests.factories import T0, make_rules, new_store, order
from worker.cli_store import init_db
from worker.evaluate import evaluate_due
from worker.store import open_store
from worker.store.base import CustomerOrder, Evaluation, NewEvent, Order, StoreUnavailable
from worker.store.dynamodb import DynamoConfig, DynamoDBStore, create_tables, make_client
from worker.store.dynamodb import store as dynamo
from worker.store.dynamodb import tables as dynamo_tables

DAY = timedelta(days=1)


@pytest.fixture
def url(dynamodb_endpoint: str) -> str:
    return new_dynamodb_url(dynamodb_endpoint)


@pytest.fixture
def store(url: str) -> Iterator[DynamoDBStore]:
    opened = open_store(url)
    yield opened
    opened.close()


def client_for(url: str) -> Any:
    config = DynamoConfig.from_url(url)
    return boto3.client("dynamodb", region_name=config.region, endpoint_url=config.endpoint_url)


# --- init-db and the tables ---------------------------------------------------------------------------------

def test_init_db_creates_the_tables_once_and_says_what_it_did(dynamodb_endpoint):
    url = f"dynamodb://?region={REGION}&endpoint_url={dynamodb_endpoint}&table_prefix=initdb_"
    runner = CliRunner()
    first = runner.invoke(init_db, env={"DATABASE_URL": url})
    assert first.exit_code == 0, first.output
    assert [line.split()[0] for line in first.output.splitlines()[:-1]] == ["created"] * len(dynamo.TABLES)
    assert "initdb_customers" in first.output and "7 table(s) created, 0 already there" in first.output
    again = runner.invoke(init_db, env={"DATABASE_URL": url})
    assert again.exit_code == 0, again.output
    assert "0 table(s) created, 7 already there" in again.output
    assert open_store(url).get_meta("schema_version") == str(dynamo.SCHEMA_VERSION)


def test_init_db_on_sqlite_prepares_the_file(tmp_path):
    result = CliRunner().invoke(init_db, env={"DATABASE_URL": f"sqlite:///{tmp_path}/segments.db"})
    assert result.exit_code == 0, result.output
    assert "SQLite database ready" in result.output and (tmp_path / "segments.db").exists()


def test_tables_are_on_demand_with_the_keys_and_indexes_the_queries_need(url):
    client = client_for(url)
    prefix = DynamoConfig.from_url(url).table_prefix
    design = {}
    for noun in ("customers", "orders", "transitions", "events", "attempts", "leases", "meta"):
        table = client.describe_table(TableName=prefix + noun)["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        design[noun] = (
            [key["AttributeName"] for key in table["KeySchema"]],
            {index["IndexName"]: ([key["AttributeName"] for key in index["KeySchema"]],
                                  index["Projection"]["ProjectionType"])
             for index in table.get("GlobalSecondaryIndexes", [])},
        )
    assert design == {
        "customers": (["contact_id"], {
            "due": (["shard", "due_at"], "KEYS_ONLY"),
            "by_id": (["shard", "contact_id"], "KEYS_ONLY"),
            "by_segment": (["segment_key", "contact_id"], "KEYS_ONLY"),
            "by_frequency": (["frequency_key", "contact_id"], "KEYS_ONLY"),
        }),
        "orders": (["order_ref"], {}),
        "transitions": (["contact_id", "id"], {"by_time": (["shard", "occurred_at"], "INCLUDE")}),
        "events": (["id"], {
            "due": (["shard", "claimable"], "INCLUDE"),
            "retrying_by_contact": (["retrying_contact", "seq"], "KEYS_ONLY"),
            "by_status": (["status_shard", "seq"], "INCLUDE"),
            "by_contact": (["contact_id", "seq"], "KEYS_ONLY"),
            "by_campaign": (["campaign_shard", "occurred_at"], "INCLUDE"),
        }),
        "attempts": (["event_id", "at"], {}),
        "leases": (["name"], {}),
        "meta": (["key"], {}),
    }


def test_opening_tables_that_were_never_made_says_to_run_init_db(dynamodb_endpoint):
    with pytest.raises(StoreUnavailable, match="init-db"):
        open_store(f"dynamodb://?region={REGION}&endpoint_url={dynamodb_endpoint}&table_prefix=nothing_here_")


def test_tables_of_version_2_are_refused_until_init_db_adds_the_events_by_customer_index(dynamodb_endpoint):
    config = DynamoConfig(REGION, dynamodb_endpoint, "v2tables_")
    client = make_client(config.region, config.endpoint_url)
    for design in dynamo.TABLES:  # what init-db of version 2 made: no by_contact index
        design = replace(design, indexes=tuple(i for i in design.indexes if i.name != "by_contact"))
        client.create_table(TableName=config.table(design.noun), BillingMode="PAY_PER_REQUEST",
                            **dynamo_tables._table_definition(design))
    old = DynamoDBStore(config)
    old.set_meta("schema_version", "2")
    old.upsert_orders([order("C-1", "ORD-1", T0)], T0)
    record = old.get_customer("C-1")
    old.save_evaluations([Evaluation("C-1", record.version, None, "New", "One-time", None, T0, events=(
        NewEvent("evt_1", "C-1", "welcome", "n8n", "segment.entered", T0, "{}"),))])
    url = f"dynamodb://?region={REGION}&endpoint_url={dynamodb_endpoint}&table_prefix=v2tables_"

    with pytest.raises(StoreUnavailable, match="run `python -m worker init-db` to add the index"):
        open_store(url)
    assert [created for _, created in create_tables(config)] == [False] * len(dynamo.TABLES)

    upgraded = open_store(url)
    assert upgraded.get_meta("schema_version") == str(dynamo.SCHEMA_VERSION)
    assert [e.id for e in upgraded.events_for("C-1")] == ["evt_1"], "the new index holds the events already there"
    create_tables(config)  # again: nothing to do
    assert upgraded.get_meta("schema_version") == str(dynamo.SCHEMA_VERSION)


def test_a_sorted_page_reads_the_table_with_a_parallel_scan_and_a_count_reads_an_index(url):
    config = DynamoConfig.from_url(url)
    client = Recording(make_client(config.region, config.endpoint_url))
    store = DynamoDBStore(config, client)
    store.upsert_orders([order(f"C-{n}", f"ORD-{n}", T0 - n * DAY, 100 * n) for n in range(5)], T0)
    client.calls.clear()

    page = store.list_customers_sorted(None, None, CustomerOrder("total_spend", descending=True), None, 2)
    scans = Counter(client.calls)
    client.calls.clear()
    counted = store.count_customers_where(None, None)

    assert [r.contact_id for r in page] == ["C-4", "C-3"]
    assert scans == {("scan", "customers"): dynamo.SCAN_SEGMENTS}
    assert counted == 5 and {call for call in client.calls} == {("query", "customers:by_id")}


@pytest.mark.parametrize(("url", "problem"), [
    ("dynamodb://?region=us-east-1&tabel_prefix=x", "unknown option"),
    ("dynamodb://somehost/?region=us-east-1", "expected dynamodb://?"),
    ("dynamodb://?table_prefix=no spaces", "table_prefix"),
])
def test_bad_dynamodb_urls_are_refused_with_the_reason(url, problem):
    with pytest.raises(ValueError, match=problem):
        open_store(url)


# --- queries, not scans -------------------------------------------------------------------------------------

class Recording:
    """A real client that notes each operation it is asked for (by table and index)."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)

        def recorded(**request: Any) -> Any:
            where = request.get("TableName", ",".join(request.get("RequestItems", {})))
            self.calls.append((name, where.split("_", 1)[-1] + (":" + request["IndexName"]
                                                                  if "IndexName" in request else "")))
            return call(**request)

        return recorded


def test_the_worker_s_everyday_reads_are_queries_and_key_lookups_never_scans(url):
    config = DynamoConfig.from_url(url)
    client = Recording(make_client(config.region, config.endpoint_url))
    store = DynamoDBStore(config, client)
    store.upsert_orders([order(f"C-{n}", f"ORD-{n}", T0 - n * DAY) for n in range(5)], T0)
    evaluate_due(store, make_rules(first_run="emit"), T0)  # the first run reads everyone: the one scan allowed
    client.calls.clear()
    store.upsert_orders([order("C-1", "ORD-NEW", T0 + DAY)], T0 + DAY)
    evaluate_due(store, make_rules(first_run="emit"), T0 + DAY)
    store.get_customer("C-1")
    store.list_customers("New", None, None, 10)
    store.transitions_for("C-1")
    store.claim_due_events(T0 + DAY, 10, "A", 60)
    operations = Counter(name for name, _ in client.calls)
    assert "scan" not in operations, client.calls
    assert ("query", "customers:due") in client.calls and ("query", "events:due") in client.calls
    assert ("query", "customers:by_segment") in client.calls


def test_new_orders_are_counted_without_reading_the_customer_s_other_orders(url):
    config = DynamoConfig.from_url(url)
    client = Recording(make_client(config.region, config.endpoint_url))
    store = DynamoDBStore(config, client)
    store.upsert_orders([order("C-1", f"ORD-{n}", T0 - n * DAY) for n in range(30)], T0)
    client.calls.clear()
    store.upsert_orders([order("C-1", "ORD-NEW", T0)], T0)
    # the meta items say which order statuses do not count and in which timezone purchase days are counted
    assert client.calls == [("get_item", "meta"), ("get_item", "meta"), ("batch_get_item", "orders"),
                            ("batch_get_item", "customers"), ("batch_write_item", "orders"),
                            ("update_item", "customers")]
    assert store.get_customer("C-1").facts.order_count == 31


# --- unprocessed items --------------------------------------------------------------------------------------

class Stingy:
    """A real client that, while `times` lasts, processes half of each batch and hands the rest back as
    unprocessed, as DynamoDB does under throttling."""

    def __init__(self, client: Any, times: float):
        self.client = client
        self.times = times
        self.handed_back = 0

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        return self._halve(RequestItems, self.client.batch_write_item, lambda r: r, "UnprocessedItems")

    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        return self._halve(RequestItems, self.client.batch_get_item, lambda r: r["Keys"], "UnprocessedKeys")

    def _halve(self, request: dict[str, Any], call: Any, entries: Any, unprocessed: str) -> dict[str, Any]:
        if self.times <= 0:
            return call(RequestItems=request)
        self.times -= 1
        [(table, body)] = request.items()
        items = entries(body)
        keep, back = items[:len(items) // 2], items[len(items) // 2:]
        self.handed_back += len(back)
        answer = call(RequestItems={table: _with(body, keep)}) if keep else {}
        answer[unprocessed] = {table: _with(body, back)}
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _with(body: Any, entries: list[Any]) -> Any:
    return {**body, "Keys": entries} if isinstance(body, dict) else entries


def test_unprocessed_batch_items_are_retried_until_every_one_is_written_and_read(url):
    config = DynamoConfig.from_url(url)
    stingy = Stingy(make_client(config.region, config.endpoint_url), times=6)
    store = DynamoDBStore(config, stingy)
    orders = [order(f"C-{n % 3}", f"ORD-{n:02d}", T0 - n * DAY, 100 + n) for n in range(60)]
    result = store.upsert_orders(orders, T0)
    assert result.inserted == 60 and stingy.handed_back > 0
    counted = {c.contact_id: (c.facts.order_count, c.facts.total_cents) for c in store.customers_by_id(
        ["C-0", "C-1", "C-2"])}
    assert counted == {f"C-{k}": (20, sum(100 + n for n in range(k, 60, 3))) for k in range(3)}


def test_items_that_stay_unprocessed_fail_loudly_and_a_resend_completes_the_batch(url, monkeypatch):
    monkeypatch.setattr(dynamo, "BACKOFF_SECONDS", 0.001)
    config = DynamoConfig.from_url(url)
    store = DynamoDBStore(config, Stingy(make_client(config.region, config.endpoint_url), times=float("inf")))
    orders = [order("C-1", f"ORD-{n}", T0 - n * DAY) for n in range(4)]
    with pytest.raises(RuntimeError, match="unprocessed"):
        store.upsert_orders(orders, T0)
    healthy = open_store(url)
    assert healthy.upsert_orders(orders, T0).unchanged < 4
    assert healthy.get_customer("C-1").facts.order_count == 4


# --- two worker processes on one endpoint -------------------------------------------------------------------

CUSTOMERS = ("C-0", "C-1", "C-2")
ROUNDS = 10


def worker_orders(worker: int, round_no: int) -> list[Order]:
    """What one worker sends in one round: a new order per customer, a re-sent shared order (same for both
    workers), and its own order of the previous round for C-1, now cancelled (a recount, not an addition)."""
    at = T0 - (ROUNDS - round_no) * DAY
    orders = [order(c, f"W{worker}-{round_no}-{c}", at + worker * timedelta(hours=1), 1_000 * (worker + 1) + round_no,
                    name=f"{c} seen by {worker}") for c in CUSTOMERS]
    orders.append(order("C-0", f"SHARED-{round_no}", at, 50, email="shared@example.com"))
    if round_no:
        previous = at - DAY + worker * timedelta(hours=1)
        orders.append(order("C-1", f"W{worker}-{round_no - 1}-C-1", previous, 1_000 * (worker + 1) + round_no - 1,
                            status="cancelled", name=f"C-1 seen by {worker}"))
    return orders


SPAWN = multiprocessing.get_context("spawn")


def ingest_child(url: str, worker: int, start: Any) -> None:
    store = open_store(url)
    start.wait()
    for round_no in range(ROUNDS):
        store.upsert_orders(worker_orders(worker, round_no), T0)
    store.close()


def evaluate_child(url: str, results: Any, start: Any) -> None:
    store = open_store(url)
    start.wait()
    run = evaluate_due(store, make_rules(first_run="emit"), T0)
    results.put((run.customers, run.transitions, run.events))
    store.close()


def run_children(target: Any, *argument_sets: tuple[Any, ...]) -> None:
    """One spawned process per argument set; they meet at a barrier, then go at once."""
    start = SPAWN.Barrier(len(argument_sets))
    children = [SPAWN.Process(target=target, args=(*arguments, start)) for arguments in argument_sets]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0, f"a worker process failed ({child.exitcode})"


def test_two_processes_ingesting_the_same_customers_at_once_lose_no_aggregate(url, tmp_path):
    run_children(ingest_child, (url, 1), (url, 2))
    # What one process alone stores from the same orders: they touch different references, except the shared
    # ones, which both workers send identically, so the order of arrival does not matter.
    alone = new_store(tmp_path)
    for worker in (1, 2):
        for round_no in range(ROUNDS):
            alone.upsert_orders(worker_orders(worker, round_no), T0)
    shared = open_store(url)
    for contact_id in CUSTOMERS:
        got, expected = shared.get_customer(contact_id), alone.get_customer(contact_id)
        assert (got.facts, got.last_order_ref, got.email, got.name) == (
            expected.facts, expected.last_order_ref, expected.email, expected.name), contact_id
    assert shared.get_customer("C-1").facts.order_count == 2  # each worker's last one; the others were cancelled
    assert shared.get_customer("C-0").facts.order_count == 2 * ROUNDS + ROUNDS


def test_two_processes_evaluating_at_once_record_each_transition_and_event_once(url):
    store = open_store(url)
    store.upsert_orders([order(f"C-{n:02d}", f"ORD-{n}", T0 - n * 10 * DAY, 50_000 + n * 60_000)
                         for n in range(12)], T0)
    results = SPAWN.Queue()
    run_children(evaluate_child, (url, results), (url, results))
    runs = [results.get(timeout=30) for _ in range(2)]
    customers = [c for batch in store.iter_customers() for c in batch]
    events = store.list_events(None, 100)
    assert all(len(store.transitions_for(c.contact_id)) == 1 for c in customers)
    assert sum(transitions for _, transitions, _ in runs) == len(customers) == 12
    assert sum(created for _, _, created in runs) == len(events) == sum(
        c.segment in ("New", "VIP", "Dormant") for c in customers)
    assert max(Counter(e.contact_id for e in events).values()) == 1
