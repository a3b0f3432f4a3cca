"""Import and first evaluation on the DynamoDB store (against dynalite or moto on 127.0.0.1, not AWS) beside SQLite,
measured against a bare boto3 floor on the same server in the same run.

    python -m bench.dynamodb [--customers 10000] [--seed 42] [--work-dir DIR] [--backends sqlite,dynamodb]
                             [--server dynalite|moto] [--dynamodb-url 'dynamodb://?region=...&table_prefix=bench_']

The same generated orders go through `store.upsert_orders` in import-orders' batches, then one `evaluate_due`
(the store's first run: everyone, baseline), then a re-evaluation of everyone in which nothing changes (another
holdout_salt: the rules version moves, no segment does). For DynamoDB it counts requests and the capacity units the
server reports (ReturnConsumedCapacity) per operation, splits the time into this process's CPU (boto3 and the
store), the server's CPU and the rest (waiting, scheduling), and runs the floor: BatchWriteItem of the orders 25 a
request plus one UpdateItem per customer (8 threads), then a parallel Scan plus one UpdateItem per customer. From
the units it prints what the same work costs on DynamoDB on demand for 100k and 1M customers.
DynamoDB means dynalite (installed from npm on first use) or moto's server, started here, unless --dynamodb-url
names real tables (they are created with its prefix if missing, must be empty, and are left in place).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.dataset import RULES_FILE, WEBHOOK_SECRET
from bench.experiments import revalidated
from bench.generate import AS_OF, generate
from rules import Rules
from worker.evaluate import evaluate_due
from worker.ingest import BATCH as IMPORT_BATCH
from worker.ingest import parse_record, read_order_file
from worker.rules_file import load_rules_file
from worker.store import open_store
from worker.store.base import Order, Store

RESULTS = Path(__file__).resolve().parent / "results"


# On-demand prices per million request units (us-east-1, as AWS lists them since November 2024; check the price list).
WRITE_PRICE, READ_PRICE = 0.625, 0.125
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
DATA_OPERATIONS = WRITES | {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
FLOOR_THREADS = 8


@dataclass
class Phase:
    seconds: float
    cpu_seconds: float  # this process: the store's code, boto3's (de)serialization and signing
    server_cpu_seconds: float | None = None  # the server's process
    requests: dict[str, int] = field(default_factory=dict)
    request_seconds: dict[str, float] = field(default_factory=dict)  # summed per operation (threads overlap)
    read_units: float = 0.0  # capacity units the server reported
    write_units: float = 0.0

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())


@dataclass
class Outcome:
    backend: str
    customers: int
    orders: int
    import_: Phase
    evaluation: Phase
    evaluated: int
    unchanged: Phase | None = None  # the re-evaluation in which nothing changes
    floor_import: Phase | None = None
    floor_evaluation: Phase | None = None


class RequestCounter:
    """Counts and times each DynamoDB request, and sums the capacity units the server reports for it, through
    botocore's own events (no patching): every data request asks for ReturnConsumedCapacity TOTAL."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        self.units: Counter[str] = Counter()  # "read" / "write"
        self._lock = threading.Lock()

    def attach(self, client: Any) -> Any:
        for operation in DATA_OPERATIONS:
            client.meta.events.register(f"provide-client-params.dynamodb.{operation}", _ask_for_capacity)
        client.meta.events.register("before-call.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)
        return client

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _after(self, model: Any, context: dict[str, Any], parsed: dict[str, Any] | None = None, **_: Any) -> None:
        consumed = (parsed or {}).get("ConsumedCapacity") or []
        units = sum(c.get("CapacityUnits", 0) for c in ([consumed] if isinstance(consumed, dict) else consumed))
        with self._lock:  # the store's requests run on a thread pool
            self.count[model.name] += 1
            self.seconds[model.name] += time.perf_counter() - context.get("bench_started", time.perf_counter())
            self.units["write" if model.name in WRITES else "read"] += units

    def take(self, phase: Phase) -> Phase:
        with self._lock:
            phase.requests, phase.request_seconds = dict(self.count), {k: round(v, 2) for k, v in self.seconds.items()}
            phase.read_units, phase.write_units = self.units["read"], self.units["write"]
            self.count.clear()
            self.seconds.clear()
            self.units.clear()
        return phase


def _ask_for_capacity(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("ReturnConsumedCapacity", "TOTAL")


def read_orders(csv_path: Path) -> list[Order]:
    with csv_path.open(encoding="utf-8", newline="") as stream:
        return [parse_record(where, raw) for where, raw in read_order_file(csv_path, stream)]


def measure(work: Callable[[], Any], server_cpu: Callable[[], float | None]) -> tuple[Any, Phase]:
    started, cpu, server = time.perf_counter(), time.process_time(), server_cpu()
    result = work()
    server_after = server_cpu()
    return result, Phase(time.perf_counter() - started, time.process_time() - cpu,
                         None if server is None or server_after is None else server_after - server)


def run_backend(name: str, store: Store, orders: list[Order], rules: Rules, counter: RequestCounter | None,
                server_cpu: Callable[[], float | None]) -> Outcome:
    def import_all() -> None:
        for start in range(0, len(orders), IMPORT_BATCH):
            store.upsert_orders(orders[start:start + IMPORT_BATCH], AS_OF)

    _, imported = measure(import_all, server_cpu)
    if counter:
        counter.take(imported)
    run, evaluated = measure(lambda: evaluate_due(store, rules, AS_OF), server_cpu)
    if counter:
        counter.take(evaluated)
    salted = revalidated(rules, holdout_salt=rules.holdout_salt + "-again")
    again, unchanged = measure(lambda: evaluate_due(store, salted, AS_OF), server_cpu)
    if again.transitions or again.customers != run.customers:
        raise RuntimeError(f"the re-evaluation saw {again.customers} customers and moved {again.transitions}: it "
                           f"should see all {run.customers} and move nobody")
    if counter:
        counter.take(unchanged)
    customers = store.count_customers()
    return Outcome(name, customers, len(orders), imported, evaluated, run.customers, unchanged)


def sqlite_outcome(work: Path, orders: list[Order], rules: Rules) -> Outcome:
    db = work / "bench-sqlite.db"
    for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    try:
        return run_backend("SQLite (file, WAL)", store, orders, rules, None, lambda: None)
    finally:
        store.close()


def dynamodb_outcome(orders: list[Order], rules: Rules, url: str | None, server_kind: str = "dynalite",
                     latency_ms: float = 0.0) -> Outcome:
    from bench.dynalite import Dynalite
    from bench.latency_proxy import proxied
    from tests.dynamo_server import CLIENT_ENV, REGION, DynamoServer
    from worker.store.dynamodb import DynamoConfig

    if url:
        return _dynamodb_run("DynamoDB (" + url + ")", DynamoConfig.from_url(url), orders, rules, lambda: None)
    os.environ.update(CLIENT_ENV)
    with (Dynalite() if server_kind == "dynalite" else DynamoServer()) as server:
        if not latency_ms:
            config = DynamoConfig(REGION, server.endpoint_url, "bench_")
            return _dynamodb_run(f"DynamoDB ({server_kind}, 127.0.0.1)", config, orders, rules, server.cpu_seconds)
        with proxied(server.endpoint_url, latency_ms) as endpoint:
            config = DynamoConfig(REGION, endpoint, "bench_")
            return _dynamodb_run(f"DynamoDB ({server_kind}, 127.0.0.1, +{latency_ms:g} ms a request)", config,
                                 orders, rules, server.cpu_seconds)


def _dynamodb_run(label: str, config: Any, orders: list[Order], rules: Rules,
                  server_cpu: Callable[[], float | None]) -> Outcome:
    from worker.store.dynamodb import DynamoDBStore, create_tables, make_client

    create_tables(config)
    counter = RequestCounter()
    store = DynamoDBStore(config, counter.attach(make_client(config.region, config.endpoint_url)))
    if store.count_customers():
        raise SystemExit(f"{label}: the tables with prefix {config.table_prefix!r} are not empty")
    try:
        outcome = run_backend(label, store, orders, rules, counter, server_cpu)
    finally:
        store.close()
    floor_client = counter.attach(make_client(config.region, config.endpoint_url))
    outcome.floor_import, outcome.floor_evaluation = floor(floor_client, orders, config.table_prefix + "floor_",
                                                           counter, server_cpu)
    return outcome


def floor(client: Any, orders: list[Order], prefix: str, counter: RequestCounter,
          server_cpu: Callable[[], float | None]) -> tuple[Phase, Phase]:
    """The least the same work can take on this server with bare boto3 and FLOOR_THREADS threads: the orders written
    25 a request and one UpdateItem of each customer's totals; then a parallel Scan of the customers and one
    UpdateItem of each one's segment. No validation, no history, no outbox: a floor, not a store."""
    orders_table, customers_table = prefix + "orders", prefix + "customers"
    for table, key in ((orders_table, "order_ref"), (customers_table, "contact_id")):
        client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    totals: dict[str, list[int]] = {}
    for order in orders:
        at = int(order.order_at.timestamp() * 1000)
        seen = totals.setdefault(order.contact_id, [0, 0, at, at])
        seen[0] += 1
        seen[1] += order.total_cents
        seen[2], seen[3] = min(seen[2], at), max(seen[3], at)
    counter.take(Phase(0, 0))  # the tables' creation is not part of the floor

    def write(chunk: list[Order]) -> None:
        pending = {orders_table: [{"PutRequest": {"Item": {
            "order_ref": {"S": o.order_ref}, "contact_id": {"S": o.contact_id},
            "order_at": {"N": str(int(o.order_at.timestamp() * 1000))}, "total_cents": {"N": str(o.total_cents)}}}}
            for o in chunk]}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def total(item: tuple[str, list[int]]) -> None:
        contact_id, (count, cents, first, last) = item
        client.update_item(TableName=customers_table, Key={"contact_id": {"S": contact_id}},
                           UpdateExpression="SET order_count = :n, total_cents = :c, first_order_at = :f, "
                                            "last_order_at = :l",
                           ExpressionAttributeValues={":n": {"N": str(count)}, ":c": {"N": str(cents)},
                                                      ":f": {"N": str(first)}, ":l": {"N": str(last)}})

    def import_floor() -> None:
        with ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(write, [orders[i:i + 25] for i in range(0, len(orders), 25)]))
            list(pool.map(total, totals.items()))

    def segment(number: int) -> None:
        request: dict[str, Any] = {"TableName": customers_table, "Segment": number, "TotalSegments": FLOOR_THREADS}
        while True:
            page = client.scan(**request)
            for item in page["Items"]:
                client.update_item(TableName=customers_table, Key={"contact_id": item["contact_id"]},
                                   UpdateExpression="SET #segment = :s",
                                   ExpressionAttributeNames={"#segment": "segment"},
                                   ExpressionAttributeValues={":s": {"S": "Active"}})
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def evaluation_floor() -> None:
        with ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(segment, range(FLOOR_THREADS)))

    _, imported = measure(import_floor, server_cpu)
    counter.take(imported)
    _, evaluated = measure(evaluation_floor, server_cpu)
    counter.take(evaluated)
    return imported, evaluated


