"""The dashboard's pages: the overview (segments, churn risk and predicted value, transitions per day, the event
queue), the events by status with replay one at a time or in bulk, and the helpers every page's template gets.
Customers are in customers.py."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from flask import Response, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest, Conflict, Forbidden, NotFound

from rules import Rules
from rules.schema import CHURN_BANDS
from worker.api.context import context
from worker.api.dashboard.banners import banners, event_counts
from worker.api.dashboard.blueprint import bp
from worker.api.dashboard.charts import colour_classes, horizontal_bars, transitions_chart
from worker.api.dashboard.customers import UNKNOWN_CHOICE, model_in_use, model_missing, refit_every
from worker.api.dashboard.formats import age, amount, day, number, when
from worker.api.dashboard.session import csrf_token
from worker.api.events import MAX_CAMPAIGN_CHARS, STATUSES
from worker.api.params import choice_param
from worker.prediction import FAILED, UNEVALUATED, SavedModel, saved_model
from worker.store.base import BULK_REPLAY_LIMIT, DEAD, HELD_OUT, HELD_OUT_NOT_REPLAYED, SegmentSummary

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
            "amount": lambda cents: amount(cents, currency), "number": number, "age": age, "percent": percent,
            "banners": banners()}


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
    rules = ctx.rules()
    saved = saved_model(ctx.store)
    in_use = model_in_use(saved, rules)
    return render_template(
        "dashboard/overview.html",
        now=now,
        segments=rows,
        filterable=set(rules.segment_names),
        churn=churn_card(saved, rules, {row.segment: row.css for row in rows}) if in_use else None,
        no_churn=None if in_use else model_missing(saved, rules),
        unevaluated_name=UNEVALUATED,
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
    event = ctx.store.get_event(event_id)
    if event is not None and event.status == HELD_OUT:
        raise Conflict(f"Event {event_id} is not replayed: {HELD_OUT_NOT_REPLAYED}.")
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



# --- churn risk and predicted value ---------------------------------------------------------------------------

BAR_WIDTH = 100.0  # the band bar's viewBox width: a block's width is its share in percent


@dataclass(frozen=True)
class BandBlock:
    """One churn band's part of a segment's bar, in a BAR_WIDTH-wide viewBox."""

    band: str
    x: float
    width: float


@dataclass(frozen=True)
class ChurnRow:
    """A segment in the model's summary; None where the stored summary lacks the figure (an old or partial one)."""

    segment: str
    css: str
    customers: int | None
    bands: dict[str, int | None]
    value_cents: int | None
    share: float | None  # of the predicted value of every segment

    @property
    def blocks(self) -> list[BandBlock]:
        known = [(band, count) for band, count in self.bands.items() if count]
        total = sum(count for _, count in known)
        blocks, done = [], 0
        for band, count in known:
            x = round(BAR_WIDTH * done / total, 2)
            done += count
            blocks.append(BandBlock(band, x, round(BAR_WIDTH * done / total - x, 2)))
        return blocks

    @property
    def bar_title(self) -> str:
        """The bar in words: 'Low 12 (60%), Medium 6 (30%), High 2 (10%)'."""
        total = sum(count for count in self.bands.values() if count)
        return ", ".join(f"{band} {number(count)} ({round(100 * count / total)}%)"
                         for band, count in self.bands.items() if count)


@dataclass(frozen=True)
class ChurnCard:
    """The model's per-segment summary as the overview shows it, with what a reader needs to trust it."""

    rows: list[ChurnRow]
    total: ChurnRow
    fitted_at: datetime | None
    customers: int | None  # with an order, that the model was fitted on
    horizon_days: int
    medium: str  # the band cut points, as percentages
    high: str
    refits: str  # 'once a day'
    failure: str | None  # why the last refit failed, when it did (these figures are the last good fit's)
    failed_at: datetime | None


def churn_card(saved: SavedModel, rules: Rules, colours: dict[str, str]) -> ChurnCard:
    """The summary saved with the fit, read leniently: a key missing from old or partial JSON shows as a dash."""
    settings = rules.prediction
    summary = _mapping(saved.summary)
    stored = _mapping(summary.get("segments"))
    names = [name for name in rules.segment_names if name in stored]
    names += sorted(set(stored) - set(names) - {UNEVALUATED}) + ([UNEVALUATED] if UNEVALUATED in stored else [])
    entries = {name: _mapping(stored[name]) for name in names}
    values = {name: _cents(entry.get("predictedClv12m")) for name, entry in entries.items()}
    all_value = sum(v for v in values.values() if v is not None)
    rows = [ChurnRow(name, colours.get(name, "seg-none"), _segment_customers(entry), _band_counts(entry),
                     values[name], None if values[name] is None or all_value <= 0 else values[name] / all_value)
            for name, entry in entries.items()]
    bands = _mapping(summary.get("bands"))
    return ChurnCard(
        rows=rows,
        total=ChurnRow("All segments", "", _sum(r.customers for r in rows),
                       {band: _sum(r.bands[band] for r in rows) for band in CHURN_BANDS},
                       _sum(values.values()), 1.0 if all_value > 0 else None),
        fitted_at=saved.fitted_at,
        customers=_whole(_mapping(saved.report).get("customers")),
        horizon_days=_whole(summary.get("horizonDays")) or settings.horizon_days,
        medium=percent(_fraction(bands.get("medium"), settings.churn_bands.medium)),
        high=percent(_fraction(bands.get("high"), settings.churn_bands.high)),
        refits=refit_every(settings.refit_every_hours),
        failure=str(saved.reason or "no reason was saved").rstrip(".") if saved.status == FAILED else None,
        failed_at=saved.checked_at if saved.status == FAILED else None,
    )


def percent(fraction: float | Decimal) -> str:
    """A 0..1 figure as a percentage, exact to the 4 places the model rounds to: 0.8123 -> '81.23%', 0.5 -> '50%'."""
    value = (Decimal(str(fraction)) * 100).quantize(Decimal("0.01")).normalize()
    return f"{value:f}%"


def _segment_customers(entry: dict[str, Any]) -> int | None:
    customers = _whole(entry.get("customers"))
    if customers is not None:
        return customers
    counts = _band_counts(entry).values()
    return None if None in counts else sum(c for c in counts if c is not None)


def _band_counts(entry: dict[str, Any]) -> dict[str, int | None]:
    stored = _mapping(entry.get("churnRiskBands"))
    return {band: _whole(stored.get(band)) for band in CHURN_BANDS}


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _whole(value: object) -> int | None:
    """A count from stored JSON, or None for anything else (missing, text, infinite, negative)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _cents(value: object) -> int | None:
    """A stored money string ('1234.56') as cents, or None when it is missing or not an amount."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int((Decimal(str(value)) * 100).to_integral_value())
    except (ArithmeticError, ValueError):
        return None


def _fraction(value: object, default: Decimal) -> Decimal:
    """A band cut point as the summary saved it ('0.8'), else the rules' (the same unless they changed since)."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return default
    try:
        fraction = Decimal(str(value))
        return fraction if 0 < fraction < 1 else default
    except ArithmeticError:  # not a number, or NaN (which refuses to compare)
        return default


def _sum(values: Any) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
