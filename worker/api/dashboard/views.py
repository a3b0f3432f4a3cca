"""The dashboard's pages: the overview (segments, transitions per day, the event queue), the events by status
with replay one at a time or in bulk, and the helpers every page's template gets. Customers are in customers.py."""

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
from worker.api.dashboard.customers import UNKNOWN_CHOICE
from worker.api.dashboard.formats import age, amount, day, number, when
from worker.api.dashboard.session import csrf_token
from worker.api.events import MAX_CAMPAIGN_CHARS, STATUSES
from worker.api.params import choice_param
from worker.store.base import BULK_REPLAY_LIMIT, DEAD, SegmentSummary

log = logging.getLogger(__name__)

CHART_DAYS = 90
PAGE_SIZE = 50
DEAD_ON_OVERVIEW = 10
# Where a replay returns to: a fixed page, or the replayed event's own customer (read from the store), never a URL
# from the form, so it cannot redirect off-site.
_BACK_TO = {"overview": ("dashboard.overview", {}), "events": ("dashboard.events", {"status": "dead"})}
_WRITE_KEY_NEEDED = "Replaying events needs a key from ADMIN_API_KEYS; this session signed in with a read key."


@bp.context_processor
def page_helpers() -> dict[str, Any]:
    currency = context().rules().currency
    return {"access": g.get("access"), "csrf_token": csrf_token, "when": when, "day": day,
            "amount": lambda cents: amount(cents, currency), "number": number, "age": age, "banners": banners()}


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
        spend_bars=horizontal_bars([(r.segment, r.total_cents, amount(r.total_cents, ctx.rules().currency), r.css)
                                    for r in rows]),
        chart=chart,
        queue=event_counts(),
        dead=ctx.store.list_events("dead", DEAD_ON_OVERVIEW),
    )


@bp.get("/events")
def events() -> str:
    ctx = context()
    status = choice_param("status", STATUSES, UNKNOWN_CHOICE)
    after = request.args.get("after") or None
    listed = ctx.store.list_events(status, PAGE_SIZE, after)
    return render_template(
        "dashboard/events.html", events=listed, status=status, statuses=STATUSES,
        queue=event_counts(), campaigns=list(ctx.rules().campaigns),
        next_after=listed[-1].id if len(listed) == PAGE_SIZE else None,
    )


@bp.post("/events/<event_id>/replay")
def replay(event_id: str) -> Response:
    if g.access != "write":
        raise Forbidden(_WRITE_KEY_NEEDED)
    ctx = context()
    if not ctx.store.replay_event(event_id, ctx.clock()):
        raise NotFound(f"No event has the id '{event_id}'.")
    log.info("dashboard: event %s replayed", event_id)
    flash(f"Event {event_id} is pending again; the next delivery run sends it.")
    if request.form.get("back") == "customer":
        event = ctx.store.get_event(event_id)
        if event is not None:
            return redirect(url_for("dashboard.customer", contact_id=event.contact_id))
    endpoint, args = _BACK_TO.get(request.form.get("back", ""), _BACK_TO["overview"])
    return redirect(url_for(endpoint, **args))


@bp.get("/events/replay")
def confirm_bulk_replay() -> str:
    """What a bulk replay would do, to confirm: how many dead events (of the campaign chosen) it makes pending."""
    if g.access != "write":
        raise Forbidden(_WRITE_KEY_NEEDED)
    campaign = _campaign(request.args.get("campaign", ""))
    count = context().store.count_events(DEAD, campaign)
    return render_template("dashboard/events_replay.html", campaign=campaign, count=count,
                           per_request=BULK_REPLAY_LIMIT)


@bp.post("/events/replay")
def bulk_replay() -> Response:
    if g.access != "write":
        raise Forbidden(_WRITE_KEY_NEEDED)
    ctx = context()
    campaign = _campaign(request.form.get("campaign", ""))
    queued = ctx.store.replay_dead_events(ctx.clock(), campaign, BULK_REPLAY_LIMIT)
    remaining = ctx.store.count_events(DEAD, campaign)
    log.info("dashboard: bulk replay of %d dead event(s) of %s", queued,
             f"campaign {campaign}" if campaign else "every campaign")
    which = f" of campaign {campaign}" if campaign else ""
    message = f"{number(queued)} dead event{'' if queued == 1 else 's'}{which} pending again; the next delivery " \
              "runs send them."
    if remaining:
        message += f" {number(remaining)} still dead (at most {number(BULK_REPLAY_LIMIT)} a replay): replay again."
    flash(message)
    return redirect(url_for("dashboard.events", status=DEAD))


def _campaign(raw: str) -> str | None:
    """A campaign name from a form or query ('' for every campaign)."""
    name = raw.strip()
    if len(name) > MAX_CAMPAIGN_CHARS:
        raise BadRequest(f"A campaign name has at most {MAX_CAMPAIGN_CHARS} characters.")
    return name or None


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

