"""Campaign outcome scenarios: what measuring outcomes adds to an order import (the same second import on copies of
the evaluated store with and without its measured events), and the campaign report over one event per customer."""

from __future__ import annotations

import csv
import random
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.dataset import import_into, snapshot
from bench.generate import AS_OF, HEADER
from rules import Rules
from rules.holdouts import draws_held_out
from rules.metrics import local_date, local_midnight
from worker.outcomes import campaign_report
from worker.store.base import DELIVERED, HELD_OUT
from worker.store.sqlite import _REFRESH_OUTCOMES, SQLiteStore, _fill_touched
from worker.store.times import to_ms

NEW_ORDER_DAYS = 28  # the second import's orders fall in the four weeks after as_of: inside the open windows
REPORT_CAMPAIGN = "bench-report"
REPORT_HOLDOUT = Decimal(50)  # the most the rules allow: the two groups about equal
REPORT_HISTORY_DAYS = 365  # the generated events' occurredAt: spread over the year before as_of
MEASURED, NO_EVENTS, NO_WINDOWS = "measured events", "events deleted", "windows cleared"


@dataclass(frozen=True)
class ImportRun:
    variant: str
    seconds: float
    cpu_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ImportOverhead:
    """The second import on copies of the evaluated store: as the evaluation left it (its events measured), with
    the events deleted (the baseline: nothing to measure), and with the windows cleared (the refresh's SQL still
    looks at every event of the touched customers, but measures none)."""

    runs: list[ImportRun]
    orders: int
    customers: int
    measured_events: int
    outcome_orders_before: int
    outcome_orders_after: int

    def seconds(self, variant: str) -> float:
        return statistics.median(r.seconds for r in self.runs if r.variant == variant)

    def cpu_seconds(self, variant: str) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs if r.variant == variant)

    def has(self, variant: str) -> bool:
        return any(r.variant == variant for r in self.runs)


@dataclass(frozen=True)
class ReportRun:
    milliseconds: float
    query_milliseconds: float
    first_call_milliseconds: float
    details: dict[str, Any]


def more_orders(db: Path, out: Path, share: float, seed: int, as_of: datetime = AS_OF) -> tuple[int, set[str]]:
    """`share` times the store's orders again, as new orders placed in the NEW_ORDER_DAYS after `as_of` by customers
    drawn at random from the store (under their own name and email), 2 % cancelled; deterministic by seed. Returns
    the number of orders and the customers who placed them."""
    conn = sqlite3.connect(db)
    try:
        people = conn.execute("SELECT contact_id, email, name FROM customers ORDER BY contact_id").fetchall()
        count = round(conn.execute("SELECT count(*) FROM orders").fetchone()[0] * share)
    finally:
        conn.close()
    rng = random.Random(seed)
    buyers: set[str] = set()
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(HEADER)
        for number in range(1, count + 1):
            contact, email, name = rng.choice(people)
            at = as_of + timedelta(minutes=rng.randrange(NEW_ORDER_DAYS * 24 * 60))
            cents = max(100, round(rng.lognormvariate(0.0, 0.7) * 20_000))
            status = "cancelled" if rng.random() < 0.02 else "completed"
            writer.writerow((contact, f"N{number:08d}", at.strftime("%Y-%m-%dT%H:%M:00Z"),
                             f"{cents // 100}.{cents % 100:02d}", email or "", name or "", status))
            buyers.add(contact)
    return count, buyers


def import_overhead(evaluated: Path, orders_csv: Path, orders: int, buyers: set[str], work: Path, pairs: int,
                    cleared_runs: int) -> ImportOverhead:
    """`python -m worker import-orders orders_csv` on fresh copies of the evaluated store, `pairs` times with its
    measured events and as often with them deleted (the pairs alternate which goes first, so a machine getting
    busier hurts both alike), then `cleared_runs` times with the events kept but their windows cleared."""
    measured, before = _measured(evaluated, buyers)
    copy = work / "outcome-import.db"
    runs, after = [], None
    order = [(MEASURED, NO_EVENTS) if pair % 2 == 0 else (NO_EVENTS, MEASURED) for pair in range(pairs)]
    for variant in [v for both in order for v in both] + [NO_WINDOWS] * cleared_runs:
        _prepared_copy(evaluated, copy, variant)
        seconds, cpu = import_into(orders_csv, copy)
        runs.append(ImportRun(variant, seconds, cpu))
        if variant == MEASURED and after is None:
            after = _measured(copy, buyers)[1]
        _remove(copy)
    return ImportOverhead(runs, orders, len(buyers), measured, before, after or 0)