def table(outcomes: list[Outcome]) -> Iterator[str]:
    width = max(36, *(len(o.backend) for o in outcomes))
    yield (f"{'backend':<{width}} {'customers':>9} {'orders':>8} {'import s':>9} {'orders/s':>9} {'eval s':>8} "
           f"{'cust/s':>8} {'requests':>9}")
    for o in outcomes:
        requests = sum(o.import_.requests.values()) + sum(o.evaluation.requests.values())
        yield (f"{o.backend:<{width}} {o.customers:>9} {o.orders:>8} {o.import_.seconds:>9.1f} "
               f"{o.orders / o.import_.seconds:>9.0f} {o.evaluation.seconds:>8.1f} "
               f"{o.evaluated / o.evaluation.seconds:>8.0f} {requests or '-':>9}")
    for o in outcomes:
        yield from _against_floor(o)
        for label, phase in (("import", o.import_), ("first evaluation", o.evaluation),
                             ("re-evaluation, nothing changes", o.unchanged)):
            if phase is None or not phase.requests:
                continue
            server = "" if phase.server_cpu_seconds is None else f", server CPU {phase.server_cpu_seconds:.1f} s"
            yield (f"\n{o.backend}, {label}: {phase.seconds:.1f} s wall; client CPU {phase.cpu_seconds:.1f} s"
                   f"{server}")
            for operation, count in sorted(phase.requests.items(), key=lambda kv: -phase.request_seconds[kv[0]]):
                spent = phase.request_seconds[operation]
                yield (f"  {operation:<20} {count:>7} requests  {spent:>8.1f} s summed  "
                       f"{1000 * spent / count:>6.1f} ms each")


