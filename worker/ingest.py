"""Order input: validation that names the record and field, CSV / JSON Lines reading, and the upsert call; file
imports in short, resumable batches."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from rules.schema import OrderRules
from worker.serialize import iso, parse_instant
from worker.store.base import IngestResult, Order, Store

FIELDS = ("contactID", "orderReference", "orderDate", "total", "email", "name", "status")
REQUIRED = ("contactID", "orderReference", "orderDate", "total")
MAX_TEXT = 256
# Orders per upsert, each its own transaction: ~0.15 s of the write lock (0.25 s at worst) on a 2-core machine with
# 800k orders stored, and the API and the scheduler wait on an import for one batch at most. A transaction costs
# ~65 us per order from 1,000 to 5,000 orders, so smaller batches cost an import nothing.
BATCH = 2000
CHECKPOINT_PREFIX = "order_import:"  # resume point: + the sha256 of a file -> {"file", "records" stored, "complete"}
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
        # Both may quote the record's text, which can hold a lone surrogate: escaped, they can be printed and sent.
        self.where = _printable(where)
        self.message = _printable(message)
        super().__init__(f"{self.where}: {self.message}")


def parse_order(item: Any, where: str, intake: Intake | None = None) -> Order:
    """One order from a mapping; raises RecordError naming `where` (record number, line) and the field.

    With an `intake`, an order dated after its `not_after` is refused too.
    """
    if item.__class__ is dict:  # a CSV row or a JSON object: most are plain text, checked in one go
        plain = _plain_order(item, intake)
        if plain is not None:
            return plain
    return _checked_order(item, where, intake)


def _checked_order(item: Any, where: str, intake: Intake | None) -> Order:
    """parse_order's every check, for any record."""
    if not isinstance(item, Mapping):
        raise RecordError(where, "must be an object with contactID, orderReference, orderDate, total")
    if not _FIELD_SET.issuperset(item):
        unknown = sorted(str(key) for key in item if key not in _FIELD_SET)  # RecordError escapes them
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


