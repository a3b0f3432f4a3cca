"""Order input: validation that names the record and field, CSV / JSON Lines reading, and the upsert call."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from worker.serialize import parse_instant
from worker.store.base import IngestResult, Order, Store

FIELDS = ("contactID", "orderReference", "orderDate", "total", "email", "name", "status")
REQUIRED = ("contactID", "orderReference", "orderDate", "total")
MAX_TEXT = 256
EARLIEST_ORDER_YEAR, LATEST_ORDER_YEAR = 1970, 2200  # outside: a typo, and day arithmetic could overflow
MAX_TOTAL_CENTS = 10**12  # a billion per order: larger is a typo or an attack, not packaging


class OrdersRejected(ValueError):
    """Some records are invalid; `errors` names each record and field. Nothing was stored."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} invalid order record(s): " + "; ".join(errors[:5]))


class RecordError(ValueError):
    """One bad record: `where` names it (record number or file:line), `message` the field and the fault."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


def parse_order(item: Any, where: str) -> Order:
    """One order from a mapping; raises RecordError naming `where` (record number, line) and the field."""
    if not isinstance(item, Mapping):
        raise RecordError(where, "must be an object with contactID, orderReference, orderDate, total")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise RecordError(where, f"unknown field(s) {', '.join(map(str, unknown))} "
                                 f"(allowed: {', '.join(FIELDS)})")
    ref = item.get("orderReference")
    if isinstance(ref, str) and ref.strip():
        where = f"{where} (orderReference {ref.strip()[:64]})"
    for name in REQUIRED:
        value = item.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise RecordError(where, f"{name}: is required")
    return Order(
        contact_id=_text(item, "contactID", where),
        order_ref=_text(item, "orderReference", where),
        order_at=_order_date(item["orderDate"], where),
        total_cents=_total_cents(item["total"], where),
        status=_optional_text(item, "status", where),
        email=_optional_text(item, "email", where),
        name=_optional_text(item, "name", where),
    )


def parse_orders(items: Sequence[Any]) -> list[Order]:
    """Every record or none: raises OrdersRejected listing every bad record."""
    orders, errors = [], []
    for index, item in enumerate(items):
        try:
            orders.append(parse_order(item, f"record {index}"))
        except RecordError as exc:
            errors.append(str(exc))
    if errors:
        raise OrdersRejected(errors)
    return orders


def ingest_orders(store: Store, orders: Sequence[Order], now: datetime) -> IngestResult:
    return store.upsert_orders(orders, now)


def read_order_file(path: Path, stream: TextIO) -> Iterator[tuple[str, Any]]:
    """(where, raw record) pairs from a CSV (header row) or JSON Lines file; `where` names file and line."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        yield from _read_json_lines(path.name, stream)
    elif path.suffix.lower() == ".csv":
        yield from _read_csv(path.name, stream)
    else:
        raise ValueError(f"{path.name}: unknown file type; use .csv or .jsonl")


def _read_json_lines(name: str, stream: TextIO) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            yield where, json.loads(line, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            yield where, _Unparsable(f"not valid JSON: {exc.msg}")


def _read_csv(name: str, stream: TextIO) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(stream)
    if reader.fieldnames is None:
        return
    missing = [f for f in REQUIRED if f not in reader.fieldnames]
    if missing:
        yield f"{name}:1", _Unparsable(f"header lacks column(s) {', '.join(missing)}")
        return
    for row in reader:
        where = f"{name}:{reader.line_num}"
        if None in row:
            yield where, _Unparsable("more values than header columns")
            continue
        yield where, {k: v for k, v in row.items() if v not in (None, "") or k in REQUIRED}



class _Unparsable(dict):
    """A line that could not even be read as a record; parse_order reports its reason."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def parse_record(where: str, raw: Any) -> Order:
    if isinstance(raw, _Unparsable):
        raise RecordError(where, raw.reason)
    return parse_order(raw, where)


def _text(item: Mapping[str, Any], field: str, where: str) -> str:
    value = item[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(where, f"{field}: must be text")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise RecordError(where, f"{field}: longer than {MAX_TEXT} characters")
    return text


def _optional_text(item: Mapping[str, Any], field: str, where: str) -> str | None:
    if item.get(field) in (None, ""):
        return None
    return _text(item, field, where)


def _order_date(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise RecordError(where, "orderDate: must be an ISO 8601 date or datetime text")
    try:
        moment = parse_instant(value)
    except ValueError as exc:
        raise RecordError(where, f"orderDate: {exc}") from None
    if not EARLIEST_ORDER_YEAR <= moment.year <= LATEST_ORDER_YEAR:
        raise RecordError(where, f"orderDate: {value} is not between {EARLIEST_ORDER_YEAR} and {LATEST_ORDER_YEAR}")
    return moment


def _total_cents(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise RecordError(where, "total: must be a decimal amount such as 149.90")
    try:
        # floats arrive from JSON parsers that were not told to keep decimals; repr() keeps what was written
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise RecordError(where, f"total: '{value}' is not a decimal amount") from None
    if not amount.is_finite():
        raise RecordError(where, f"total: '{value}' is not a decimal amount")
    if amount < 0:
        raise RecordError(where, f"total: {amount} is negative")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise RecordError(where, f"total: {amount} has more than two decimal places")
    if cents > MAX_TOTAL_CENTS:
        raise RecordError(where, f"total: {amount} is implausibly large")
    return int(cents)
