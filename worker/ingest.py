"""Order input: validation that names the record and field, CSV / JSON Lines reading, and the upsert call."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from rules.schema import OrderRules
from worker.serialize import iso, parse_instant
from worker.store.base import IngestResult, Order, Store

FIELDS = ("contactID", "orderReference", "orderDate", "total", "email", "name", "status")
REQUIRED = ("contactID", "orderReference", "orderDate", "total")
MAX_TEXT = 256
BATCH = 5000  # orders per upsert: large enough to amortise a transaction, small enough to stay responsive
EARLIEST_ORDER_YEAR, LATEST_ORDER_YEAR = 1970, 2200  # outside: a typo, and day arithmetic could overflow
MAX_TOTAL_CENTS = 10**12  # a billion per order: larger is a typo or an attack, not packaging
_FIELD_SET = frozenset(FIELDS)
_PLAIN_AMOUNT = re.compile(r"\s*(\d{1,13})(?:\.(\d{1,2}))?\s*")
# A contactID is a path segment of /api/customers/<contactID>: '/' would split it, control characters and the
# dot segments '.' and '..' are mangled by HTTP clients on the way. Any other printable text works everywhere.
_UNADDRESSABLE_ID = re.compile(r"[/\x00-\x1f\x7f-\x9f]|^\.{1,2}$")


@dataclass(frozen=True, slots=True)
class Intake:
    """What an order must satisfy beyond its own fields: no date later than `not_after` (the server's clock plus
    the rules' `orders.max_future_days`)."""

    not_after: datetime
    max_future_days: int

    @classmethod
    def at(cls, order_rules: OrderRules, now: datetime) -> Intake:
        days = order_rules.max_future_days
        return cls(now + timedelta(days=days), days)


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


def parse_order(item: Any, where: str, intake: Intake | None = None) -> Order:
    """One order from a mapping; raises RecordError naming `where` (record number, line) and the field.

    With an `intake`, an order dated after its `not_after` is refused too.
    """
    if not isinstance(item, Mapping):
        raise RecordError(where, "must be an object with contactID, orderReference, orderDate, total")
    if not _FIELD_SET.issuperset(item):
        unknown = sorted(str(key) for key in item if key not in _FIELD_SET)
        raise RecordError(where, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    try:
        for name in REQUIRED:
            value = item.get(name)
            if value is None or (value.__class__ is str and not value.strip()):
                raise _FieldError(name, "is required")
        order_at = _order_date(item["orderDate"])
        if intake is not None and order_at > intake.not_after:
            raise _FieldError("orderDate", f"{iso(order_at)} is more than {intake.max_future_days} day(s) after the "
                              f"server's clock ({iso(intake.not_after - timedelta(days=intake.max_future_days))}); "
                              "fix the date or its time zone (rules.yaml orders.max_future_days sets the margin)")
        return Order(
            contact_id=_contact_id(item["contactID"]),
            order_ref=_text(item["orderReference"], "orderReference"),
            order_at=order_at,
            total_cents=_total_cents(item["total"]),
            status=_optional_text(item, "status"),
            email=_optional_text(item, "email"),
            name=_optional_text(item, "name"),
        )
    except _FieldError as exc:
        # The reference makes the record findable; it is only looked up once something is wrong.
        ref = item.get("orderReference")
        if isinstance(ref, str) and ref.strip():
            where = f"{where} (orderReference {ref.strip()[:64]})"
        raise RecordError(where, f"{exc.field}: {exc.message}") from None


def parse_orders(items: Sequence[Any], intake: Intake | None = None) -> list[Order]:
    """Every record or none: raises OrdersRejected listing every bad record."""
    orders, errors = [], []
    for index, item in enumerate(items):
        try:
            orders.append(parse_order(item, f"record {index}", intake))
        except RecordError as exc:
            errors.append(str(exc))
    if errors:
        raise OrdersRejected(errors)
    return orders


def ingest_orders(store: Store, orders: Sequence[Order], now: datetime,
                  order_rules: OrderRules | None = None) -> IngestResult:
    """Store orders, counted under the rules' `orders.exclude_statuses` (a changed list recounts the base first;
    without them, under the list the store last applied)."""
    if order_rules is not None:
        store.apply_excluded_statuses(order_rules.excluded)
    return store.upsert_orders(orders, now)


@dataclass
class FileImport:
    """What an import did; `stored` is False when bad records made it store nothing."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    stored: bool = True


class _Undo(Exception):
    """Raised inside an atomic import to roll it back."""


def import_order_file(store: Store, path: Path, now: datetime, skip_invalid: bool = False,
                      on_progress: Callable[[int], None] | None = None,
                      order_rules: OrderRules | None = None) -> FileImport:
    """Upsert every order of a CSV / JSONL file in batches; bad records are reported by file and line.

    Without `skip_invalid` one bad record means nothing is stored: on a store with atomic imports (SQLite) the
    file is read once inside one transaction that is undone; elsewhere a first pass validates the whole file.
    With `order_rules`, they apply (excluded statuses, how far ahead of `now` an order may be dated).
    Raises ValueError for a file that cannot be read as orders at all.
    """
    progress = on_progress or (lambda count: None)
    result = FileImport()
    intake = None if order_rules is None else Intake.at(order_rules, now)
    if order_rules is not None:
        store.apply_excluded_statuses(order_rules.excluded)
    try:
        with store.atomic_import() as atomic:
            if not atomic and not skip_invalid:
                result.rejected = _errors(path, intake)
                if result.rejected:
                    result.stored = False
                    return result
            for batch in _batches(_orders(path, result.rejected, intake), BATCH):
                if result.rejected and not skip_invalid:
                    continue  # it will all be undone: only read on, to report every bad record
                outcome = store.upsert_orders(batch, now)
                result.inserted += outcome.inserted
                result.updated += outcome.updated
                result.unchanged += outcome.unchanged
                result.customers |= outcome.contact_ids
                progress(len(batch))
            if result.rejected and not skip_invalid:
                raise _Undo
    except _Undo:
        return FileImport(rejected=result.rejected, stored=False)
    if not (result.inserted or result.updated or result.unchanged or result.rejected):
        raise ValueError("no order records found")
    return result


def _orders(path: Path, errors: list[str], intake: Intake | None) -> Iterator[Order]:
    with path.open(encoding="utf-8", newline="") as stream:
        for where, raw in read_order_file(path, stream):
            try:
                yield parse_record(where, raw, intake)
            except RecordError as exc:
                errors.append(str(exc))


def _errors(path: Path, intake: Intake | None) -> list[str]:
    errors: list[str] = []
    for _ in _orders(path, errors, intake):
        pass
    return errors


def _batches(orders: Iterator[Order], size: int) -> Iterator[list[Order]]:
    batch: list[Order] = []
    for order in orders:
        batch.append(order)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        return
    header = [column.strip() for column in header]
    missing = [f for f in REQUIRED if f not in header]
    unknown = [column for column in header if column not in _FIELD_SET]
    if missing or unknown:
        problem = (f"header lacks column(s) {', '.join(missing)}" if missing else
                   f"header has unknown column(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
        yield f"{name}:1", _Unparsable(problem)
        return
    width = len(header)
    for row in reader:
        if not row:
            continue
        where = f"{name}:{reader.line_num}"
        if len(row) > width:
            yield where, _Unparsable("more values than header columns")
            continue
        # empty optional cells are simply absent: parse_order treats "" as not given
        yield where, dict(zip(header, row, strict=False))


class _Unparsable(dict):
    """A line that could not even be read as a record; parse_order reports its reason."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


def parse_record(where: str, raw: Any, intake: Intake | None = None) -> Order:
    if isinstance(raw, _Unparsable):
        raise RecordError(where, raw.reason)
    return parse_order(raw, where, intake)


class _FieldError(Exception):
    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message


def _text(value: Any, field: str) -> str:
    if value.__class__ is not str:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _FieldError(field, "must be text")
        value = str(value)
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise _FieldError(field, f"longer than {MAX_TEXT} characters")
    return text


def _contact_id(value: Any) -> str:
    text = _text(value, "contactID")
    if _UNADDRESSABLE_ID.search(text):
        raise _FieldError("contactID", f"{text!r} cannot be used: a contactID may not contain '/' or control "
                                       "characters, nor be '.' or '..' (it is part of the API's URLs)")
    return text


def _optional_text(item: Mapping[str, Any], field: str) -> str | None:
    value = item.get(field)
    if value is None or value == "":
        return None
    return _text(value, field)


def _order_date(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _FieldError("orderDate", "must be an ISO 8601 date or datetime text")
    try:
        moment = parse_instant(value)
    except ValueError as exc:
        raise _FieldError("orderDate", str(exc)) from None
    if not EARLIEST_ORDER_YEAR <= moment.year <= LATEST_ORDER_YEAR:
        raise _FieldError("orderDate", f"{value} is not between {EARLIEST_ORDER_YEAR} and {LATEST_ORDER_YEAR}")
    return moment


def _total_cents(value: Any) -> int:
    if value.__class__ is str:
        plain = _PLAIN_AMOUNT.fullmatch(value)
        if plain is not None:  # the common "149.90": exact integer arithmetic, no Decimal needed
            whole, fraction = plain.group(1), plain.group(2) or ""
            cents = int(whole) * 100 + int(fraction.ljust(2, "0") or 0)
            if cents > MAX_TOTAL_CENTS:
                raise _FieldError("total", f"{value.strip()} is implausibly large")
            return cents
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise _FieldError("total", "must be a decimal amount such as 149.90")
    try:
        # floats arrive from JSON parsers that were not told to keep decimals; repr() keeps what was written
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise _FieldError("total", f"'{value}' is not a decimal amount") from None
    if not amount.is_finite():
        raise _FieldError("total", f"'{value}' is not a decimal amount")
    if amount < 0:
        raise _FieldError("total", f"{amount} is negative")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise _FieldError("total", f"{amount} has more than two decimal places")
    if cents > MAX_TOTAL_CENTS:
        raise _FieldError("total", f"{amount} is implausibly large")
    return int(cents)
