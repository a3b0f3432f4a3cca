"""Evaluation scenarios: the first full run (in a subprocess, with its peak memory), its two baselines, and ticks."""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.dataset import REPO, bench_env
from rules import Classifier, CustomerFacts, Rules
from worker.evaluate import decide, evaluate_due
from worker.serialize import iso
from worker.store.base import CustomerRecord
from worker.store.sqlite import SQLiteStore
from worker.store.times import from_ms

IDLE_REPEATS = 7

GROUP_BY = ("SELECT contact_id, count(*), sum(total_cents), min(order_at), max(order_at) FROM orders "
            "WHERE cancelled = 0 GROUP BY contact_id")


@dataclass(frozen=True)
class FullRun:
    seconds: float
    cpu_seconds: float
    customers: int
    transitions: int
    events: int
    peak_rss_mb: float
    scored: bool = False  # a saved churn model was loaded and scored everyone evaluated

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def first_full_evaluation(db: Path, as_of: datetime) -> FullRun:
    """`evaluate_due` on a freshly imported store (or any store: whoever is due), in a child process that reports
    its own time and peak RSS."""
    done = subprocess.run([sys.executable, "-m", "bench.child", str(db), iso(as_of)], cwd=REPO,
                          env=bench_env(f"sqlite:///{db}"), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"evaluation child failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["errors"]:
        raise RuntimeError(f"{report['errors']} customers could not be evaluated: {done.stderr[-2000:]}")
    return FullRun(report["seconds"], report["cpu_seconds"], report["customers"], report["transitions"],
                   report["events"], report["peak_rss_kb"] / 1024, report["scored"])


def group_by_baseline(db: Path, repeats: int = 3) -> tuple[float, float]:
    """One bare aggregate query over the same orders (all rows fetched): median wall and CPU seconds of `repeats`."""
    conn = sqlite3.connect(db)
    times, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        conn.execute(GROUP_BY).fetchall()
        times.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    conn.close()
    return statistics.median(times), statistics.median(cpus)


def naive_evaluation(db: Path, rules: Rules, as_of: datetime) -> tuple[float, float, int]:
    """The original design: list the customers, then for each one query its orders, aggregate them in Python,
    decide (the same `decide` as the real run: segment, transition, events) and save that customer alone.

    Runs on its own copy of the freshly imported store; returns (wall seconds, CPU seconds, customers)."""
    store = SQLiteStore(db)
    reads = sqlite3.connect(db)
    classifier = Classifier(rules)
    started, cpu = time.perf_counter(), time.process_time()
    customers = reads.execute("SELECT contact_id, version FROM customers ORDER BY contact_id").fetchall()
    for contact_id, version in customers:
        orders = reads.execute(
            "SELECT order_ref, order_at, total_cents, cancelled, email, name FROM orders WHERE contact_id = ? "
            "ORDER BY order_at, order_ref", (contact_id,)).fetchall()
        record = _record_from_orders(contact_id, version, orders)
        store.save_evaluations([decide(record, classifier, as_of, True)])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    reads.close()
    store.close()
    return seconds, cpu, len(customers)


def _record_from_orders(contact_id: str, version: int, orders: list[tuple]) -> CustomerRecord:
    counted = [o for o in orders if not o[3]]
    named = [o[5] for o in orders if o[5] is not None]
    mailed = [o[4] for o in orders if o[4] is not None]
    facts = CustomerFacts(len(counted), sum(o[2] for o in counted),
                          from_ms(counted[0][1]) if counted else None, from_ms(counted[-1][1]) if counted else None)
    return CustomerRecord(contact_id=contact_id, name=named[-1] if named else None,
                          email=mailed[-1] if mailed else None, facts=facts,
                          last_order_ref=counted[-1][0] if counted else None, version=version, segment=None,
                          purchase_frequency=None, next_check_at=None, evaluated_at=None)


def idle_tick(db: Path, rules: Rules, as_of: datetime, repeats: int = IDLE_REPEATS) -> tuple[float, int]:
    """Median milliseconds of `evaluate_due` when nothing is due or new; also how many it evaluated (0)."""
    store = SQLiteStore(db)
    evaluate_due(store, rules, as_of)  # anything left over, and warm the connection
    times, evaluated = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = evaluate_due(store, rules, as_of)
        times.append(time.perf_counter() - started)
        evaluated += result.customers
    store.close()
    return statistics.median(times) * 1000, evaluated


def daily_ticks(db: Path, rules: Rules, as_of: datetime, days: int) -> list[dict[str, Any]]:
    """One tick per following day at the same hour: the customers whose next re-check fell in that day are due."""
    store = SQLiteStore(db)
    ticks = []
    for day in range(1, days + 1):
        moment = as_of + timedelta(days=day)
        started, cpu = time.perf_counter(), time.process_time()
        result = evaluate_due(store, rules, moment)
        ticks.append({"as_of": iso(moment), "ms": (time.perf_counter() - started) * 1000,
                      "cpu_ms": (time.process_time() - cpu) * 1000, "due": result.customers,
                      "transitions": result.transitions, "events": result.events})
    store.close()
    return ticks
