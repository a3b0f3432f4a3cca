"""The dashboard's customer pages: the table (filters, search, sorting, pages both ways, the total), its CSV export,
and one customer (metrics, RFM, predicted figures, history, events with replay)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, render_template, request, stream_with_context
from markupsafe import Markup
from werkzeug.exceptions import BadRequest, NotFound

from rules import Rules
from worker.api.context import context
from worker.api.dashboard.blueprint import bp
from worker.api.dashboard.charts import colour_classes
from worker.api.params import DEFAULT_SORT, choice_param, decode_cursor, decode_position, encode_position, sort_param
from worker.export import csv_chunks, export_filename, export_rows
from worker.prediction import DISABLED, SavedModel, saved_model, state_json
from worker.store.base import CustomerOrder, CustomerRecord

PAGE_SIZE = 50
SEARCH_LIMIT = 200
SEARCH_MAX_CHARS = 200
CUSTOMER_EVENTS = 50  # the latest events shown on a customer's page
# Worded for people reading a page, unlike the API's "segment: unknown value ...".
UNKNOWN_CHOICE = "Unknown {name} '{raw}'; choose one of {valid}."
# The sort choices in the filter form, in the API's words (see worker/api/params.py SORTS).
SORT_CHOICES = (("contactID", "Customer ID, A to Z"), ("-contactID", "Customer ID, Z to A"),
                ("-totalSpend", "Spend, highest first"), ("totalSpend", "Spend, lowest first"),
                ("-lastOrderDate", "Last order, newest first"), ("lastOrderDate", "Last order, oldest first"))


@dataclass(frozen=True)
class SortableColumn:
    """A column header that sorts the table: the first click asks for `first`, the next for `other`."""

    label: str
    first: str
    other: str
    ascending: str  # which of the two reads as ascending in this column (days since: -lastOrderDate)

    def state(self, sort: str) -> str:
        """aria-sort for the table sorted by `sort`."""
        if sort not in (self.first, self.other):
            return "none"
        return "ascending" if sort == self.ascending else "descending"

    def click(self, sort: str) -> str:
        return self.other if sort == self.first else self.first


COLUMNS = {
    "customer": SortableColumn("Customer", "contactID", "-contactID", "contactID"),
    "spend": SortableColumn("Spend", "-totalSpend", "totalSpend", "totalSpend"),
    "last_order": SortableColumn("Last order", "-lastOrderDate", "lastOrderDate", "lastOrderDate"),
    # days since the last order is the last order date reversed
    "days_since": SortableColumn("Days since", "lastOrderDate", "-lastOrderDate", "-lastOrderDate"),
}


@dataclass(frozen=True)
class CustomerPage:
    records: list[CustomerRecord]
    next_after: str | None  # the cursor of the next page, if there is one
    previous_before: str | None  # the cursor of the page before, if there is one


def _filters(rules: Rules) -> tuple[str | None, str | None]:
    """The table's segment and purchase-frequency filters (the export takes the same), a 400 page for others."""
    return (choice_param("segment", rules.segment_names, UNKNOWN_CHOICE),
            choice_param("frequency", rules.frequency_names, UNKNOWN_CHOICE))


@bp.get("/customers")
def customers() -> str:
    ctx = context()
    rules = ctx.rules()
    segment, frequency = _filters(rules)
    sort, order = sort_param("sort", UNKNOWN_CHOICE)
    text = _search_text()
    if text:
        found = ctx.store.search_customers(text, SEARCH_LIMIT)
        matching = [r for r in found if (segment is None or r.segment == segment)
                    and (frequency is None or r.purchase_frequency == frequency)]
        page, more, total = CustomerPage(order.sorted(matching), None, None), len(found) == SEARCH_LIMIT, None
    else:
        page, more = _page(segment, frequency, sort, order), False
        total = ctx.store.count_customers_where(segment, frequency)
    now = ctx.clock()
    classifier = ctx.classifier()
    days = {r.contact_id: classifier.classify(r.facts, now).last_order_days_ago for r in page.records}
    return render_template(
        "dashboard/customers.html", page=page, records=page.records, days=days, total=total, q=text,
        segment=segment, frequency=frequency, sort=sort, sort_arg=None if sort == DEFAULT_SORT else sort,
        sort_choices=SORT_CHOICES, columns=COLUMNS, segments=rules.segment_names,
        frequencies=rules.frequency_names, more=more, search_limit=SEARCH_LIMIT, search_max_chars=SEARCH_MAX_CHARS,
        colours=colour_classes(rules.segment_names),
    )


