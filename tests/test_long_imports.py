"""Long imports beside a live store: the real `import-orders` process on a 120k-order file, the API writing while
it runs, a kill -9 half-way and the re-run that resumes; and how long each kind of write waits for a busy store."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import NOW, make_order
from tests.factories import T0, order
from tests.server_process import ROOT
from worker.ingest import BATCH
from worker.store import sqlite as sqlite_store
from worker.store.base import StoreBusy

ORDERS = 120_000  # several seconds of writing on a 2-core machine
CUSTOMERS = 7_500
API_WRITE_SECONDS = 1.5  # the longest any POST /api/orders may take while the import runs


@dataclass(frozen=True)
class OrderFile:
    """A generated CSV and what the store must hold once it is imported: per customer (order count, cents)."""

    path: Path
    customers: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> OrderFile:
    rng = random.Random(20260221)
    path = tmp_path_factory.mktemp("long-imports") / "orders.csv"
    counts: Counter[str] = Counter()
    cents: Counter[str] = Counter()
    lines = ["contactID,orderReference,orderDate,total,email,name\n"]
    for n in range(ORDERS):
        contact, total = f"C-{rng.randrange(CUSTOMERS)}", rng.randrange(100, 100_000)
        counts[contact] += 1
        cents[contact] += total
        lines.append(f"{contact},ORD-{n},2025-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z,"
                     f"{total // 100}.{total % 100:02d},{contact.lower()}@example.com,Customer {contact}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return OrderFile(path, {contact: (counts[contact], cents[contact]) for contact in counts})


@pytest.fixture
def run_import(rules_file: Path, database_url: str, env: dict[str, str], tmp_path: Path):
    """Start `python -m worker import-orders FILE` against this test's store; its output goes to a log file."""
    environment = {**os.environ, **env, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file)}
    started: list[subprocess.Popen] = []

    def start(path: Path) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"import-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "worker", "import-orders", str(path)], cwd=ROOT,
                                       env=environment, stdout=out, stderr=subprocess.STDOUT)
        started.append(process)
        return process, log

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def database(database_url: str) -> closing[sqlite3.Connection]:
    """A plain connection of the test's own to the store's file, closed after its block."""
    return closing(sqlite3.connect(database_url[len("sqlite:///"):], timeout=5))


def stored_records(database_url: str) -> int:
    """How many of the file's records the import has committed (its checkpoint in the store's meta)."""
    with database(database_url) as db:
        row = db.execute("SELECT value FROM meta WHERE key LIKE 'order_import:%'").fetchone()
    return 0 if row is None else json.loads(row[0])["records"]


def wait_for(condition, timeout: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the import exited with {process.returncode} first:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s:\n{log.read_text()}")
        time.sleep(0.02)


def test_api_writes_answer_within_a_second_and_a_half_while_a_long_import_runs(big_file, run_import, client,
                                                                                 admin_headers, database_url):
    process, log = run_import(big_file.path)
    wait_for(lambda: stored_records(database_url) > 0, 60, process, log)  # checked; now writing batches

    waits, statuses, number = [], Counter(), 0
    while process.poll() is None:
        number += 1
        began = time.monotonic()
        response = client.post("/api/orders", headers=admin_headers,
                               json=make_order(f"API-{number}", f"API-{number}", NOW - timedelta(days=1), "9.99"))
        waits.append(time.monotonic() - began)
        statuses[response.status_code] += 1
        time.sleep(0.02)

    assert process.returncode == 0, log.read_text()
    assert statuses == {200: number}
    assert number >= 10, "the import finished before the API could write beside it"
    assert max(waits) < API_WRITE_SECONDS, sorted(waits)[-5:]
    with database(database_url) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == ORDERS + number


def test_an_import_killed_half_way_resumes_and_ends_with_exactly_the_file(big_file, run_import, store, database_url):
    process, log = run_import(big_file.path)
    wait_for(lambda: stored_records(database_url) >= ORDERS // 2, 120, process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    stopped_at = stored_records(database_url)
    with database(database_url) as db:
        assert stopped_at <= db.execute("SELECT count(*) FROM orders").fetchone()[0] < ORDERS

    again, log = run_import(big_file.path)
    assert again.wait(timeout=120) == 0, log.read_text()

    output = log.read_text()
    assert f"resumed at record {stopped_at + 1}" in output
    imported, unchanged = (int(re.search(rf"^{word}: (\d+)$", output, re.M).group(1))
                           for word in ("imported", "unchanged"))
    # only the rest of the file is written; a batch committed just before the kill, ahead of its checkpoint, again
    assert imported + unchanged == ORDERS - stopped_at and unchanged <= BATCH
    with database(database_url) as db:
        assert db.execute("SELECT count(*), sum(total_cents) FROM orders").fetchone() == (
            ORDERS, sum(cents for _, cents in big_file.customers.values()))
        customers = {row[0]: (row[1], row[2]) for row in db.execute(
            "SELECT contact_id, order_count, total_cents FROM customers")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert customers == big_file.customers


# --- how long each write waits for a store another writer holds ---------------------------------------------

@contextmanager
def store_held(database_url: str, seconds: float) -> Iterator[None]:
    """Another connection takes the write lock and keeps it for `seconds` (a writer that would not let go)."""
    taken = threading.Event()

    def hold() -> None:
        with database(database_url) as db:
            db.isolation_level = None
            db.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(seconds)
            db.execute("ROLLBACK")

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(5)
    try:
        yield
    finally:
        holder.join()


def test_a_busy_store_answers_503_with_retry_after_and_fails_fast(client, admin_headers, database_url):
    body = make_order("C-1", "ORD-1", NOW - timedelta(days=1), "10.00")
    # the first write also records the rules' excluded statuses, a background write that would wait its 30 s
    first = client.post("/api/orders", json={**body, "orderReference": "ORD-0"}, headers=admin_headers)
    assert first.status_code == 200
    with store_held(database_url, sqlite_store.ORDER_WRITE_WAIT_SECONDS + 1):
        began = time.monotonic()
        response = client.post("/api/orders", json=body, headers=admin_headers)
        waited = time.monotonic() - began

    assert response.status_code == 503
    assert response.get_json() == {"error": "the store is busy; retry shortly"}
    assert response.headers["Retry-After"] == "1"
    assert sqlite_store.ORDER_WRITE_WAIT_SECONDS <= waited < sqlite_store.ORDER_WRITE_WAIT_SECONDS + 1
    assert client.post("/api/orders", json=body, headers=admin_headers).status_code == 200


def test_background_writes_outwait_a_holder_that_order_writes_give_up_on(store, database_url, monkeypatch):
    monkeypatch.setattr(sqlite_store, "ORDER_WRITE_WAIT_SECONDS", 0.2)
    with store_held(database_url, 0.6):
        with pytest.raises(StoreBusy, match="database is locked"):
            store.upsert_orders([order("C-1", "ORD-1", T0, 100)], T0)
        store.set_meta("evaluation", "saved")  # what the scheduler writes waits on: it must not give up
    assert store.get_meta("evaluation") == "saved"
    assert store.get_customer("C-1") is None