def _plain_order(item: dict[str, Any], intake: Intake | None) -> Order | None:
    """The order of a record whose fields are all ASCII text of the usual forms (an instant ending in Z, an amount
    such as 149.90) and valid; None for any other record, which parse_order's full checks then accept or refuse with
    their message. Both paths give the same order: this one only skips work the common record does not need."""
    if not _FIELD_SET.issuperset(item):
        return None
    get = item.get
    contact, ref, when, total = get("contactID"), get("orderReference"), get("orderDate"), get("total")
    if contact.__class__ is not str or ref.__class__ is not str or when.__class__ is not str \
            or total.__class__ is not str:
        return None
    contact, ref, when = contact.strip(), ref.strip(), when.strip()
    if not (contact and ref) or len(contact) > MAX_TEXT or len(ref) > MAX_TEXT or not contact.isascii() \
            or not ref.isascii() or _UNADDRESSABLE_ID.search(contact):
        return None
    amount = _PLAIN_AMOUNT.fullmatch(total)
    if amount is None or len(when) <= 10 or when[-1] != "Z" or "z" in when:
        return None
    try:
        order_at = datetime.fromisoformat(when)  # ...Z: UTC, as parse_instant makes it
    except ValueError:
        return None
    if not EARLIEST_ORDER_YEAR <= order_at.year <= LATEST_ORDER_YEAR or (
            intake is not None and order_at > intake.not_after):
        return None
    cents = int(amount.group(1)) * 100 + int((amount.group(2) or "").ljust(2, "0") or 0)
    if cents > MAX_TOTAL_CENTS:
        return None
    optional: list[str | None] = []
    for name in ("status", "email", "name"):
        value = get(name)
        if value is None or value == "":
            optional.append(None)
            continue
        if value.__class__ is not str:
            return None
        text = value.strip()
        if len(text) > MAX_TEXT or not text.isascii():
            return None
        optional.append(text)
    status, email, name = optional
    return Order(contact_id=contact, order_ref=ref, order_at=order_at, total_cents=cents, status=status, email=email,
                 name=name)


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
    """What an import did; `stored` is False when it stored nothing because of bad records (one without
    skip_invalid, every one with it). `resumed_after`: records an earlier, interrupted run of the file stored."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    stored: bool = True
    resumed_after: int = 0


class ImportInterrupted(RuntimeError):
    """The store failed part-way through a file; the first `stored` records are kept and a re-run resumes there."""

    def __init__(self, file: str, stored: int, cause: Exception):
        self.stored = stored
        kept = f"its first {stored} record(s) are stored" if stored else "none of it was stored"
        super().__init__(f"{file}: the import stopped ({cause}); {kept}. Run the same import again to finish it.")


@dataclass(frozen=True, slots=True)
class ImportCheckpoint:
    """How far the imports of one file (known by the sha256 of its content) got: its first `records` are stored.

    Saved after each batch commits, so it is never ahead of the store (behind it, a batch is upserted again, which
    changes nothing). A completed import starts again from the top: re-importing a file re-applies it.
    """

    key: str
    file: str
    records: int

    @classmethod
    def load(cls, store: Store, path: Path) -> ImportCheckpoint:
        with path.open("rb") as stream:
            key = CHECKPOINT_PREFIX + hashlib.file_digest(stream, "sha256").hexdigest()
        saved = store.resume_point(key) or {}
        records = saved.get("records", 0) if saved.get("complete") is False else 0
        return cls(key, path.name, records if isinstance(records, int) else 0)

    def save(self, store: Store, records: int, complete: bool = False) -> None:
        store.save_resume_point(self.key, {"file": self.file, "records": records, "complete": complete})


def import_order_file(store: Store, path: Path, now: datetime, skip_invalid: bool = False,
                      on_progress: Callable[[int], None] | None = None,
                      order_rules: OrderRules | None = None) -> FileImport:
    """Upsert every order of a CSV / JSONL file in batches; bad records are reported by file and line.

    Without `skip_invalid` a first pass validates the whole file and one bad record means nothing is stored; the
    orders it parsed wait in a temporary file (a batch at a time: memory stays flat), so the file is read and
    parsed once. The orders are then stored BATCH at a time, each batch its own short transaction, and the store
    records how many of the file's records are stored (ImportCheckpoint): importing the same file again after an
    interruption resumes after them. `on_progress` hears how many records are done: those an earlier run stored,
    then each batch's.
    With `order_rules`, they apply (excluded statuses, how far ahead of `now` an order may be dated).
    Raises ValueError for a file that cannot be read as orders at all, ImportInterrupted when the store fails.
    """
    progress = on_progress or (lambda count: None)
    intake = None if order_rules is None else Intake.at(order_rules, now)
    if order_rules is not None:
        store.apply_excluded_statuses(order_rules.excluded)
    checkpoint = ImportCheckpoint.load(store, path)
    result = FileImport(resumed_after=checkpoint.records)
    read = _Read()
    if skip_invalid:
        _store_batches(store, _batches(_parsed(path, intake), checkpoint.records, result.rejected, read), now, result,
                       checkpoint, progress)
    else:
        with tempfile.TemporaryFile(prefix="segment-worker-import-") as spool:
            for through, batch in _batches(_parsed(path, intake), checkpoint.records, result.rejected, read):
                if not result.rejected:  # once one record is bad nothing will be stored: only the errors matter
                    pickle.dump((through, [_order_tuple(o) for o in batch]), spool, pickle.HIGHEST_PROTOCOL)
            if result.rejected:
                result.stored = False
                return result
            spool.seek(0)
            _store_batches(store, _unspooled(spool), now, result, checkpoint, progress)
    if read.records == 0:
        raise ValueError(f"{path.name}: no order records found")
    if read.valid == 0:  # every record was rejected: nothing was stored
        result.stored = False
        return result
    checkpoint.save(store, read.records, complete=True)
    return result


@dataclass
class _Read:
    records: int = 0  # records of the file
    valid: int = 0


def _batches(parsed: Iterable[Order | RecordError], after: int, rejected: list[str],
             read: _Read) -> Iterator[tuple[int, list[Order]]]:
    """(records read so far, up to BATCH valid orders among them) for the records after the first `after` (stored by
    an earlier run), the last pair for the end of the file; each bad record's message goes to `rejected`."""
    batch: list[Order] = []
    for read.records, order in enumerate(parsed, start=1):
        if isinstance(order, RecordError):
            rejected.append(str(order))
            continue
        read.valid += 1
        if read.records > after:
            batch.append(order)
        if len(batch) >= BATCH:
            yield read.records, batch
            batch = []
    yield read.records, batch


