"""Threshold experiment scenarios: what a running experiment adds to a full evaluation (every customer classified
under its arm, against the same re-evaluation without an experiment), and the experiment's report over the whole
base with one entrant in ten.

The overhead pair moves nobody on either side, so the difference is the arm dispatch alone: the baseline changes only
`holdout_salt` (a rules version change: everyone is evaluated again), the experiment's arms all keep VIP at 5,000."""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.dataset import snapshot
from rules import Rules
from rules.schema import Arm, Experiment
from worker.evaluate import evaluate_due
from worker.experiments import experiment_report
from worker.store.sqlite import SQLiteStore
from worker.store.times import to_ms

EXPERIMENT = "vip-threshold"
THRESHOLDS = (("control", Decimal(5000), Decimal(34)), ("low", Decimal(3000), Decimal(33)),
              ("high", Decimal(10000), Decimal(33)))
ENTRANT_SHARE = 0.10  # customers given a VIP entry after the start, for the report
REPORT_DAYS = 61  # the report is read this long after the start: every entrant's 30-day window has closed


def with_experiment(rules: Rules, same_threshold: bool = False) -> Rules:
    """The rules with the VIP threshold experiment (three arms; all at 5,000 when `same_threshold`)."""
    arms = {name: Arm(value=Decimal(5000) if same_threshold else value, share=share)
            for name, value, share in THRESHOLDS}
    return revalidated(rules, experiments={EXPERIMENT: Experiment(segment="VIP", arms=arms)})


def revalidated(rules: Rules, **changes: Any) -> Rules:
    """The rules with `changes`, validated afresh: model_copy would keep the cached rules_version of the original,
    and a run under them would not see that the rules changed."""
    return Rules.model_validate({**rules.model_dump(by_alias=True), **changes})


@dataclass(frozen=True)
class OverheadRun:
    seconds: float  # median, with the experiment
    baseline_seconds: float  # median, the same re-evaluation without one
    customers: int
    pairs: int
    runs: list[dict[str, float]]


def evaluation_overhead(evaluated: Path, work: Path, rules: Rules, as_of: datetime, pairs: int) -> OverheadRun:
    """Re-evaluate everyone on copies of the evaluated store, `pairs` times each way, alternating: under the
    experiment whose arms all keep the threshold, and under the rules with another holdout_salt."""
    experiment = with_experiment(rules, same_threshold=True)
    salted = revalidated(rules, holdout_salt=rules.holdout_salt + "-bench")
    runs: list[dict[str, float]] = []
    customers = 0
    for n in range(pairs):
        run: dict[str, float] = {}
        for label, variant in (("experiment", experiment), ("baseline", salted)):
            copy = snapshot(evaluated, work / f"experiment-{label}-{n}.db")
            store = SQLiteStore(copy)
            try:
                started = time.perf_counter()
                result = evaluate_due(store, variant, as_of)
                run[label] = time.perf_counter() - started
            finally:
                store.close()
                _remove(copy)
            if result.transitions:
                raise RuntimeError(f"the {label} re-evaluation moved {result.transitions} customers: not a pair")
            if customers and result.customers != customers:
                raise RuntimeError(f"the {label} re-evaluation saw {result.customers} customers, the other "
                                   f"{customers}: both must re-evaluate everyone")
            customers = result.customers
        runs.append(run)
    return OverheadRun(statistics.median(r["experiment"] for r in runs),
                       statistics.median(r["baseline"] for r in runs), customers, pairs, runs)


@dataclass(frozen=True)
class ReportRun:
    milliseconds: float  # warm, median
    first_call_milliseconds: float
    details: dict[str, Any]


def report_timing(evaluated: Path, to: Path, rules: Rules, as_of: datetime, repeats: int, seed: int) -> ReportRun:
    """Start the real experiment on a copy of the evaluated store (an evaluation at `as_of`), give one customer in
    ten a move into VIP in the 30 days after and an order in its window, then time the report REPORT_DAYS later."""
    experiment = with_experiment(rules)
    snapshot(evaluated, to)
    store = SQLiteStore(to)
    try:
        started = time.perf_counter()
        start = evaluate_due(store, experiment, as_of)
        start_seconds = time.perf_counter() - started
    finally:
        store.close()
    entrants = _add_entrants(to, as_of, seed)
    store = SQLiteStore(to)
    try:
        at = as_of + timedelta(days=REPORT_DAYS)
        started = time.perf_counter()
        report = experiment_report(store, experiment, EXPERIMENT, at)
        first = (time.perf_counter() - started) * 1000
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            report = experiment_report(store, experiment, EXPERIMENT, at)
            runs.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
        _remove(to)
    details = {
        "start_evaluation_seconds": start_seconds, "start_moves": start.transitions, "entrants_added": entrants,
        "customers": sum(t.customers for t in report.whole),
        "arms": {a.arm: {"entered": a.entered, "measured": a.measured} for a in report.arms},
        "verdicts": {t.arm: None if t.versus is None else t.versus.verdict for t in report.whole},
        "runs_ms": runs, "first_call_ms": first,
    }
    return ReportRun(statistics.median(runs), first, details)


def _add_entrants(db: Path, as_of: datetime, seed: int) -> int:
    """A move into VIP for one customer in ten, in the 30 days after `as_of`, and one order each 1 to 20 days after
    it: written straight into the tables the report reads (what evaluations and imports would have left)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(db)
    try:
        contacts = [r[0] for r in conn.execute("SELECT contact_id FROM customers ORDER BY contact_id")]
        chosen = [c for c in contacts if rng.random() < ENTRANT_SHARE]
        transitions, orders = [], []
        for contact in chosen:
            entered = as_of + timedelta(minutes=rng.randrange(30 * 24 * 60))
            transitions.append((f"trn_bench_{contact}", contact, "Active", "VIP", to_ms(entered), to_ms(entered),
                                "bench"))
            ordered = entered + timedelta(days=rng.randint(1, 20))
            orders.append((f"ORD-bench-{contact}", contact, to_ms(ordered), rng.randint(2_000, 50_000), None, 0,
                           to_ms(ordered)))
        with conn:
            conn.executemany("INSERT INTO transitions (id, contact_id, from_segment, to_segment, occurred_at, "
                             "detected_at, rules_version) VALUES (?, ?, ?, ?, ?, ?, ?)", transitions)
            conn.executemany("INSERT INTO orders (order_ref, contact_id, order_at, total_cents, status, cancelled, "
                             "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)", orders)
    finally:
        conn.close()
    return len(chosen)


def _remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