def report_copy(evaluated: Path, to: Path, rules: Rules, as_of: datetime, seed: int) -> tuple[Rules, int]:
    """A copy of the evaluated store with one event of REPORT_CAMPAIGN per customer, occurred at a random moment of
    the year before `as_of`, REPORT_HOLDOUT % held out by the product's own draw, delivered otherwise, their
    outcomes measured by the store's own refresh; and the rules with that campaign. Returns the rules and the number
    of events."""
    campaign = rules.campaigns["win-back"].model_copy(update={"holdout_percent": REPORT_HOLDOUT, "outcome_days": 30})
    rules = rules.model_copy(update={"campaigns": {**rules.campaigns, REPORT_CAMPAIGN: campaign}})
    snapshot(evaluated, to)
    rng = random.Random(seed)
    conn = sqlite3.connect(to)
    try:
        contacts = [r[0] for r in conn.execute("SELECT contact_id FROM customers ORDER BY contact_id")]
        rows = []
        for contact in contacts:
            occurred = as_of - timedelta(minutes=rng.randrange(REPORT_HISTORY_DAYS * 24 * 60))
            until = local_midnight(local_date(occurred, rules.tz) + timedelta(days=campaign.outcome_days + 1), rules.tz)
            held = draws_held_out(rules.holdout_salt, REPORT_CAMPAIGN, contact, REPORT_HOLDOUT)
            rows.append((f"evt_bench_{contact}", contact, REPORT_CAMPAIGN, campaign.webhook, "segment.entered",
                         to_ms(occurred), to_ms(occurred), "{}", HELD_OUT if held else DELIVERED,
                         None if held else to_ms(occurred), to_ms(until)))
        with conn:
            conn.executemany(
                "INSERT INTO events (id, contact_id, campaign, webhook, type, occurred_at, created_at, body, status, "
                "delivered_at, outcome_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            _fill_touched(conn, contacts)
            conn.execute(_REFRESH_OUTCOMES)
    finally:
        conn.close()
    return rules, len(rows)


def report_timing(db: Path, rules: Rules, as_of: datetime, repeats: int) -> ReportRun:
    """`campaign_report` for REPORT_CAMPAIGN: a first call (statsmodels imported, pages read), then `repeats` warm
    calls (median), and the store's GROUP BY alone as often (median)."""
    store = SQLiteStore(db)
    try:
        started = time.perf_counter()
        report = campaign_report(store, rules, REPORT_CAMPAIGN, as_of)
        first = (time.perf_counter() - started) * 1000
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            report = campaign_report(store, rules, REPORT_CAMPAIGN, as_of)
            runs.append((time.perf_counter() - started) * 1000)
        queries, cells = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            cells = store.campaign_outcomes(REPORT_CAMPAIGN, as_of)
            queries.append((time.perf_counter() - started) * 1000)
    finally:
        store.close()
    total = report.total
    details = {
        "events": sum(c.events for c in cells), "held_out_events": sum(c.events for c in cells if c.held_out),
        "groups": len(cells), "months": len(report.months), "verdict": total.comparison.verdict,
        "explanation": total.comparison.explanation,
        "sent": {"closed": total.sent.customers, "converted": total.sent.converted, "still_open": total.open_sent},
        "held_out": {"closed": total.held_out.customers, "converted": total.held_out.converted,
                     "still_open": total.open_held_out},
        "month_verdicts": {p.label: p.comparison.verdict for p in report.months},
        "runs_ms": runs, "query_runs_ms": queries, "first_call_ms": first,
    }
    return ReportRun(statistics.median(runs), statistics.median(queries), first, details)


def _measured(db: Path, buyers: set[str]) -> tuple[int, int]:
    """(measured events of `buyers`, orders counted as outcomes over all events) in a store."""
    conn = sqlite3.connect(db)
    try:
        per_contact = conn.execute("SELECT contact_id, count(*) FROM events WHERE outcome_until IS NOT NULL "
                                   "GROUP BY contact_id").fetchall()
        outcome_orders = conn.execute("SELECT coalesce(sum(outcome_orders), 0) FROM events").fetchone()[0]
    finally:
        conn.close()
    return sum(n for contact, n in per_contact if contact in buyers), outcome_orders


def _prepared_copy(evaluated: Path, to: Path, variant: str) -> None:
    snapshot(evaluated, to)
    if variant == MEASURED:
        return
    conn = sqlite3.connect(to)
    with conn:
        if variant == NO_EVENTS:
            conn.execute("DELETE FROM events")
        else:
            conn.execute("UPDATE events SET outcome_until = NULL")
    conn.close()


def _remove(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
