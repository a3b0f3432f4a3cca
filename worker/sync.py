"""sync-orders: read another system's DynamoDB orders table (parallel scan), map its attribute names to ours,
validate each item as an order and ingest it like any other order; resumable from a checkpoint in the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from rules.schema import OrderRules
from worker.ingest import FIELDS, REQUIRED, Intake, RecordError, ingest_orders, parse_order
from worker.store.base import Store

DEFAULT_SEGMENTS = 4
SHOWN_ERRORS = 20
CHECKPOINT_PREFIX = "sync-orders:"


class SyncError(ValueError):
    """The sync cannot start as asked (a bad attribute map, a checkpoint that does not fit); the message says why."""


class OrderSource(Protocol):
    """A table read as a parallel scan: worker.store.dynamodb.SourceTable, or anything shaped like it."""

    name: str

    def approximate_items(self) -> int | None: ...

    def pages(self, segment: int, total_segments: int, start_key: dict[str, Any] | None,
              page_size: int | None = None) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]: ...


def parse_attribute_map(text: str) -> dict[str, str]:
    """'contactID=customer_id,orderReference=order_id,...' -> our field name: their attribute name.

    Fields not named keep their own name (their table may use ours), unless that name is taken by a mapping;
    unknown field names and an attribute mapped twice are refused.
    """
    named: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ours, sep, theirs = (s.strip() for s in part.partition("="))
        if not sep or not ours or not theirs:
            raise SyncError(f"attribute map: {part!r} is not field=attribute (e.g. contactID=customer_id)")
        if ours not in FIELDS:
            raise SyncError(f"attribute map: unknown field {ours!r} (fields: {', '.join(FIELDS)})")
        if theirs in named.values():
            raise SyncError(f"attribute map: attribute {theirs!r} is mapped to two fields")
        named[ours] = theirs
    defaults = {name: name for name in FIELDS if name not in named and name not in named.values()}
    return {**defaults, **named}


def order_record(item: Mapping[str, Any], attributes: Mapping[str, str]) -> dict[str, Any]:
    """Their item as an order record in our field names, for parse_order; attributes not mapped are ignored."""
    record = {}
    for ours, theirs in attributes.items():
        value = item.get(theirs)
        if value is None:
            continue
        # DynamoDB numbers arrive as Decimal: a numeric contact id or reference reads as text, whole amounts stay exact
        record[ours] = int(value) if isinstance(value, Decimal) and value == value.to_integral_value() else value
    return record


@dataclass
class SyncResult:
    table: str
    segments: int
    resumed: bool
    items: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)  # the first SHOWN_ERRORS rejections, for people
    customers: set[str] = field(default_factory=set)


@dataclass
class _Checkpoint:
    """Where each scan segment stands: the key to continue after (None: from the start) and whether it is done.

    Saved in the store after every page, once that page's orders are stored: an interrupted sync
    re-reads at most one page per segment, and re-reading is harmless (orders are upserted by reference).
    """

    segments: int
    positions: dict[int, dict[str, Any] | None]
    done: set[int]

    @classmethod
    def load(cls, store: Store, table: str) -> _Checkpoint | None:
        saved = store.resume_point(CHECKPOINT_PREFIX + table)
        if saved is None or saved.get("complete"):
            return None
        return cls(saved["segments"], {int(k): v for k, v in saved["positions"].items()}, set(saved["done"]))

    @classmethod
    def fresh(cls, segments: int) -> _Checkpoint:
        return cls(segments, dict.fromkeys(range(segments)), set())

    def save(self, store: Store, table: str, complete: bool = False) -> None:
        store.save_resume_point(CHECKPOINT_PREFIX + table, {
            "segments": self.segments, "complete": complete, "done": sorted(self.done),
            "positions": {str(k): v for k, v in self.positions.items()}})


def sync_orders(store: Store, source: OrderSource, attributes: Mapping[str, str], now: datetime,
                segments: int = DEFAULT_SEGMENTS, page_size: int | None = None, restart: bool = False,
                on_page: Callable[[int], None] | None = None,
                order_rules: OrderRules | None = None) -> SyncResult:
    """Scan `source` in `segments` parallel segments and upsert every valid item as an order.

    With `order_rules`, they apply: excluded statuses do not count, orders dated too far ahead of `now` are
    rejected.

    An unfinished earlier sync of the same table is resumed (with its own segment count) unless `restart`.
    Invalid items are counted and reported, never stored. Returns what happened.
    """
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise SyncError(f"attribute map: no attribute for {', '.join(missing)}")
    checkpoint = None if restart else _Checkpoint.load(store, source.name)
    resumed = checkpoint is not None
    if checkpoint is None:
        checkpoint = _Checkpoint.fresh(segments)
        checkpoint.save(store, source.name)
    result = SyncResult(source.name, checkpoint.segments, resumed)
    intake = None
    if order_rules is not None:
        store.apply_excluded_statuses(order_rules.excluded)
        intake = Intake.at(order_rules, now)
    run = _Run(store, source, attributes, now, checkpoint, result, page_size, on_page or (lambda n: None), intake)
    pending = [s for s in range(checkpoint.segments) if s not in checkpoint.done]
    with ThreadPoolExecutor(max_workers=max(1, len(pending)), thread_name_prefix="sync") as pool:
        futures = [pool.submit(run.segment, s) for s in pending]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done():
                    future.result()  # raises the first failure
        except BaseException:  # a failure, or Ctrl-C while waiting
            run.stop.set()  # the other segments finish the page in hand (and checkpoint it), then stop
            raise
    checkpoint.save(store, source.name, complete=True)
    return result


class _Run:
    """One sync's shared state: segments run on threads and report into one result and one checkpoint."""

    def __init__(self, store: Store, source: OrderSource, attributes: Mapping[str, str], now: datetime,
                 checkpoint: _Checkpoint, result: SyncResult, page_size: int | None,
                 on_page: Callable[[int], None], intake: Intake | None):
        self.store, self.source, self.attributes, self.now, self.intake = store, source, attributes, now, intake
        self.checkpoint, self.result, self.page_size, self.on_page = checkpoint, result, page_size, on_page
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def segment(self, number: int) -> None:
        start = self.checkpoint.positions.get(number)
        pages = self.source.pages(number, self.checkpoint.segments, start, self.page_size)
        for index, (items, next_key) in enumerate(pages):
            if self.stop.is_set():
                return
            self._ingest(number, index, items)
            with self._lock:
                self.checkpoint.positions[number] = next_key
                if next_key is None:
                    self.checkpoint.done.add(number)
                self.checkpoint.save(self.store, self.source.name)
            self.on_page(len(items))

    def _ingest(self, number: int, page: int, items: list[dict[str, Any]]) -> None:
        orders, errors = [], []
        for position, item in enumerate(items):
            try:
                orders.append(parse_order(order_record(item, self.attributes),
                                          f"{self.source.name} segment {number} page {page} item {position}",
                                          self.intake))
            except RecordError as exc:
                errors.append(str(exc))
        ingested = ingest_orders(self.store, orders, self.now) if orders else None
        with self._lock:
            result = self.result
            result.items += len(items)
            result.rejected += len(errors)
            result.errors += errors[:max(0, SHOWN_ERRORS - len(result.errors))]
            if ingested is not None:
                result.inserted += ingested.inserted
                result.updated += ingested.updated
                result.unchanged += ingested.unchanged
                result.customers |= ingested.contact_ids
