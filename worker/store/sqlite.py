"""SQLite store: one WAL-mode file holding orders, aggregates, state, transitions, the outbox and leases.

Over 500 lines because it is one whole implementation of the Store contract (base.py); its SQL for one noun sits
next to the SQL for the others it joins, and splitting it by noun would scatter transactions across files.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rules import CustomerFacts
from rules.schema import status_key
from worker.store.base import (
    BULK_REPLAY_LIMIT,
    DEFAULT_EXCLUDED_JSON,
    EVENT_STATUSES,
    EXCLUDED_STATUSES_KEY,
    HELD_OUT,
    NO_ORDER_MS,
    ORDER_DAYS_TIMEZONE_KEY,
    PENDING,
    Attempt,
    CustomerOrder,
    CustomerRecord,
    Evaluation,
    EventRecord,
    IngestResult,
    Order,
    OutcomeCell,
    PurchaseRow,
    SaveResult,
    SegmentSummary,
    Store,
    StoreBusy,
    StoreError,
    Superseded,
    TransitionRecord,
    shard_of,
)
from worker.store.times import from_ms, local_day_function, to_ms

# 2: customers.segment_since, events.superseded_by, events.recheck and events.ordered. 3: customers.last_order_key
# and the indexes of the sorted customer lists and of a customer's events (_migrate adds them to older files).
SCHEMA_VERSION = 5
WAL_AUTOCHECKPOINT_PAGES = 25_000  # ~100 MB of WAL at the most between checkpoints
# How long a write waits for another writer's transaction to end. Background writes (evaluation, the outbox,
# leases) wait long: giving up after a send means sending again. Order writes (POST /api/orders, an import's
# batches) give up soon: the API answers 503 with Retry-After, and an import resumes when it is run again. No
# transaction of ours holds the lock for more than a fraction of a second, so neither wait is reached normally.
BUSY_WAIT_SECONDS = 30
ORDER_WRITE_WAIT_SECONDS = 2
LOCK_RETRY_SECONDS = 0.005
ATTEMPT_OUTCOMES = ("delivered", "http_error", "network_error")
_CHUNK = 500  # ids per IN (...) list: far below SQLite's variable limit on every version we meet

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_ref TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    order_at INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    status TEXT,
    cancelled INTEGER NOT NULL,
    email TEXT,
    name TEXT,
    received_at INTEGER NOT NULL,
    order_day INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_by_contact ON orders (contact_id, order_at);
CREATE TABLE IF NOT EXISTS customers (
    contact_id TEXT PRIMARY KEY,
    name TEXT,
    email TEXT,
    order_count INTEGER NOT NULL DEFAULT 0,
    total_cents INTEGER NOT NULL DEFAULT 0,
    first_order_at INTEGER,
    last_order_at INTEGER,
    last_order_ref TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    dirty INTEGER NOT NULL DEFAULT 1,
    segment TEXT,
    purchase_frequency TEXT,
    next_check_at INTEGER,
    evaluated_at INTEGER,
    segment_since INTEGER,
    purchase_days INTEGER NOT NULL DEFAULT 0,
    first_day_cents INTEGER NOT NULL DEFAULT 0,
    holdouts TEXT
);
CREATE INDEX IF NOT EXISTS customers_dirty ON customers (contact_id) WHERE dirty = 1;
CREATE INDEX IF NOT EXISTS customers_due ON customers (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS customers_by_segment ON customers (segment, contact_id);
CREATE INDEX IF NOT EXISTS customers_by_frequency ON customers (purchase_frequency, contact_id);
CREATE INDEX IF NOT EXISTS customers_by_segment_frequency ON customers (segment, purchase_frequency);
CREATE INDEX IF NOT EXISTS customers_by_spend ON customers (total_cents, contact_id);
CREATE INDEX IF NOT EXISTS customers_by_segment_spend ON customers (segment, total_cents, contact_id);
CREATE TABLE IF NOT EXISTS transitions (
    id TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL,
    from_segment TEXT,
    to_segment TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    detected_at INTEGER NOT NULL,
    rules_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_by_contact ON transitions (contact_id, occurred_at);
CREATE INDEX IF NOT EXISTS transitions_by_day ON transitions (occurred_at, to_segment);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    contact_id TEXT NOT NULL,
    campaign TEXT NOT NULL,
    webhook TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    claimed_by TEXT,
    claimed_until INTEGER,
    last_error TEXT,
    last_status INTEGER,
    delivered_at INTEGER,
    superseded_by TEXT,
    recheck INTEGER NOT NULL DEFAULT 1,
    ordered INTEGER NOT NULL DEFAULT 1,
    outcome_until INTEGER,
    outcome_orders INTEGER NOT NULL DEFAULT 0,
    outcome_cents INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_due ON events (next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS events_by_status ON events (status, seq);
CREATE INDEX IF NOT EXISTS events_pending_by_contact ON events (contact_id, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS events_by_contact ON events (contact_id, seq);
CREATE TABLE IF NOT EXISTS attempts (
    event_id TEXT NOT NULL,
    attempted_at INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_event ON attempts (event_id, attempted_at);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);
"""
# A customer without orders has no last order. Lists sorted by last order go by last_order_key instead: the last
# order, or NO_ORDER_MS without one, so that both backends share one total order. It is a virtual column (computed
# when read, stored only in its indexes) because SQLite seeks a row value such as (last_order_key, contact_id) > (?, ?)
# in an index on columns, not in one on an expression. Added after the tables, for stores made before it.
_LAST_ORDER_KEY = (f"ALTER TABLE customers ADD COLUMN last_order_key INTEGER GENERATED ALWAYS AS "
                   f"(coalesce(last_order_at, {NO_ORDER_MS})) VIRTUAL")
