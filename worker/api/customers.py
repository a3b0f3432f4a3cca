"""Read routes for customers: the list with filters, sorting and paging, one customer, segment totals, history
and the customer's events."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, stream_with_context
from werkzeug.exceptions import NotFound

from rules import Classification
from rules.holdouts import ArmDraw
from worker.api.context import context
from worker.api.params import as_of_param, choice_param, encode_position, limit_param, position_param, sort_param
from worker.export import csv_chunks, export_filename, export_rows
from worker.serialize import customer_json, event_json, iso, money, transition_json
from worker.store.base import CustomerOrder, CustomerRecord, SegmentSummary

bp = Blueprint("customers", __name__)


@bp.get("/customers")
def list_customers() -> dict[str, Any]:
    ctx = context()
    rules = ctx.rules()
    segment = choice_param("segment", rules.segment_names)
    frequency = choice_param("purchaseFrequency", rules.frequency_names)
    sort, order = sort_param()
    limit, after, as_of = limit_param(), position_param(sort), as_of_param()
    if as_of is None:
        data, last, total = _stored_page(segment, frequency, order, after, limit)
    else:
        data, last, total = _evaluated_page(segment, frequency, order, after, limit, as_of)
    return {"data": data, "count": len(data), "total": total,
            "nextCursor": encode_position(sort, last) if last is not None else None}


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
    return Response(stream_with_context(csv_chunks(rows)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{export_filename(segment)}"'})


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


@bp.get("/customers/<contact_id>/events")
def customer_events(contact_id: str) -> dict[str, Any]:
    _customer_or_404(contact_id)
    events = [event_json(e) for e in context().store.events_for(contact_id, limit_param())]
    return {"data": events, "count": len(events)}


@bp.get("/segments")
def segments() -> dict[str, Any]:
    """Counts and spend per segment; `experiment=NAME` adds them per arm of that threshold experiment (a read of
    every customer, as `asOf` is)."""
    ctx = context()
    rules = ctx.rules()
    as_of = as_of_param()
    experiment = choice_param("experiment", tuple(rules.experiments))
    summary = ctx.store.segment_summary() if as_of is None else _evaluated_summary(as_of)
    answer = {**_segment_rows(summary, rules.segment_names), "asOf": iso(as_of or ctx.clock())}
    if experiment is not None:
        answer["experiment"] = experiment
        answer["arms"] = [{"arm": arm, **_segment_rows(rows, rules.segment_names)}
                          for arm, rows in _summary_by_arm(experiment, as_of).items()]
    return answer


def _segment_rows(summary: list[SegmentSummary], names: tuple[str, ...]) -> dict[str, Any]:
    by_name = {row.segment: row for row in summary}
    rows = [by_name.get(name, SegmentSummary(name, 0, 0)) for name in names]
    total = sum(row.customers for row in rows)
    return {
        "data": [{"segment": row.segment, "customers": row.customers, "totalSpend": money(row.total_cents),
                  "share": round(row.customers / total, 4) if total else 0.0} for row in rows],
        "customers": total,
    }


def _summary_by_arm(experiment: str, as_of: datetime | None) -> dict[str, list[SegmentSummary]]:
    """Per arm (in the order listed), the customers' stored segments, or their segments at `as_of`."""
    rules = context().rules()
    shares = rules.experiments[experiment].shares
    draw = ArmDraw(rules.holdout_salt, experiment, shares)
    counts: dict[str, dict[str, list[int]]] = {arm: {} for arm, _ in shares}
    if as_of is None:
        customers = ((r, r.segment) for batch in context().store.iter_customers() for r in batch)
    else:
        customers = ((r, c.segment) for r, c in _classified_at(as_of))
    for record, segment in customers:
        if segment is None:  # not evaluated yet: not in the stored totals either
            continue
        arm = draw.arm(record.contact_id)
        totals = counts[arm].setdefault(segment, [0, 0])
        totals[0] += 1
        totals[1] += record.facts.total_cents
    return {arm: [SegmentSummary(name, n, cents) for name, (n, cents) in rows.items()] for arm, rows in counts.items()}


def _customer_or_404(contact_id: str) -> CustomerRecord:
    record = context().store.get_customer(contact_id)
    if record is None:
        raise NotFound(f"customer '{contact_id}' not found")
    return record


Page = tuple[list[dict[str, Any]], tuple[int, str] | None, int | None]  # rows, where the next page starts, total


def _stored_page(segment: str | None, frequency: str | None, order: CustomerOrder, after: tuple[int, str] | None,
                 limit: int) -> Page:
    """One page from the stored segment index, shown as classified right now; the total counts stored segments
    (None where the store cannot count it cheaply: DynamoDB with both filters).

    Right after a day threshold passes (e.g. midnight) a stored segment can be stale until the next evaluation;
    such rows are left out rather than shown under a filter they no longer match, and paging still continues
    after the last row scanned.
    """
    ctx = context()
    classifier = ctx.classifier()
    now = ctx.clock()
    records = ctx.store.list_customers_sorted(segment, frequency, order, after, limit)
    data = []
    for record, classification in zip(records, classifier.classify_many([r.facts for r in records], now),
                                      strict=True):
        if _matches(classification, segment, frequency):
            data.append(customer_json(record, classification))
    last = order.position(records[-1]) if len(records) == limit else None
    return data, last, ctx.store.count_customers_where(segment, frequency)


def _evaluated_page(segment: str | None, frequency: str | None, order: CustomerOrder, after: tuple[int, str] | None,
                    limit: int, as_of: datetime) -> Page:
    """One page of everyone classified at `as_of`; one extra match tells whether another page exists. Everyone is
    classified anyway, so the total of matches comes with it."""
    total = 0

    def after_cursor() -> Iterator[tuple[CustomerRecord, Classification]]:
        nonlocal total
        for record, classification in _classified_at(as_of):
            if _matches(classification, segment, frequency):
                total += 1
                if after is None or _beyond(order, order.position(record), after):
                    yield record, classification

    choose = heapq.nlargest if order.descending else heapq.nsmallest
    page = choose(limit + 1, after_cursor(), key=lambda match: order.position(match[0]))
    more = len(page) > limit
    page = page[:limit]
    return [customer_json(r, c) for r, c in page], order.position(page[-1][0]) if more else None, total


def _beyond(order: CustomerOrder, position: tuple[int, str], after: tuple[int, str]) -> bool:
    return position < after if order.descending else position > after


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
        yield from zip(batch, classifier.classify_many([r.facts for r in batch], as_of), strict=True)


def _matches(classification: Classification, segment: str | None, frequency: str | None) -> bool:
    return (segment is None or classification.segment == segment) and \
        (frequency is None or classification.purchase_frequency == frequency)