def _order_tuple(order: Order) -> tuple:
    return (order.contact_id, order.order_ref, order.order_at, order.total_cents, order.status, order.email,
            order.name)


def _unspooled(spool: BinaryIO) -> Iterator[tuple[int, list[Order]]]:
    while True:
        try:
            through, rows = pickle.load(spool)
        except EOFError:
            return
        yield through, [Order(*row) for row in rows]


def _store_batches(store: Store, batches: Iterable[tuple[int, list[Order]]], now: datetime, result: FileImport,
                   checkpoint: ImportCheckpoint, progress: Callable[[int], None]) -> None:
    """Upsert each batch in its own transaction, the checkpoint saved after each."""
    stored = checkpoint.records
    progress(stored)
    for through, batch in batches:
        if batch:
            _store_batch(store, batch, now, result, checkpoint, stored, through)
        progress(through - stored)
        stored = through


def _store_batch(store: Store, batch: list[Order], now: datetime, result: FileImport, checkpoint: ImportCheckpoint,
                 stored: int, through: int) -> None:
    try:
        outcome = ingest_orders(store, batch, now)  # the statuses were applied once, before the first batch
        checkpoint.save(store, through)
    except Exception as exc:  # whatever failed (a busy store, a full disk), the batches before it are kept
        raise ImportInterrupted(checkpoint.file, stored, exc) from exc
    result.inserted += outcome.inserted
    result.updated += outcome.updated
    result.unchanged += outcome.unchanged
    result.customers |= outcome.contact_ids


def _parsed(path: Path, intake: Intake | None) -> Iterator[Order | RecordError]:
    """Every record of the file, parsed or refused. utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            for where, raw in read_order_file(path, stream):
                if isinstance(raw, _BadHeader):
                    raise ValueError(f"{where}: {raw.reason}")
                try:
                    yield parse_record(where, raw, intake)
                except RecordError as exc:
                    yield exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name}: not UTF-8 text ({exc.reason}); save it as UTF-8 (Excel: CSV UTF-8)") from None


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
        if missing and set(missing) <= {column.strip() for column in ";".join(header).split(";")}:
            # Excel writes "CSV" with the list separator of the computer's region: ';' in much of Europe
            problem += "; the header looks semicolon-separated: save the file as comma-separated CSV"
        yield f"{name}:1", _BadHeader(problem)
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


class _BadHeader(_Unparsable):
    """A CSV header lacking a required column or naming an unknown one: no line of the file can be read."""


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
    if not text.isascii() and not storable(text):
        # JSON's "\ud800" escape decodes to a lone surrogate, which has no UTF-8 form: no store can keep it
        raise _FieldError(field, "contains characters that cannot be stored (a lone surrogate)")
    return text


def storable(text: str) -> bool:
    """Whether a store can hold `text`: JSON's "\\ud800" escape decodes to a lone surrogate, with no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """`text` with anything UTF-8 cannot carry escaped (\\ud800), for messages that are printed and sent."""
    return text if text.isascii() or storable(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


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