_LAST_ORDER_INDEXES = (
    "CREATE INDEX IF NOT EXISTS customers_by_last_order ON customers (last_order_key, contact_id)",
    "CREATE INDEX IF NOT EXISTS customers_by_segment_last_order ON customers (segment, last_order_key, contact_id)",
)
# A campaign's outcome report reads this index alone (it covers every column the report sums). Made after the
# migrations, since a file from before version 5 gains the outcome columns there.
_CAMPAIGN_INDEX = ("CREATE INDEX IF NOT EXISTS events_by_campaign ON events "
                   "(campaign, occurred_at, status, outcome_until, outcome_orders, outcome_cents)")
_SORT_COLUMNS = {"total_spend": "total_cents", "last_order": "last_order_key"}

_CUSTOMER_COLUMNS = ("contact_id, name, email, order_count, total_cents, first_order_at, last_order_at, "
                     "last_order_ref, version, segment, purchase_frequency, next_check_at, evaluated_at, "
                     "segment_since, dirty, purchase_days, first_day_cents, holdouts")
_EVENT_COLUMNS = ("id, contact_id, campaign, webhook, type, occurred_at, created_at, body, status, attempts, "
                  "next_attempt_at, last_error, last_status, delivered_at, superseded_by, recheck, ordered, "
                  "outcome_orders, outcome_cents, outcome_until")
# Version 1 stores gain the columns of version 2; a customer's segment_since comes from its last transition, or
# for a customer recorded silently (the baseline) from the store's first run.
# Version 4 (the churn and value model's aggregates): each order's local day, each customer's purchase days and
# first-day spend. The days are counted in UTC here; the first evaluation counts them again in the rules' timezone.
_MIGRATE_TO_4 = (
    ("orders", "order_day", "ALTER TABLE orders ADD COLUMN order_day INTEGER"),
    ("customers", "purchase_days", "ALTER TABLE customers ADD COLUMN purchase_days INTEGER NOT NULL DEFAULT 0"),
    ("customers", "first_day_cents", "ALTER TABLE customers ADD COLUMN first_day_cents INTEGER NOT NULL DEFAULT 0"),
)
# Version 5 (campaign outcomes): each customer's holdout groups, each event's outcome window and what it measured.
_MIGRATE_TO_5 = (
    ("customers", "holdouts", "ALTER TABLE customers ADD COLUMN holdouts TEXT"),
    ("events", "outcome_until", "ALTER TABLE events ADD COLUMN outcome_until INTEGER"),
    ("events", "outcome_orders", "ALTER TABLE events ADD COLUMN outcome_orders INTEGER NOT NULL DEFAULT 0"),
    ("events", "outcome_cents", "ALTER TABLE events ADD COLUMN outcome_cents INTEGER NOT NULL DEFAULT 0"),
)
_MIGRATE_TO_2 = (
    "ALTER TABLE customers ADD COLUMN segment_since INTEGER",
    "ALTER TABLE events ADD COLUMN superseded_by TEXT",
    "ALTER TABLE events ADD COLUMN recheck INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE events ADD COLUMN ordered INTEGER NOT NULL DEFAULT 1",
    "UPDATE customers SET segment_since = coalesce((SELECT max(occurred_at) FROM transitions t "
    "WHERE t.contact_id = customers.contact_id), ?, evaluated_at) WHERE segment IS NOT NULL",
)

# Aggregates for the touched customers, recomputed from their (indexed) orders: exact under updates,
# cancellations and orders that move between customers, at the cost of reading ~16 orders per customer.
_REFRESH_AGGREGATES = """
INSERT INTO customers (contact_id, name, email, order_count, total_cents, first_order_at, last_order_at,
                       last_order_ref, version, dirty, purchase_days, first_day_cents)
SELECT t.contact_id,
       (SELECT name FROM orders n WHERE n.contact_id = t.contact_id AND n.name IS NOT NULL
         ORDER BY n.order_at DESC, n.order_ref DESC LIMIT 1),
       (SELECT email FROM orders e WHERE e.contact_id = t.contact_id AND e.email IS NOT NULL
         ORDER BY e.order_at DESC, e.order_ref DESC LIMIT 1),
       count(o.order_ref), coalesce(sum(o.total_cents), 0), min(o.order_at), max(o.order_at),
       (SELECT order_ref FROM orders l WHERE l.contact_id = t.contact_id AND l.cancelled = 0
         ORDER BY l.order_at DESC, l.order_ref DESC LIMIT 1),
       1, 1, count(DISTINCT o.order_day),
       coalesce((SELECT sum(f.total_cents) FROM orders f WHERE f.contact_id = t.contact_id AND f.cancelled = 0
                 AND f.order_day = (SELECT g.order_day FROM orders g WHERE g.contact_id = t.contact_id
                                    AND g.cancelled = 0 ORDER BY g.order_at LIMIT 1)), 0)
FROM temp.touched t LEFT JOIN orders o ON o.contact_id = t.contact_id AND o.cancelled = 0
WHERE 1
GROUP BY t.contact_id
ON CONFLICT (contact_id) DO UPDATE SET
    name = excluded.name, email = excluded.email, order_count = excluded.order_count,
    total_cents = excluded.total_cents, first_order_at = excluded.first_order_at,
    last_order_at = excluded.last_order_at, last_order_ref = excluded.last_order_ref,
    purchase_days = excluded.purchase_days, first_day_cents = excluded.first_day_cents,
    version = customers.version + 1, dirty = 1
"""

# A customer's purchase days as they stood at a moment: the counted orders dated no later than it, per local day.
_PURCHASES_UNTIL = """
WITH days AS (
    SELECT contact_id, order_day, sum(total_cents) AS cents FROM orders
    WHERE cancelled = 0 AND order_at <= ? GROUP BY contact_id, order_day
), firsts AS (
    SELECT contact_id, min(order_day) AS first_day FROM days GROUP BY contact_id
)
SELECT d.contact_id, c.segment, f.first_day, max(d.order_day), count(*), sum(d.cents),
       sum(CASE WHEN d.order_day = f.first_day THEN d.cents ELSE 0 END)
FROM days d JOIN firsts f ON f.contact_id = d.contact_id LEFT JOIN customers c ON c.contact_id = d.contact_id
GROUP BY d.contact_id ORDER BY d.contact_id
"""

