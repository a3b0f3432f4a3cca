"""Import and first evaluation on the DynamoDB store (against moto's server on 127.0.0.1, not AWS) beside SQLite.

    python -m bench.dynamodb [--customers 10000] [--seed 42] [--work-dir DIR] [--backends sqlite,dynamodb]
                             [--dynamodb-url 'dynamodb://?region=...&table_prefix=bench_']

The same generated orders go through `store.upsert_orders` in import-orders' batches, then one `evaluate_due`
(the store's first run: everyone, baseline). For DynamoDB it also counts requests per operation and splits the
time into this process's CPU (boto3 and the store), the server's CPU (moto) and the rest (waiting, scheduling).
DynamoDB means moto's server on 127.0.0.1, started here, unless --dynamodb-url names real tables (they are
created with its prefix if missing, must be empty, and are left in place: delete them afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.dataset import RULES_FILE, WEBHOOK_SECRET
from bench.generate import AS_OF, generate
from rules import Rules
from worker.evaluate import evaluate_due
from worker.ingest import BATCH as IMPORT_BATCH
from worker.ingest import parse_record, read_order_file
from worker.rules_file import load_rules_file
from worker.store import open_store
from worker.store.base import Order, Store

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Phase:
    seconds: float
    cpu_seconds: float  # this process: the store's code, boto3's (de)serialization and signing
    server_cpu_seconds: float | None = None  # moto's process
    requests: dict[str, int] = field(default_factory=dict)
    request_seconds: dict[str, float] = field(default_factory=dict)  # summed per operation (threads overlap)


@dataclass
class Outcome:
    backend: str
    customers: int
    orders: int
    import_: Phase
    evaluation: Phase
    evaluated: int


class RequestCounter:
    """Counts and times each DynamoDB request through botocore's own events (no patching)."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)
        return client

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _after(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self.count[model.name] += 1
        self.seconds[model.name] += time.perf_counter() - context.get("bench_started", time.perf_counter())

    def take(self) -> tuple[dict[str, int], dict[str, float]]:
        taken = dict(self.count), {k: round(v, 2) for k, v in self.seconds.items()}
        self.count.clear()
        self.seconds.clear()
        return taken


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
        imported.requests, imported.request_seconds = counter.take()
    run, evaluated = measure(lambda: evaluate_due(store, rules, AS_OF), server_cpu)
    if counter:
        evaluated.requests, evaluated.request_seconds = counter.take()
    customers = store.count_customers()
    return Outcome(name, customers, len(orders), imported, evaluated, run.customers)


def sqlite_outcome(work: Path, orders: list[Order], rules: Rules) -> Outcome:
    db = work / "bench-sqlite.db"
    for leftover in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        leftover.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    try:
        return run_backend("SQLite (file, WAL)", store, orders, rules, None, lambda: None)
    finally:
        store.close()


def dynamodb_outcome(orders: list[Order], rules: Rules, url: str | None) -> Outcome:
    from tests.dynamo_server import CLIENT_ENV, REGION, DynamoServer
    from worker.store.dynamodb import DynamoConfig

    if url:
        return _dynamodb_run("DynamoDB (" + url + ")", DynamoConfig.from_url(url), orders, rules, lambda: None)
    os.environ.update(CLIENT_ENV)
    with DynamoServer() as server:
        return _dynamodb_run("DynamoDB (moto server, 127.0.0.1)", DynamoConfig(REGION, server.endpoint_url, "bench_"),
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
        return run_backend(label, store, orders, rules, counter, server_cpu)
    finally:
        store.close()


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
        for label, phase in (("import", o.import_), ("first evaluation", o.evaluation)):
            if not phase.requests:
                continue
            server = "" if phase.server_cpu_seconds is None else f", moto server CPU {phase.server_cpu_seconds:.1f} s"
            yield (f"\n{o.backend}, {label}: {phase.seconds:.1f} s wall; client CPU {phase.cpu_seconds:.1f} s"
                   f"{server}")
            for operation, count in sorted(phase.requests.items(), key=lambda kv: -phase.request_seconds[kv[0]]):
                spent = phase.request_seconds[operation]
                yield (f"  {operation:<20} {count:>7} requests  {spent:>8.1f} s summed  "
                       f"{1000 * spent / count:>6.1f} ms each")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--backends", default="sqlite,dynamodb")
    parser.add_argument("--dynamodb-url", default=None, help="real tables instead of the local moto server")
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
                        dynamodb_outcome(orders, rules, args.dynamodb_url))
    for line in table(outcomes):
        print(line)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dynamodb-{args.customers}.json"
    out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2), encoding="utf-8")
    print(f"\n(written to {out}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