@bp.get("/customers.csv")
def export_customers() -> Response:
    """What the table shows (its filters and search; every match, not one page) as the API's CSV, streamed."""
    ctx = context()
    rules = ctx.rules()
    segment, frequency = _filters(rules)
    rows = export_rows(ctx.store, ctx.classifier(), ctx.clock(), segment, frequency, search=_search_text() or None)
    return Response(stream_with_context(csv_chunks(rows)), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{export_filename(segment, frequency)}"'})


@bp.get("/customers/<path:contact_id>")
def customer(contact_id: str) -> str:
    ctx = context()
    record = ctx.store.get_customer(contact_id)
    if record is None:
        raise NotFound(f"No customer has the id '{contact_id}'.")
    now = ctx.clock()
    rules = ctx.rules()
    rfm = ctx.store.rfm_cutoffs()
    classification = ctx.classifier().classify(record.facts, now)
    return render_template(
        "dashboard/customer.html", record=record, now=now, classification=classification,
        rfm_computed_at=None if rfm is None else rfm.computed_at, horizon_days=rules.prediction.horizon_days,
        no_prediction=None if classification.predicted else _no_prediction(record, rules),
        transitions=ctx.store.transitions_for(contact_id), colours=colour_classes(list(rules.segment_names)),
        events=ctx.store.events_for(contact_id, CUSTOMER_EVENTS)[::-1], events_shown=CUSTOMER_EVENTS,
    )


def _no_prediction(record: CustomerRecord, rules: Rules) -> Markup:
    """Why a customer's page has no predicted figures."""
    if not record.facts.order_count:
        return Markup("No prediction: this customer has no counted order.")
    saved = saved_model(context().store)
    if model_in_use(saved, rules):
        # a customer stored before purchase days were kept: the recount before the next fit gives them
        return Markup("No prediction for this customer yet: the days of its orders are counted before the next "
                      "model fit.")
    return model_missing(saved, rules)


def model_in_use(saved: SavedModel | None, rules: Rules) -> bool:
    """Whether customers are scored: the same test as worker.prediction.load_model."""
    return rules.prediction.enabled and saved is not None and saved.usable and saved.fitted_at is not None


def model_missing(saved: SavedModel | None, rules: Rules) -> Markup:
    """Why no customer has predicted figures, and what to do about it, in one line (the overview says it too)."""
    state = state_json(saved, rules)
    if state["status"] == DISABLED:
        return Markup("No churn predictions: <code>prediction.enabled</code> is false in rules.yaml; set it to true "
                      "and the scheduler fits the model.")
    every = refit_every(rules.prediction.refit_every_hours)
    if saved is None:  # state_json's reason names the command half-way; this says it once, in full
        return Markup("No churn predictions yet: the model has not been fitted. The scheduler fits it {}; "
                      "<code>python -m worker model fit</code> fits it now.").format(every)
    reason = str(state["reason"] or "the last fit gave no model").rstrip(".")
    return Markup("No churn predictions yet: {}. The scheduler tries again {}; <code>python -m worker model fit</code> "
                  "tries now.").format(reason, every)


def refit_every(hours: int) -> str:
    """How often the scheduler fits the model, in words: 'once a day', 'every 6 hours'."""
    if hours == 24:
        return "once a day"
    return "every hour" if hours == 1 else f"every {hours} hours"


def _page(segment: str | None, frequency: str | None, sort: str, order: CustomerOrder) -> CustomerPage:
    """One page after `?after=` (or the first), or the page before `?before=`: that is the page after the same
    row in the reversed order, read backwards. One row more than a page says whether the way on goes further."""
    store = context().store
    before = _position("before", sort)
    if before is not None:
        rows = store.list_customers_sorted(segment, frequency, order.reversed(), before, PAGE_SIZE + 1)
        if len(rows) >= PAGE_SIZE:  # else fewer than a page lie before (rows moved): show the first page instead
            records = rows[:PAGE_SIZE][::-1]
            earlier = len(rows) > PAGE_SIZE
            return CustomerPage(records, _token(sort, order.position(records[-1])),
                                _token(sort, order.position(records[0])) if earlier else None)
    after = None if before is not None else _position("after", sort)
    rows = store.list_customers_sorted(segment, frequency, order, after, PAGE_SIZE + 1)
    records = rows[:PAGE_SIZE]
    later = len(rows) > PAGE_SIZE
    return CustomerPage(records, _token(sort, order.position(records[-1])) if later else None,
                        _token(sort, order.position(records[0])) if after and records else None)


def _token(sort: str, position: tuple[int, str]) -> str:
    """A row's place in the URL: its contactID in the default order (as the table always had), else the API's
    cursor for the sort."""
    return position[1] if sort == DEFAULT_SORT else encode_position(sort, position)


def _position(name: str, sort: str) -> tuple[int, str] | None:
    raw = request.args.get(name) or None
    if raw is None:
        return None
    return (0, raw) if sort == DEFAULT_SORT else decode_position(decode_cursor(raw, name), sort, name)


def _search_text() -> str:
    text = request.args.get("q", "").strip()
    if len(text) > SEARCH_MAX_CHARS:
        raise BadRequest(f"Search for at most {SEARCH_MAX_CHARS} characters.")
    return text