# The outcome of each measured event of the touched customers that the changed orders can reach (a window open
# somewhere between the earliest and the latest order time that changed: temp.touched's since and until): their
# counted orders after the event and before the end of its window, from the orders themselves (exact under late
# orders, cancellations and corrections). Only the rows whose figures change are written; customers without
# measured events do no work (the index by contact finds none).
_REFRESH_OUTCOMES = """
UPDATE events SET outcome_orders = measured.orders, outcome_cents = measured.cents
FROM (
    SELECT e.id, count(o.order_ref) AS orders, coalesce(sum(o.total_cents), 0) AS cents
    FROM temp.touched t  -- CROSS JOIN: the touched customers drive (SQLite keeps no statistics of a temp table)
    CROSS JOIN events e INDEXED BY events_by_contact ON e.contact_id = t.contact_id
    LEFT JOIN orders o ON o.contact_id = e.contact_id AND o.cancelled = 0
         AND o.order_at > e.occurred_at AND o.order_at < e.outcome_until
    WHERE e.outcome_until IS NOT NULL AND e.outcome_until > t.since AND e.occurred_at < t.until
    GROUP BY e.id
) AS measured
WHERE events.id = measured.id AND (events.outcome_orders != measured.orders OR events.outcome_cents != measured.cents)
"""


