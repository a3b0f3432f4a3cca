"""Customer lists as CSV, streamed a page at a time so memory stays flat however many rows there are."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from datetime import datetime

from rules import Classification, Classifier
from worker.serialize import customer_json
from worker.store.base import CustomerRecord, Store, search_matcher

COLUMNS = ("contactID", "name", "email", "segment", "purchaseFrequency", "orderCount", "totalSpend",
           "firstOrderDate", "lastOrderDate", "lastOrderReference", "lastOrderDaysAgo",
           "rfmRecency", "rfmFrequency", "rfmMonetary", "rfmGroup",
           # the churn and value model's figures, empty while no model is fitted
           "churnRisk", "churnRiskBand", "pAlive", "expectedOrders90d", "predictedClv12m", "modelFittedAt")
PREDICTED_COLUMNS = COLUMNS[15:]
PAGE = 2000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_rows(store: Store, classifier: Classifier, as_of: datetime, segment: str | None = None,
                purchase_frequency: str | None = None, use_stored: bool = True,
                search: str | None = None) -> Iterator[dict[str, object]]:
    """Customers as flat rows, classified at `as_of`, filtered on that classification, ordered by contactID.

    `use_stored` narrows the scan with the stored segment index (right for "now"); another moment scans all.
    `search` keeps the customers the store's search_customers would find for it (every match, not its first page).
    """
    narrowed = (segment, purchase_frequency) if use_stored else (None, None)
    matches = search_matcher(search) if search else None
    for record, classification in _classified(_records(store, *narrowed), classifier, as_of, matches):
        view = customer_json(record, classification)
        metrics = view["metrics"]
        if (segment and metrics["segment"] != segment) or \
                (purchase_frequency and metrics["purchaseFrequency"] != purchase_frequency):
            continue
        rfm = metrics["rfm"] or {}
        yield {
            "contactID": view["contactID"], "name": view["name"], "email": view["email"],
            **{key: metrics[key] for key in COLUMNS[3:11]},
            "rfmRecency": rfm.get("recency"), "rfmFrequency": rfm.get("frequency"),
            "rfmMonetary": rfm.get("monetary"), "rfmGroup": rfm.get("group"),
            **{key: (metrics["predicted"] or {}).get(key) for key in PREDICTED_COLUMNS},
        }


def _classified(records: Iterator[CustomerRecord], classifier: Classifier, as_of: datetime,
                matches: Callable[[str, str | None, str | None], bool] | None,
                ) -> Iterator[tuple[CustomerRecord, Classification]]:
    """The matching records with their classification, a page at a time (the model scores a page at once)."""
    page: list[CustomerRecord] = []
    for record in records:
        if matches is None or matches(record.contact_id, record.email, record.name):
            page.append(record)
        if len(page) >= PAGE:
            yield from zip(page, classifier.classify_many([r.facts for r in page], as_of), strict=True)
            page = []
    yield from zip(page, classifier.classify_many([r.facts for r in page], as_of), strict=True)


def csv_chunks(rows: Iterator[dict[str, object]]) -> Iterator[str]:
    """CSV text in chunks of about a page; the header first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for count, row in enumerate(rows, start=1):
        writer.writerow({key: _cell(value) for key, value in row.items()})
        if count % PAGE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def export_filename(segment: str | None, purchase_frequency: str | None = None) -> str:
    """customers-vip.csv, customers-active-monthly.csv, customers-all.csv: the filters in letters, digits and '-'
    only, since segment names come from rules.yaml and a header value must not carry quotes or line breaks."""
    parts = [re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x"
             for name in (segment, purchase_frequency) if name]
    return f"customers-{'-'.join(parts) or 'all'}.csv"


def _records(store: Store, segment: str | None, purchase_frequency: str | None) -> Iterator[CustomerRecord]:
    # Pages from the stored-segment index; export_rows re-checks each row against its live classification.
    after = None
    while True:
        page = store.list_customers(segment, purchase_frequency, after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].contact_id


def _cell(value: object) -> object:
    # A name like "=HYPERLINK(...)" must stay text when a marketer opens the file in a spreadsheet.
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value