def _against_floor(o: Outcome) -> Iterator[str]:
    """The ratios to the floor, requests and capacity units per order and per customer, and what it costs."""
    if o.floor_import is None or o.floor_evaluation is None:
        return
    yield (f"\n{o.backend}: import {o.import_.seconds:.1f} s = {o.import_.seconds / o.floor_import.seconds:.2f}x the "
           f"bare boto3 floor ({o.floor_import.seconds:.1f} s); first evaluation {o.evaluation.seconds:.1f} s = "
           f"{o.evaluation.seconds / o.floor_evaluation.seconds:.2f}x its floor ({o.floor_evaluation.seconds:.1f} s)")
    for label, phase, per, unit in (("import", o.import_, o.orders, "order"),
                                    ("floor import", o.floor_import, o.orders, "order"),
                                    ("first evaluation", o.evaluation, o.evaluated, "customer"),
                                    ("floor evaluation", o.floor_evaluation, o.evaluated, "customer"),
                                    ("re-evaluation, nothing changes", o.unchanged, o.evaluated, "customer")):
        if phase is not None and per:
            yield (f"  {label:<31} {phase.request_count / per:6.3f} requests, {phase.write_units / per:6.3f} write "
                   f"and {phase.read_units / per:6.3f} read units per {unit}")
    orders_per_customer = o.orders / o.customers if o.customers else 0
    yield (f"  on demand (${WRITE_PRICE} per million write units, ${READ_PRICE} per million read units; the "
           "units dynalite or moto report: the table's, not its indexes'):")
    for customers in (100_000, 1_000_000):
        scale = customers / o.customers if o.customers else 0
        for label, phase in (("import", o.import_), ("first evaluation", o.evaluation),
                             ("re-evaluation", o.unchanged)):
            if phase is None:
                continue
            dollars = scale * (phase.write_units * WRITE_PRICE + phase.read_units * READ_PRICE) / 1e6
            yield (f"    {customers:>9,} customers ({customers * orders_per_customer:,.0f} orders), {label:<16} "
                   f"${dollars:,.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--backends", default="sqlite,dynamodb")
    parser.add_argument("--server", choices=("dynalite", "moto"), default="dynalite",
                        help="the local DynamoDB server to start (dynalite is installed from npm on first use)")
    parser.add_argument("--dynamodb-url", default=None, help="real tables instead of a local server")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="put the local server behind bench/latency_proxy.py, adding this delay to every request")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-dynamodb-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / f"orders-{args.customers}.csv"
    generate(args.customers, csv_path, args.seed)
    orders = read_orders(csv_path)
    rules = load_rules_file(RULES_FILE, {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    outcomes = []
    for backend in args.backends.split(","):
        print(f"{backend}: importing {len(orders)} orders of {args.customers} customers ...", file=sys.stderr,
              flush=True)
        outcomes.append(sqlite_outcome(work, orders, rules) if backend == "sqlite" else
                        dynamodb_outcome(orders, rules, args.dynamodb_url, args.server, args.latency_ms))
    for line in table(outcomes):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"dynamodb-{args.customers}.json"
    out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2), encoding="utf-8")
    print(f"\n(written to {out}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