class SQLiteStore(Store):
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Every thread's connection, so that close() frees them all, not only the closing thread's.
        self._opened: set[sqlite3.Connection] = set()
        self._opened_lock = threading.Lock()
        self._migrate()

    # connections -------------------------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads mid-transaction.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread off only so that close() may close it from another thread; it is used by this one.
            conn = sqlite3.connect(self.path, timeout=BUSY_WAIT_SECONDS, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -65536")
            # Checkpoints run from the scheduler's maintenance job (checkpoint()), not inside an evaluation's
            # COMMIT: at the default 1,000 pages a daily tick paid ~250 ms for one. This is only the ceiling.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.create_function("shard_of", 1, shard_of, deterministic=True)
            with self._opened_lock:
                self._opened.add(conn)
            self._local.conn = conn
        return conn

    def _write(self) -> _Transaction:
        return _Transaction(self._db)

    def _migrate(self) -> None:
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if "last_order_key" not in {row[1] for row in db.execute("PRAGMA table_xinfo(customers)")}:
                db.execute(_LAST_ORDER_KEY)
            for statement in _LAST_ORDER_INDEXES:
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                # a new store's orders are counted under the defaults: applying them later recounts nothing
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                               [(ORDER_DAYS_TIMEZONE_KEY, "UTC"), (EXCLUDED_STATUSES_KEY, DEFAULT_EXCLUDED_JSON)])
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema version {row[0]}, newer than this program "
                                   f"({SCHEMA_VERSION}); upgrade segment-worker")
            elif int(row[0]) < SCHEMA_VERSION:
                if int(row[0]) == 1:
                    first_run = db.execute("SELECT value FROM meta WHERE key = 'first_run_at'").fetchone()
                    first_run_ms = to_ms(datetime.fromisoformat(first_run[0])) if first_run and first_run[0] else None
                    for statement in _MIGRATE_TO_2:
                        db.execute(statement, (first_run_ms,) if "?" in statement else ())
                # version 3's column and indexes were added above, as for every store that lacks them
                if int(row[0]) < 4:
                    self._migrate_to_4(db)
                _add_columns(db, _MIGRATE_TO_5)
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute(_CAMPAIGN_INDEX)

    @staticmethod
    def _migrate_to_4(db: sqlite3.Connection) -> None:
        _add_columns(db, _MIGRATE_TO_4)
        db.create_function("local_day", 1, local_day_function("UTC"), deterministic=True)
        db.execute("UPDATE orders SET order_day = local_day(order_at)")
        db.execute("INSERT INTO meta (key, value) VALUES (?, 'UTC') ON CONFLICT (key) DO UPDATE SET value = 'UTC'",
                   (ORDER_DAYS_TIMEZONE_KEY,))
        _fill_touched(db, ())
        db.execute("INSERT INTO temp.touched (contact_id) SELECT DISTINCT contact_id FROM orders")
        # recounted as unchanged: the migration changes no segment, so nobody is made due by it
        db.execute(_REFRESH_AGGREGATES.replace("dirty = 1", "dirty = customers.dirty")
                   .replace("version = customers.version + 1", "version = customers.version"))

    def checkpoint(self) -> None:
        """Copy the write-ahead log back into the database without blocking readers or writers."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def close(self) -> None:
        """Close every thread's connection (a later use opens a new one). A thread in the middle of a request gets
        an error: close only when nothing else uses the store (at shutdown)."""
        with self._opened_lock:
            opened, self._opened = self._opened, set()
        for conn in opened:
            conn.close()
        self._local = threading.local()

    # ingest ------------------------------------------------------------------------------------------------

    def upsert_orders(self, orders: Sequence[Order], now: datetime) -> IngestResult:
        latest: dict[str, Order] = {}
        for order in orders:
            latest[order.order_ref] = order
        received = to_ms(now)
        inserted = updated = unchanged = 0
        touched: set[str] = set()
        spans: dict[str, tuple[int, int]] = {}  # per customer: the earliest and latest order time that changed
        with _Transaction(self._db, ORDER_WRITE_WAIT_SECONDS) as db:
            excluded = self.excluded_statuses()
            day_of = local_day_function(self.order_days_timezone())
            existing = self._existing_orders(db, list(latest))
            rows = []
            for ref, order in latest.items():
                row = (ref, order.contact_id, (at := to_ms(order.order_at)), order.total_cents, order.status,
                       int(order.excluded(excluded)), order.email, order.name, day_of(at))
                before = existing.get(ref)
                if before == row:
                    unchanged += 1
                    continue
                if before is None:
                    inserted += 1
                else:
                    updated += 1
                    touched.add(before[1])
                    _widen(spans, before[1], before[2])
                touched.add(order.contact_id)
                _widen(spans, order.contact_id, at)
                rows.append(row + (received,))
            db.executemany(
                "INSERT INTO orders (order_ref, contact_id, order_at, total_cents, status, cancelled, email, name, "
                "order_day, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_ref) DO UPDATE SET "
                "contact_id = excluded.contact_id, order_at = excluded.order_at, total_cents = excluded.total_cents, "
                "status = excluded.status, cancelled = excluded.cancelled, email = excluded.email, "
                "name = excluded.name, order_day = excluded.order_day, received_at = excluded.received_at",
                rows,
            )
            if touched:
                self._refresh_aggregates(db, touched, spans)
        return IngestResult(inserted, updated, unchanged, frozenset(touched))

    @staticmethod
    def _refresh_aggregates(db: sqlite3.Connection, contact_ids: set[str],
                            spans: Mapping[str, tuple[int, int]] | None = None) -> None:
        """The touched customers' aggregates, and the outcomes of their campaign events, from their orders."""
        _fill_touched(db, contact_ids, spans)
        db.execute(_REFRESH_AGGREGATES)
        db.execute(_REFRESH_OUTCOMES)

    def _recount_statuses(self, statuses: frozenset[str]) -> int:
        # status_key in SQL would need casefold(); a Python function keeps one definition of "same status"
        return self._recount_orders("cancelled", "status", lambda status: int(status is not None and
                                                                              status_key(status) in statuses))

    def _recount_days(self, timezone_name: str) -> int:
        return self._recount_orders("order_day", "order_at", local_day_function(timezone_name))

    def _recount_orders(self, column: str, source: str, derive: Callable[[Any], Any]) -> int:
        """Set every order's `column` to derive(`source`) where it differs, and refresh the aggregates (and
        outcomes) of the customers whose orders changed; returns how many customers that was."""
        with self._write() as db:
            db.create_function("derived", 1, derive, deterministic=True)
            differs = f"{column} IS NOT derived({source})"
            touched = {r[0] for r in db.execute(f"SELECT DISTINCT contact_id FROM orders WHERE {differs}")}
            if touched:
                db.execute(f"UPDATE orders SET {column} = derived({source}) WHERE {differs}")
                self._refresh_aggregates(db, touched)
        return len(touched)

    @staticmethod
    def _existing_orders(db: sqlite3.Connection, refs: list[str]) -> dict[str, tuple]:
        return {row[0]: tuple(row) for row in _rows_in(
            db, "SELECT order_ref, contact_id, order_at, total_cents, status, cancelled, email, name, order_day "
                "FROM orders WHERE order_ref IN ({marks})", refs)}

    # evaluation --------------------------------------------------------------------------------------------

    def customers_to_evaluate(self, as_of: datetime, everyone: bool, batch_size: int,
                              shards: frozenset[int] | None = None) -> Iterator[list[CustomerRecord]]:
        db = self._db
        if everyone:
            ids = [r[0] for r in db.execute("SELECT contact_id FROM customers ORDER BY contact_id")]
        else:
            due = {r[0] for r in db.execute("SELECT contact_id FROM customers WHERE dirty = 1")}
            due.update(r[0] for r in db.execute(
                "SELECT contact_id FROM customers WHERE next_check_at <= ?", (to_ms(as_of),)))
            ids = sorted(due)
        if shards is not None:
            ids = [contact_id for contact_id in ids if shard_of(contact_id) in shards]
        for start in range(0, len(ids), batch_size):
            yield self.customers_by_id(ids[start:start + batch_size])

    def customers_by_id(self, contact_ids: Sequence[str]) -> list[CustomerRecord]:
        return [_customer(row) for row in _rows_in(
            self._db, f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE contact_id IN ({{marks}}) ORDER BY contact_id",
            contact_ids)]

    def save_evaluations(self, evaluations: Sequence[Evaluation]) -> SaveResult:
        if not evaluations:
            return SaveResult(0, 0, 0, 0)
        with self._write() as db:
            current = {row[0]: (row[1], row[2], row[3]) for row in _rows_in(
                db, "SELECT contact_id, version, segment, purchase_frequency FROM customers "
                    "WHERE contact_id IN ({marks})", [e.contact_id for e in evaluations])}
            fresh = [e for e in evaluations if current.get(e.contact_id, ())[:2] == (e.seen_version, e.seen_segment)]
            moved = [e for e in fresh if current[e.contact_id][1:] != (e.segment, e.purchase_frequency)]
            # Rows whose segment and frequency stay put leave the segment and frequency indexes untouched.
            db.executemany(
                "UPDATE customers SET segment = ?, purchase_frequency = ?, next_check_at = ?, evaluated_at = ?, "
                "segment_since = coalesce(?, segment_since), dirty = 0 WHERE contact_id = ?",
                [(e.segment, e.purchase_frequency, to_ms(e.next_check_at), to_ms(e.evaluated_at),
                  to_ms(e.segment_since), e.contact_id) for e in moved],
            )
            db.executemany(
                "UPDATE customers SET next_check_at = ?, evaluated_at = ?, dirty = 0 WHERE contact_id = ?",
                [(to_ms(e.next_check_at), to_ms(e.evaluated_at), e.contact_id)
                 for e in fresh if current[e.contact_id][1:] == (e.segment, e.purchase_frequency)],
            )
            db.executemany("UPDATE customers SET holdouts = ? WHERE contact_id = ?",
                           [(json.dumps(e.holdouts, sort_keys=True), e.contact_id)
                            for e in fresh if e.holdouts is not None])
            transitions = [e.transition for e in fresh if e.transition is not None]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO transitions (id, contact_id, from_segment, to_segment, occurred_at, "
                "detected_at, rules_version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(t.id, t.contact_id, t.from_segment, t.to_segment, to_ms(t.occurred_at), to_ms(t.detected_at),
                  t.rules_version) for t in transitions],
            )
            transitions_added = db.total_changes - before
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO events (id, contact_id, campaign, webhook, type, occurred_at, created_at, "
                "body, next_attempt_at, ordered, status, outcome_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(ev.id, ev.contact_id, ev.campaign, ev.webhook, ev.type, to_ms(ev.occurred_at),
                  to_ms(e.evaluated_at), ev.body, None if ev.held_out else to_ms(e.evaluated_at), int(ev.ordered),
                  HELD_OUT if ev.held_out else PENDING, to_ms(ev.outcome_until))
                 for e in fresh for ev in e.events],
            )
            events_added = db.total_changes - before
            measured = {ev.contact_id for e in fresh for ev in e.events if ev.outcome_until is not None}
            if events_added and measured:  # orders already placed after the move count at once
                _fill_touched(db, measured)
                db.execute(_REFRESH_OUTCOMES)
        return SaveResult(len(fresh), transitions_added, events_added, len(evaluations) - len(fresh))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = excluded.value", (key, value))

    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        with self._write() as db:  # BEGIN IMMEDIATE: no other writer between the read and the write
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            value = change(None if row is None else row[0])
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = excluded.value", (key, value))
        return value

    # reads -------------------------------------------------------------------------------------------------

    def get_customer(self, contact_id: str) -> CustomerRecord | None:
        row = self._db.execute(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE contact_id = ?",
                               (contact_id,)).fetchone()
        return None if row is None else _customer(row)

    def list_customers(self, segment: str | None, purchase_frequency: str | None, after: str | None,
                       limit: int) -> list[CustomerRecord]:
        clauses, params = self._filters(segment, purchase_frequency)
        if after is not None:
            clauses.append("contact_id > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers {where} ORDER BY contact_id LIMIT ?", (*params, limit))
        return [_customer(r) for r in rows]

    def list_customers_sorted(self, segment: str | None, purchase_frequency: str | None, order: CustomerOrder,
                              after: tuple[int, str] | None, limit: int) -> list[CustomerRecord]:
        # Everyone or a segment: a range of one index, whatever the page. A frequency alone is read from its own
        # index and sorted (O(customers of the band) a page): one index per band and sort would make every import
        # and evaluation write more, for a filter rarer than the segment's.
        clauses, params = self._filters(segment, purchase_frequency)
        direction, beyond = ("DESC", "<") if order.descending else ("ASC", ">")
        column = _SORT_COLUMNS.get(order.key)
        if column is None:  # contact_id order
            if after is not None:
                clauses.append(f"contact_id {beyond} ?")
                params.append(after[1])
            order_by = f"contact_id {direction}"
        else:
            if after is not None:
                # a row value: ties on the sort value go on by contact_id, in the index's own order
                clauses.append(f"({column}, contact_id) {beyond} (?, ?)")
                params += [after[0], after[1]]
            order_by = f"{column} {direction}, contact_id {direction}"
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers {where} ORDER BY {order_by} LIMIT ?", (*params, limit))
        return [_customer(r) for r in rows]

    def count_customers_where(self, segment: str | None, purchase_frequency: str | None) -> int:
        # Answered from an index alone: (segment, purchase_frequency), or the frequency or segment index.
        clauses, params = self._filters(segment, purchase_frequency)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._db.execute(f"SELECT count(*) FROM customers {where}", params).fetchone()[0]

    @staticmethod
    def _filters(segment: str | None, purchase_frequency: str | None) -> tuple[list[str], list[object]]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (("segment", segment), ("purchase_frequency", purchase_frequency)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params

    def iter_customers(self, batch_size: int = 1000) -> Iterator[list[CustomerRecord]]:
        after = ""
        while True:
            batch = [_customer(r) for r in self._db.execute(
                f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE contact_id > ? ORDER BY contact_id LIMIT ?",
                (after, batch_size))]
            if not batch:
                return
            yield batch
            after = batch[-1].contact_id

    def purchase_rows(self, until: datetime | None = None, batch_size: int = 5000) -> Iterator[list[PurchaseRow]]:
        day_of = local_day_function(self.order_days_timezone())
        if until is None:
            rows: Iterator[tuple] = self._db.execute(
                "SELECT contact_id, segment, first_order_at, last_order_at, purchase_days, total_cents, "
                "first_day_cents FROM customers WHERE order_count > 0 ORDER BY contact_id")
            rows = ((c, s, day_of(f), day_of(la), d, t, fd) for c, s, f, la, d, t, fd in rows)
        else:
            rows = self._db.execute(_PURCHASES_UNTIL, (to_ms(until),))
        batch: list[PurchaseRow] = []
        for row in rows:
            batch.append(PurchaseRow(*row))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def segment_summary(self) -> list[SegmentSummary]:
        rows = self._db.execute(
            "SELECT segment, count(*), coalesce(sum(total_cents), 0) FROM customers "
            "WHERE segment IS NOT NULL GROUP BY segment ORDER BY segment")
        return [SegmentSummary(*row) for row in rows]

    def count_customers(self) -> int:
        return self._db.execute("SELECT count(*) FROM customers").fetchone()[0]

    def transitions_for(self, contact_id: str, limit: int = 100) -> list[TransitionRecord]:
        rows = self._db.execute(
            "SELECT id, contact_id, from_segment, to_segment, occurred_at, detected_at, rules_version "
            "FROM transitions WHERE contact_id = ? ORDER BY occurred_at, detected_at LIMIT ?", (contact_id, limit))
        return [TransitionRecord(r[0], r[1], r[2], r[3], from_ms(r[4]), from_ms(r[5]), r[6]) for r in rows]

    def transitions_per_day(self, since: datetime) -> list[tuple[str, str, int]]:
        # Read from the (occurred_at, to_segment) index alone: 90 days of transitions never touch the table.
        rows = self._db.execute(
            "SELECT strftime('%Y-%m-%d', occurred_at / 1000, 'unixepoch') AS day, to_segment, count(*) "
            "FROM transitions WHERE occurred_at >= ? GROUP BY day, to_segment ORDER BY day, to_segment",
            (to_ms(since),))
        return [(day, segment, count) for day, segment, count in rows]

    def search_customers(self, text: str, limit: int) -> list[CustomerRecord]:
        if text.isascii():
            # LIKE ignores case for ASCII letters only; that covers every ASCII search text exactly.
            literal = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._db.execute(
                f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE contact_id LIKE ? ESCAPE '\\' "
                "OR email LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\' ORDER BY contact_id LIMIT ?",
                (f"{literal}%", f"%{literal}%", f"%{literal}%", limit))
            return [_customer(r) for r in rows]
        # Beyond ASCII ('Émile' for 'émile') compare casefolded text in Python: a full scan, about 5x slower.
        db = self._db
        db.create_function("folded_starts", 2, _folded_starts, deterministic=True)
        db.create_function("folded_contains", 2, _folded_contains, deterministic=True)
        needle = text.casefold()
        rows = db.execute(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE folded_starts(contact_id, ?) "
            "OR folded_contains(email, ?) OR folded_contains(name, ?) ORDER BY contact_id LIMIT ?",
            (needle, needle, needle, limit))
        return [_customer(r) for r in rows]

    # outbox ------------------------------------------------------------------------------------------------

    def claim_due_events(self, now: datetime, limit: int, holder: str, claim_seconds: float,
                         shards: frozenset[int] | None = None) -> list[EventRecord]:
        now_ms = to_ms(now)
        until = now_ms + int(claim_seconds * 1000)
        # of the leased shards only: shard_of is this connection's own SQL function (a store opened by sqlite3's
        # shell lacks it, and needs it not: it never claims)
        in_shards = "" if shards is None else f"AND shard_of(contact_id) IN ({', '.join(map(str, sorted(shards)))}) "
        with self._write() as db:
            # An event waits while an earlier event of the same customer has failed and is still pending: its retry
            # can come due after the later event, and the customer must hear welcome before vip all the same.
            ids = [r[0] for r in db.execute(
                # Without the hint SQLite may pick events_by_status and sort every pending event per claim.
                "SELECT id FROM events INDEXED BY events_due WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND (claimed_until IS NULL OR claimed_until <= ?) AND (ordered = 0 OR NOT EXISTS (SELECT 1 FROM "
                "events earlier WHERE earlier.contact_id = events.contact_id AND earlier.status = 'pending' "
                "AND earlier.seq < events.seq AND earlier.attempts > 0 AND earlier.ordered = 1)) "
                f"{in_shards}ORDER BY next_attempt_at, seq LIMIT ?",
                (now_ms, now_ms, limit))]
            claimed = []
            for event_id in ids:
                changed = db.execute(
                    "UPDATE events SET claimed_by = ?, claimed_until = ? WHERE id = ? AND status = 'pending' "
                    "AND (claimed_until IS NULL OR claimed_until <= ?)", (holder, until, event_id, now_ms)).rowcount
                if changed == 1:
                    claimed.append(event_id)
            records = self._events_by_id(db, claimed)
        return sorted(records, key=lambda e: claimed.index(e.id))

    def record_delivered(self, event_ids: Sequence[str], attempt_at: datetime, status: int, duration_ms: int) -> None:
        self.record_deliveries([(event_ids, status, duration_ms)], attempt_at)

    def record_deliveries(self, deliveries: Sequence[tuple[Sequence[str], int, int]], attempt_at: datetime) -> None:
        at = to_ms(attempt_at)
        rows = [(event_id, status, duration_ms) for ids, status, duration_ms in deliveries for event_id in ids]
        with self._write() as db:
            db.executemany(
                "UPDATE events SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                "last_status = ?, last_error = NULL, next_attempt_at = NULL, claimed_by = NULL, "
                "claimed_until = NULL WHERE id = ?", [(at, status, event_id) for event_id, status, _ in rows])
            db.executemany("INSERT INTO attempts (event_id, attempted_at, status, error, duration_ms) "
                           "VALUES (?, ?, ?, NULL, ?)", [(event_id, at, status, ms) for event_id, status, ms in rows])

    def renew_claims(self, event_ids: Sequence[str], holder: str, until: datetime) -> int:
        with self._write() as db:
            before = db.total_changes
            db.executemany("UPDATE events SET claimed_until = ? WHERE id = ? AND claimed_by = ? AND status = 'pending'",
                           [(to_ms(until), event_id, holder) for event_id in event_ids])
            return db.total_changes - before

    def release_claims(self, event_ids: Sequence[str], now: datetime) -> None:
        with self._write() as db:
            db.executemany("UPDATE events SET next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL "
                           "WHERE id = ? AND status = 'pending'", [(to_ms(now), i) for i in event_ids])

    def record_failed(self, event_ids: Sequence[str], attempt_at: datetime, status: int | None, error: str,
                      duration_ms: int, next_attempt_at: datetime | None) -> None:
        at = to_ms(attempt_at)
        new_status = "pending" if next_attempt_at is not None else "dead"
        with self._write() as db:
            db.executemany(
                "UPDATE events SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?, "
                "next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL WHERE id = ?",
                [(new_status, status, error, to_ms(next_attempt_at), i) for i in event_ids])
            db.executemany("INSERT INTO attempts (event_id, attempted_at, status, error, duration_ms) "
                           "VALUES (?, ?, ?, ?, ?)", [(i, at, status, error, duration_ms) for i in event_ids])

    def list_events(self, status: str | None, limit: int, after: str | None = None) -> list[EventRecord]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if after is not None:
            clauses.append("seq > (SELECT seq FROM events WHERE id = ?)")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY seq LIMIT ?",
                                (*params, limit))
        return [_event(r) for r in rows]

    def get_event(self, event_id: str) -> EventRecord | None:
        found = self._events_by_id(self._db, [event_id])
        return found[0] if found else None

    def attempts_for(self, event_id: str) -> list[Attempt]:
        rows = self._db.execute("SELECT event_id, attempted_at, status, error, duration_ms FROM attempts "
                                "WHERE event_id = ? ORDER BY attempted_at, rowid", (event_id,))
        return [Attempt(r[0], from_ms(r[1]), r[2], r[3], r[4]) for r in rows]

    def record_superseded(self, superseded: Sequence[Superseded], at: datetime) -> None:
        with self._write() as db:
            db.executemany(
                "UPDATE events SET status = 'superseded', last_error = ?, superseded_by = ?, next_attempt_at = NULL, "
                "claimed_by = NULL, claimed_until = NULL WHERE id = ? AND status = 'pending'",
                [(s.reason, s.transition_id, s.event_id) for s in superseded])

    def replay_event(self, event_id: str, now: datetime) -> bool:
        with self._write() as db:
            changed = db.execute(
                # attempts restarts so the replayed event gets the whole retry schedule again; the attempts
                # table keeps the full history
                "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?, claimed_by = NULL, "
                "claimed_until = NULL, recheck = CASE WHEN status = 'superseded' THEN 0 ELSE 1 END "
                "WHERE id = ? AND status != 'held_out'", (to_ms(now), event_id)).rowcount
        return changed == 1

    def replay_dead_events(self, now: datetime, campaign: str | None = None, limit: int = BULK_REPLAY_LIMIT) -> int:
        clause, params = ("AND campaign = ?", [campaign]) if campaign is not None else ("", [])
        with self._write() as db:
            # one statement in one transaction: a concurrent replay finds these rows pending, not dead
            return db.execute(
                "UPDATE events SET status = 'pending', attempts = 0, next_attempt_at = ?, claimed_by = NULL, "
                "claimed_until = NULL, recheck = 1 WHERE id IN (SELECT id FROM events INDEXED BY events_by_status "
                f"WHERE status = 'dead' {clause} ORDER BY seq LIMIT ?)", (to_ms(now), *params, limit)).rowcount

    def count_events(self, status: str, campaign: str | None = None) -> int:
        clause, params = ("AND campaign = ?", [campaign]) if campaign is not None else ("", [])
        return self._db.execute(f"SELECT count(*) FROM events WHERE status = ? {clause}",
                                (status, *params)).fetchone()[0]

    def events_for(self, contact_id: str, limit: int = 100) -> list[EventRecord]:
        rows = self._db.execute(f"SELECT {_EVENT_COLUMNS} FROM events INDEXED BY events_by_contact "
                                "WHERE contact_id = ? ORDER BY seq DESC LIMIT ?", (contact_id, limit))
        return [_event(r) for r in rows][::-1]

    def campaign_outcomes(self, campaign: str, now: datetime) -> list[OutcomeCell]:
        rows = self._db.execute(
            "SELECT strftime('%Y-%m', occurred_at / 1000, 'unixepoch'), status = 'held_out', outcome_until <= ?, "
            "count(*), sum(outcome_orders > 0), sum(outcome_orders), sum(outcome_cents), "
            "sum(outcome_cents * outcome_cents) FROM events INDEXED BY events_by_campaign "
            "WHERE campaign = ? AND outcome_until IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (to_ms(now), campaign))
        return [OutcomeCell(month, bool(held), bool(closed), n, converted, orders, cents, squared)
                for month, held, closed, n, converted, orders, cents, squared in rows]

    def segment_entries(self, segment: str, after: datetime, until: datetime) -> list[tuple[str, datetime]]:
        rows = self._db.execute(
            "SELECT contact_id, min(occurred_at) FROM transitions INDEXED BY transitions_by_day "
            "WHERE occurred_at > ? AND occurred_at <= ? AND to_segment = ? GROUP BY contact_id ORDER BY contact_id",
            (to_ms(after), to_ms(until), segment))
        return [(contact_id, from_ms(at)) for contact_id, at in rows]

    def orders_in_windows(self, windows: Sequence[tuple[str, datetime, datetime]]) -> list[tuple[int, int]]:
        if not windows:
            return []
        # the windows travel as one JSON parameter: no temporary table, so a read stays a read
        spans = json.dumps([[contact_id, to_ms(start), to_ms(end)] for contact_id, start, end in windows])
        rows = self._db.execute(
            "SELECT w.key, count(o.order_ref), coalesce(sum(o.total_cents), 0) FROM json_each(?) w "
            "LEFT JOIN orders o INDEXED BY orders_by_contact ON o.contact_id = w.value ->> 0 "
            "AND o.order_at > w.value ->> 1 AND o.order_at < w.value ->> 2 AND o.cancelled = 0 "
            "GROUP BY w.key ORDER BY w.key", (spans,))
        return [(orders, cents) for _, orders, cents in rows]

    def spend_between(self, after: datetime, until: datetime) -> list[tuple[str, int, int]]:
        return self._db.execute(
            "SELECT c.contact_id, count(o.order_ref), coalesce(sum(o.total_cents), 0) FROM customers c "
            "LEFT JOIN orders o INDEXED BY orders_by_contact ON o.contact_id = c.contact_id "
            "AND o.order_at > max(?, c.first_order_at) AND o.order_at <= ? AND o.cancelled = 0 "
            "WHERE c.first_order_at <= ? "
            "GROUP BY c.contact_id ORDER BY c.contact_id", (to_ms(after), to_ms(until), to_ms(until))).fetchall()

    def event_counts(self, now: datetime) -> dict[str, float]:
        counts: dict[str, float] = dict.fromkeys(EVENT_STATUSES, 0)
        for status, count in self._db.execute("SELECT status, count(*) FROM events GROUP BY status"):
            counts[status] = count
        oldest = self._db.execute("SELECT min(created_at) FROM events WHERE status = 'pending'").fetchone()[0]
        counts["oldest_pending_age_seconds"] = 0.0 if oldest is None else max(0.0, (to_ms(now) - oldest) / 1000)
        return counts

    def transition_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM transitions").fetchone()[0]

    def attempt_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ATTEMPT_OUTCOMES, 0)
        for outcome, count in self._db.execute(
            "SELECT CASE WHEN status IS NULL THEN 'network_error' WHEN status BETWEEN 200 AND 299 THEN 'delivered' "
            "ELSE 'http_error' END, count(*) FROM attempts GROUP BY 1",
        ):
            counts[outcome] = count
        return counts

    @staticmethod
    def _events_by_id(db: sqlite3.Connection, ids: Sequence[str]) -> list[EventRecord]:
        return [_event(row) for row in _rows_in(
            db, f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ({{marks}}) ORDER BY seq", ids)]

    # leases ------------------------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        now_ms = to_ms(now)
        with self._write() as db:
            changed = db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, now_ms + int(ttl_seconds * 1000), now_ms)).rowcount
        return changed == 1

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def leases(self, prefix: str, now: datetime) -> dict[str, str]:
        return {name: holder for name, holder in self._db.execute(
            "SELECT name, holder FROM leases WHERE substr(name, 1, ?) = ? AND expires_at > ?",
            (len(prefix), prefix, to_ms(now)))}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: a batch is stored whole or not at all. SQLite's errors
    leave it as the store's: StoreBusy when the wait for the write lock is over, StoreError for any other.

    BEGIN waits up to `wait_seconds` for another writer, trying again every LOCK_RETRY_SECONDS. SQLite's own busy
    handler sleeps 100 ms between tries: it misses the short gaps between an import's batches, and a writer could
    wait for a whole import. Inside an open transaction it becomes a savepoint of that transaction.
    """

    def __init__(self, conn: sqlite3.Connection, wait_seconds: float = BUSY_WAIT_SECONDS):
        self.conn = conn
        self.wait_seconds = wait_seconds
        self.nested = False

    def __enter__(self) -> sqlite3.Connection:
        self.nested = self.conn.in_transaction
        if self.nested:
            self.conn.execute("SAVEPOINT batch")
        else:
            self._begin()
        return self.conn

    def _begin(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        self.conn.execute("PRAGMA busy_timeout = 0")  # this loop waits instead
        try:
            while True:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:  # "database is locked" once the wait is over
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise StoreError(str(exc)) from exc
                    if time.monotonic() >= deadline:
                        raise StoreBusy(f"{exc} (waited {self.wait_seconds:g} s for another writer)") from exc
                time.sleep(LOCK_RETRY_SECONDS)
        finally:
            # reads and COMMIT keep SQLite's handler: in WAL mode they are only ever busy for a moment
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_SECONDS * 1000}")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.nested:
                if exc_type is not None:
                    self.conn.execute("ROLLBACK TO batch")
                self.conn.execute("RELEASE batch")
            else:
                self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.Error as failed:  # a COMMIT that cannot be written (a full disk, say)
            raise StoreError(str(failed)) from failed
        if isinstance(exc, sqlite3.Error):
            raise StoreError(str(exc)) from exc


def _rows_in(db: sqlite3.Connection, query: str, keys: Sequence[str]) -> Iterator[tuple]:
    """The rows of `query`, whose `{marks}` is an IN list, over all `keys`, _CHUNK keys a statement."""
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start:start + _CHUNK])
        yield from db.execute(query.format(marks=",".join("?" * len(chunk))), chunk)


_EVER = (-(1 << 62), 1 << 62)  # a span of order times that reaches every outcome window


def _fill_touched(db: sqlite3.Connection, contact_ids: Iterable[str],
                  spans: Mapping[str, tuple[int, int]] | None = None) -> None:
    """The customers a refresh works on; `spans`: per customer, the earliest and latest order time (ms) that
    changed, which bounds the outcome windows to look at (all of them without)."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS touched (contact_id TEXT PRIMARY KEY, since INTEGER, until INTEGER)")
    db.execute("DELETE FROM temp.touched")
    spans = spans or {}
    db.executemany("INSERT OR IGNORE INTO temp.touched (contact_id, since, until) VALUES (?, ?, ?)",
                   [(c, *spans.get(c, _EVER)) for c in contact_ids])


