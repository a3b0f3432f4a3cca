"""Read routes for customers: the list with filters and paging, one customer, segment totals and history."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, stream_with_context
from werkzeug.exceptions import NotFound

from rules import Classification
from worker.api.context import context
from worker.api.params import as_of_param, choice_param, cursor_param, encode_cursor, limit_param
from worker.export import csv_chunks, export_rows
from worker.serialize import customer_json, iso, money, transition_json
from worker.store.base import CustomerRecord, SegmentSummary

bp = Blueprint("customers", __name__)


@bp.get("/customers")
def list_customers() -> dict[str, Any]:
    ctx = context()
    rules = ctx.rules()
    segment = choice_param("segment", rules.segment_names)
    frequency = choice_param("purchaseFrequency", rules.frequency_names)
    limit, after, as_of = limit_param(), cursor_param(), as_of_param()
    if as_of is None:
        data, last_key = _stored_page(segment, frequency, after, limit)
    else:
        data, last_key = _evaluated_page(segment, frequency, after, limit, as_of)
    return {"data": data, "count": len(data), "nextCursor": encode_cursor(last_key) if last_key else None}


@bp.get("/customers.csv")
def export_customers() -> Response:
    """The list as CSV, streamed: constant memory at any size."""
    ctx = context()
    rules = ctx.rules()
    segment = choice_param("segment", rules.segment_names)
    frequency = choice_param("purchaseFrequency", rules.frequency_names)
    as_of = as_of_param()
    rows = export_rows(ctx.store, ctx.classifier(), as_of or ctx.clock(), segment, frequency,
                       use_stored=as_of is None)
    name = f"customers-{segment or 'all'}.csv".lower()
    return Response(stream_with_context(csv_chunks(rows)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/customers/<contact_id>")
def get_customer(contact_id: str) -> dict[str, Any]:
    ctx = context()
    as_of = as_of_param() or ctx.clock()
    record = _customer_or_404(contact_id)
    return {"data": customer_json(record, ctx.classifier().classify(record.facts, as_of))}


@bp.get("/customers/<contact_id>/transitions")
def customer_transitions(contact_id: str) -> dict[str, Any]:
    _customer_or_404(contact_id)
    transitions = [transition_json(t) for t in context().store.transitions_for(contact_id)]
    return {"data": transitions, "count": len(transitions)}


@bp.get("/segments")
def segments() -> dict[str, Any]:
    ctx = context()
    as_of = as_of_param()
    summary = ctx.store.segment_summary() if as_of is None else _evaluated_summary(as_of)
    by_name = {row.segment: row for row in summary}
    rows = [by_name.get(name, SegmentSummary(name, 0, 0)) for name in ctx.rules().segment_names]
    total = sum(row.customers for row in rows)
    return {
        "data": [{"segment": row.segment, "customers": row.customers, "totalSpend": money(row.total_cents),
                  "share": round(row.customers / total, 4) if total else 0.0} for row in rows],
        "customers": total,
        "asOf": iso(as_of or ctx.clock()),
    }


def _customer_or_404(contact_id: str) -> CustomerRecord:
    record = context().store.get_customer(contact_id)
    if record is None:
        raise NotFound(f"customer '{contact_id}' not found")
    return record


def _stored_page(segment: str | None, frequency: str | None, after: str | None,
                 limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page from the stored segment index, shown as classified right now.

    Right after a day threshold passes (e.g. midnight) a stored segment can be stale until the next evaluation;
    such rows are left out rather than shown under a filter they no longer match, and paging still continues
    after the last row scanned.
    """
    ctx = context()
    classifier = ctx.classifier()
    now = ctx.clock()
    records = ctx.store.list_customers(segment, frequency, after, limit)
    data = []
    for record in records:
        classification = classifier.classify(record.facts, now)
        if _matches(classification, segment, frequency):
            data.append(customer_json(record, classification))
    last_key = records[-1].contact_id if len(records) == limit else None
    return data, last_key


def _evaluated_page(segment: str | None, frequency: str | None, after: str | None, limit: int,
                    as_of: datetime) -> tuple[list[dict[str, Any]], str | None]:
    """One page of everyone classified at `as_of`; one extra match tells whether another page exists."""
    matches = (
        (record, classification)
        for record, classification in _classified_at(as_of)
        if (after is None or record.contact_id > after) and _matches(classification, segment, frequency)
    )
    page = heapq.nsmallest(limit + 1, matches, key=lambda match: match[0].contact_id)
    more = len(page) > limit
    page = page[:limit]
    return [customer_json(r, c) for r, c in page], page[-1][0].contact_id if more else None


def _evaluated_summary(as_of: datetime) -> list[SegmentSummary]:
    counts: dict[str, list[int]] = {}
    for record, classification in _classified_at(as_of):
        totals = counts.setdefault(classification.segment, [0, 0])
        totals[0] += 1
        totals[1] += record.facts.total_cents
    return [SegmentSummary(name, customers, cents) for name, (customers, cents) in counts.items()]


def _classified_at(as_of: datetime) -> Iterator[tuple[CustomerRecord, Classification]]:
    ctx = context()
    classifier = ctx.classifier()
    for batch in ctx.store.iter_customers():
        for record in batch:
            yield record, classifier.classify(record.facts, as_of)


def _matches(classification: Classification, segment: str | None, frequency: str | None) -> bool:
    return (segment is None or classification.segment == segment) and \
        (frequency is None or classification.purchase_frequency == frequency)
