"""The dashboard's pages: the overview (segments, transitions per day, the event queue), customers with search,
one customer, the events by status with replay, and the helpers every page's template gets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any

from flask import Response, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from worker.api.context import context
from worker.api.dashboard.banners import banners, event_counts
from worker.api.dashboard.blueprint import bp
from worker.api.dashboard.charts import colour_classes, horizontal_bars, transitions_chart
from worker.api.dashboard.formats import age, amount, day, number, when
from worker.api.dashboard.session import csrf_token
from worker.api.events import STATUSES
from worker.api.params import choice_param
from worker.store.base import SegmentSummary

log = logging.getLogger(__name__)

CHART_DAYS = 90
PAGE_SIZE = 50
SEARCH_LIMIT = 200
SEARCH_MAX_CHARS = 200
DEAD_ON_OVERVIEW = 10
# Worded for people reading a page, unlike the API's "segment: unknown value ...".
UNKNOWN_CHOICE = "Unknown {name} '{raw}'; choose one of {valid}."
# Where a replay returns to: a fixed page, never a URL from the form, so it cannot redirect off-site.
_BACK_TO = {"overview": ("dashboard.overview", {}), "events": ("dashboard.events", {"status": "dead"})}


@bp.context_processor
def page_helpers() -> dict[str, Any]:
    return {"access": g.get("access"), "csrf_token": csrf_token, "when": when, "day": day, "amount": amount,
            "number": number, "age": age, "banners": banners()}


# --- pages ------------------------------------------------------------------------------------------------

@bp.get("/")
def overview() -> str:
    ctx = context()
    now = ctx.clock()
    summary = _segment_order(ctx.store.segment_summary())
    rows = _segment_rows(summary)
    today = now.astimezone(timezone.utc).date()
    since = datetime.combine(today - timedelta(days=CHART_DAYS - 1), time(), tzinfo=timezone.utc)
    chart = transitions_chart(ctx.store.transitions_per_day(since), today, CHART_DAYS, list(summary))
    customers = ctx.store.count_customers()
    return render_template(
        "dashboard/overview.html",
        now=now,
        segments=rows,
        filterable=set(ctx.rules().segment_names),
        customers=customers,
        unevaluated=customers - sum(row.customers for row in rows),
        customer_bars=horizontal_bars([(r.segment, r.customers, number(r.customers), r.css) for r in rows]),
        spend_bars=horizontal_bars([(r.segment, r.total_cents, amount(r.total_cents), r.css) for r in rows]),
        chart=chart,
        queue=event_counts(),
        dead=ctx.store.list_events("dead", DEAD_ON_OVERVIEW),
    )


@bp.get("/customers")
def customers() -> str:
    ctx = context()
    rules = ctx.rules()
    segment = choice_param("segment", rules.segment_names, UNKNOWN_CHOICE)
    frequency = choice_param("frequency", rules.frequency_names, UNKNOWN_CHOICE)
    text = request.args.get("q", "").strip()
    if len(text) > SEARCH_MAX_CHARS:
        raise BadRequest(f"Search for at most {SEARCH_MAX_CHARS} characters.")
    after = request.args.get("after") or None
    if text:
        found = ctx.store.search_customers(text, SEARCH_LIMIT)
        records = [r for r in found if (segment is None or r.segment == segment)
                   and (frequency is None or r.purchase_frequency == frequency)]
        more, next_after = len(found) == SEARCH_LIMIT, None
    else:
        records = ctx.store.list_customers(segment, frequency, after, PAGE_SIZE)
        more = len(records) == PAGE_SIZE
        next_after = records[-1].contact_id if more else None
    return render_template(
        "dashboard/customers.html", records=records, q=text, segment=segment, frequency=frequency,
        segments=rules.segment_names, frequencies=rules.frequency_names, more=more, next_after=next_after,
        search_limit=SEARCH_LIMIT, search_max_chars=SEARCH_MAX_CHARS, colours=colour_classes(rules.segment_names),
    )


@bp.get("/customers/<path:contact_id>")
def customer(contact_id: str) -> str:
    ctx = context()
    record = ctx.store.get_customer(contact_id)
    if record is None:
        raise NotFound(f"No customer has the id '{contact_id}'.")
    now = ctx.clock()
    names = list(ctx.rules().segment_names)
    return render_template(
        "dashboard/customer.html", record=record, now=now, classification=ctx.classifier().classify(record.facts, now),
        transitions=ctx.store.transitions_for(contact_id), colours=colour_classes(names),
    )


@bp.get("/events")
def events() -> str:
    ctx = context()
    status = choice_param("status", STATUSES, UNKNOWN_CHOICE)
    after = request.args.get("after") or None
    listed = ctx.store.list_events(status, PAGE_SIZE, after)
    return render_template(
        "dashboard/events.html", events=listed, status=status, statuses=STATUSES,
        queue=event_counts(),
        next_after=listed[-1].id if len(listed) == PAGE_SIZE else None,
    )


@bp.post("/events/<event_id>/replay")
def replay(event_id: str) -> Response:
    if g.access != "write":
        raise Forbidden("Replaying events needs a key from ADMIN_API_KEYS; this session signed in with a read key.")
    ctx = context()
    if not ctx.store.replay_event(event_id, ctx.clock()):
        raise NotFound(f"No event has the id '{event_id}'.")
    log.info("dashboard: event %s replayed", event_id)
    flash(f"Event {event_id} is pending again; the next delivery run sends it.")
    endpoint, args = _BACK_TO.get(request.form.get("back", ""), _BACK_TO["overview"])
    return redirect(url_for(endpoint, **args))


# --- segments -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentRow:
    segment: str
    customers: int
    total_cents: int
    share: float
    css: str


def _segment_order(stored: list[SegmentSummary]) -> dict[str, SegmentSummary]:
    """The rules' segments in priority order, then any segment of earlier rules still stored."""
    names = list(context().rules().segment_names)
    by_name = {row.segment: row for row in stored}
    ordered = names + sorted(set(by_name) - set(names))
    return {name: by_name.get(name, SegmentSummary(name, 0, 0)) for name in ordered}


def _segment_rows(summary: dict[str, SegmentSummary]) -> list[SegmentRow]:
    total = sum(row.customers for row in summary.values())
    colours = colour_classes(list(summary))
    return [SegmentRow(name, row.customers, row.total_cents, row.customers / total if total else 0.0,
                       colours[name]) for name, row in summary.items()]