def _widen(spans: dict[str, tuple[int, int]], contact_id: str, at: int) -> None:
    low, high = spans.get(contact_id, (at, at))
    spans[contact_id] = (min(low, at), max(high, at))


def _add_columns(db: sqlite3.Connection, columns: Sequence[tuple[str, str, str]]) -> None:
    """Each (table, column, ALTER statement) whose column the table lacks (a file from an older version)."""
    for table, column, statement in columns:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_xinfo({table})")}:
            db.execute(statement)


def _customer(row: tuple) -> CustomerRecord:
    return CustomerRecord(
        contact_id=row[0], name=row[1], email=row[2],
        facts=CustomerFacts(row[3], row[4], from_ms(row[5]), from_ms(row[6]), row[15], row[16], row[0]),
        last_order_ref=row[7], version=row[8], segment=row[9], purchase_frequency=row[10],
        next_check_at=from_ms(row[11]), evaluated_at=from_ms(row[12]), segment_since=from_ms(row[13]),
        changed=bool(row[14]), holdouts=json.loads(row[17]) if row[17] else {},
    )


def _folded_starts(value: str | None, folded_prefix: str) -> bool:
    return value is not None and value.casefold().startswith(folded_prefix)


def _folded_contains(value: str | None, folded_part: str) -> bool:
    return value is not None and folded_part in value.casefold()


def _event(row: tuple) -> EventRecord:
    return EventRecord(
        id=row[0], contact_id=row[1], campaign=row[2], webhook=row[3], type=row[4], occurred_at=from_ms(row[5]),
        created_at=from_ms(row[6]), body=row[7], status=row[8], attempts=row[9], next_attempt_at=from_ms(row[10]),
        last_error=row[11], last_status=row[12], delivered_at=from_ms(row[13]), superseded_by=row[14],
        recheck=bool(row[15]), ordered=bool(row[16]), outcome_orders=row[17], outcome_cents=row[18],
        held_out=row[8] == HELD_OUT, outcome_until=from_ms(row[19]),
    )
