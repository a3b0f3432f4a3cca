"""The dashboard at /: server-rendered pages for people, signed in with an API key kept only as an HMAC in the
signed session cookie. Segments, transitions per day, the event queue with replay, customers with search, and a
banner on every signed-in page while the rules file is refused or webhook delivery is failing or behind.

SESSION_SECRET signs the cookie (else a secret derived from the API keys); the cookie is Secure unless
DASHBOARD_INSECURE_COOKIE=true, for plain-HTTP tests. A session ends at sign-out (in every worker process), after
SESSION_IDLE_MINUTES without a page and SESSION_HOURS after sign-in. Replay needs a write key and the session's CSRF
token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, NotFound

from worker.api.auth import key_failures, key_matches
from worker.api.context import context
from worker.api.customers import frequency_names, segment_names
from worker.api.events import STATUSES
from worker.settings import Settings
from worker.store.base import SegmentSummary

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__, template_folder="templates")

SESSION_HOURS = 12  # the longest a session lasts, however busy
SESSION_IDLE_MINUTES = 30  # a session without a page for longer is over
CHART_DAYS = 90
PAGE_SIZE = 50
SEARCH_LIMIT = 200
SEARCH_MAX_CHARS = 200
DEAD_ON_OVERVIEW = 10
# Delivery runs every few seconds and the default retry schedule tries again after 5, 30, 120 and 600 s: an event
# still pending after ten minutes has failed four attempts in a row, or no worker is delivering at all. A backlog
# paced at max_per_second shows here too, rightly: its customers are waiting for their campaign either way.
DELIVERY_BEHIND_SECONDS = 600
SEGMENT_COLOURS = 6  # seg-0 ... seg-5 in dashboard.css; further segments reuse them
# Everything comes from this origin: no inline script or style, no CDN, no framing, forms post only here.
CONTENT_SECURITY_POLICY = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

_FINGERPRINTS = "dashboard_key_fingerprints"
_SESSION_KEY = "key"  # the HMAC of the key the session signed in with, never the key
_SESSION_CSRF = "csrf"
_SESSION_SINCE = "since"  # when it signed in, whole seconds by the app's clock
_SESSION_SEEN = "seen"  # its latest page, likewise: moved on every page, so idle time counts from the last one
# A signed cookie cannot be recalled, and every server process must refuse it once its holder signs out, so the
# store's meta keeps a sign-out mark per key: a random value, replaced by a fresh one at every sign-out with that
# key. A session carries the mark its key had when it signed in and is over once the stored mark differs. Each
# write is a new random value, so no write, however late or concurrent, brings back an old mark or the sessions
# under it: no lock and no list to prune, one meta row per key, one read per page and one write per sign-out.
# The price: signing out ends every session of that key, in every browser.
_SESSION_SIGN_OUT = "sign_out"  # its key's sign-out mark when it signed in
_SIGN_OUT_META = "dashboard_sign_out:"  # + a hash of the key's fingerprint, never the fingerprint the cookie holds
_PUBLIC_ENDPOINTS = ("dashboard.signin",)
# Where a replay returns to: a fixed page, never a URL from the form, so it cannot redirect off-site.
_BACK_TO = {"overview": ("dashboard.overview", {}), "events": ("dashboard.events", {"status": "dead"})}


def fingerprint(secret: bytes, key: str) -> str:
    """What a session keeps of the key it signed in with: useless without the secret, and no way back to the key."""
    return hmac.new(secret, b"dashboard-key\0" + key.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Fingerprints:
    """Fingerprints of the configured keys: what a signed-in session is compared against on every request."""

    secret: bytes
    read: tuple[str, ...]
    write: tuple[str, ...]

    def of(self, key: str) -> str:
        return fingerprint(self.secret, key)


def install_dashboard_session(app: Flask, settings: Settings) -> None:
    """The session cookie the dashboard signs in with: signed, HttpOnly, SameSite=Lax, Secure unless told not."""
    secret = session_secret(settings)
    app.secret_key = secret
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.dashboard_insecure_cookie,
        # The cookie lapses after the idle time by the wall clock too; _session_over decides by the app's clock.
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=SESSION_IDLE_MINUTES),
    )
    read_keys = dict.fromkeys(settings.api_keys + settings.admin_api_keys)
    app.extensions[_FINGERPRINTS] = _Fingerprints(secret, tuple(fingerprint(secret, key) for key in read_keys),
                                                  tuple(fingerprint(secret, key) for key in settings.write_keys))


def session_secret(settings: Settings) -> bytes:
    """SESSION_SECRET, else an HMAC of all the API keys: every server process derives the same secret, and
    changing any key signs everybody out. Without keys nobody can sign in, so a random secret will do."""
    if settings.session_secret:
        return settings.session_secret.encode("utf-8")
    keys = sorted(set(settings.api_keys + settings.admin_api_keys))
    if not keys:
        return secrets.token_bytes(32)
    return hmac.new(b"segment-worker dashboard session", "\n".join(keys).encode("utf-8"), hashlib.sha256).digest()


# --- guard ----------------------------------------------------------------------------------------------------

@bp.before_request
def require_session() -> Response | None:
    g.access = _session_access()
    if g.access is None and request.endpoint not in _PUBLIC_ENDPOINTS:
        return redirect(url_for("dashboard.signin"))
    if request.method == "POST":
        _check_csrf()
    return None


@bp.after_request
def add_content_security_policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@bp.errorhandler(HTTPException)
def error_page(error: HTTPException) -> tuple[str, int]:
    return render_template("dashboard/error.html", error=error), error.code or 500


@bp.context_processor
def page_helpers() -> dict[str, Any]:
    return {"access": g.get("access"), "csrf_token": csrf_token, "when": when, "day": day, "amount": amount,
            "number": number, "age": age, "banners": banners()}


def _session_access() -> str | None:
    """'write', 'read' or None: the session's key fingerprint checked against the keys configured now, then the
    session against its lifetimes and its key's sign-outs. A session that is over is cleared, saying why."""
    mark = session.get(_SESSION_KEY)
    if not isinstance(mark, str):
        return None
    fingerprints: _Fingerprints = current_app.extensions[_FINGERPRINTS]
    can_read = key_matches(mark, fingerprints.read)
    can_write = key_matches(mark, fingerprints.write)
    if not (can_read or can_write):
        return None
    why = _session_over(mark)
    if why is not None:
        session.clear()
        flash(why)
        return None
    return "write" if can_write else "read"


def _session_over(key_fingerprint: str) -> str | None:
    """Why this session is over, or None while it lasts (then its latest page is now)."""
    now = _seconds(context().clock())
    since, seen = session.get(_SESSION_SINCE), session.get(_SESSION_SEEN)
    if not isinstance(since, int) or not isinstance(seen, int):
        return "This session has ended; sign in again."
    if now - seen > SESSION_IDLE_MINUTES * 60:
        return f"Signed out after {SESSION_IDLE_MINUTES} minutes without activity; sign in again."
    if now - since > SESSION_HOURS * 3600:
        return f"Signed out {SESSION_HOURS} hours after signing in; sign in again."
    if session.get(_SESSION_SIGN_OUT) != _sign_out_mark(key_fingerprint):
        return "This session was signed out; sign in again."
    session[_SESSION_SEEN] = now  # only the cookie changes: nothing is written to the store per page
    return None


def _sign_out_mark(key_fingerprint: str) -> str:
    """The key's current sign-out mark; '' until it first signs out."""
    return context().store.get_meta(_sign_out_meta_key(key_fingerprint)) or ""


def _sign_out_meta_key(key_fingerprint: str) -> str:
    return _SIGN_OUT_META + hashlib.sha256(key_fingerprint.encode("utf-8")).hexdigest()[:32]


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def csrf_token() -> str:
    token = session.get(_SESSION_CSRF)
    if not isinstance(token, str):
        token = session[_SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


def _check_csrf() -> None:
    expected = session.get(_SESSION_CSRF)
    sent = request.form.get("csrf_token", "")
    if isinstance(expected, str) and hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        return
    hint = ""
    if not request.is_secure and current_app.config["SESSION_COOKIE_SECURE"]:
        hint = (" This page came over plain HTTP but the session cookie is HTTPS-only: use HTTPS, or set "
                "DASHBOARD_INSECURE_COOKIE=true on a machine nobody else can reach.")
    raise BadRequest("This form has expired or did not come from this dashboard; reload the page and try again."
                     + hint)


# --- sign in and out ------------------------------------------------------------------------------------------

@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
    if request.method == "GET":
        if g.access is not None:
            return redirect(url_for("dashboard.overview"))
        return render_template("dashboard/signin.html", refused=False)
    fingerprints: _Fingerprints = current_app.extensions[_FINGERPRINTS]
    address, now = request.remote_addr or "", context().clock()
    wait = key_failures().retry_after(address, now)  # the same count as /api's: one guesser, one budget
    if wait is not None:
        return (render_template("dashboard/signin.html", refused=False, retry_after=wait), 429,
                {"Retry-After": str(wait)})
    key = request.form.get("api_key", "").strip()
    if not key or not key_matches(fingerprints.of(key), fingerprints.read):
        log.warning("dashboard sign-in refused for %s", address)
        if key:
            key_failures().record(address, now)
        return render_template("dashboard/signin.html", refused=True, no_keys=not fingerprints.read), 401
    session.clear()  # a fresh session (and CSRF token) for the signed-in person
    session.permanent = True
    session[_SESSION_KEY] = fingerprints.of(key)
    session[_SESSION_SIGN_OUT] = _sign_out_mark(session[_SESSION_KEY])
    session[_SESSION_SINCE] = session[_SESSION_SEEN] = _seconds(now)
    csrf_token()
    log.info("dashboard sign-in with a %s key from %s",
             "write" if key_matches(session[_SESSION_KEY], fingerprints.write) else "read", request.remote_addr)
    return redirect(url_for("dashboard.overview"))


@bp.post("/signout")
def signout() -> Response:
    # A new mark refuses this cookie everywhere, kept or copied: clearing it here only tidies this browser.
    context().store.set_meta(_sign_out_meta_key(session[_SESSION_KEY]), secrets.token_urlsafe(18))
    session.clear()
    log.info("dashboard sign-out from %s: every session of that key has ended", request.remote_addr)
    flash("Signed out. Any other browser signed in with this key is signed out too.")
    return redirect(url_for("dashboard.signin"))


# --- banners: what is wrong right now -------------------------------------------------------------------------

@dataclass(frozen=True)
class Banners:
    """What the top of every signed-in page warns about; the defaults mean all is well."""

    rules_error: str | None = None  # the same text as /healthz's rulesError
    rules_file: str = ""
    dead: int = 0
    waited_seconds: float | None = None  # the oldest pending event's age, once past DELIVERY_BEHIND_SECONDS
    behind_after_seconds: float = DELIVERY_BEHIND_SECONDS


def banners() -> Banners:
    """This request's banners, worked out once (a page and its error page share them); none for the signed out."""
    if g.get("access") is None:
        return Banners()
    if "banners" not in g:
        g.banners = _current_banners()
    return g.banners


def _current_banners() -> Banners:
    ctx = context()
    ctx.rules()  # first: it notices a changed file, which sets or clears the error read below
    source = ctx.rules_source
    try:
        counts = event_counts()
    except Exception:
        # The page still helps without its delivery banner; /healthz reports a store that does not answer.
        log.exception("dashboard: cannot read the event queue for the delivery banner")
        return Banners(source.error, str(source.path))
    oldest = float(counts.get("oldest_pending_age_seconds", 0.0))
    return Banners(source.error, str(source.path), int(counts.get("dead", 0)),
                   oldest if oldest > DELIVERY_BEHIND_SECONDS else None)


def event_counts() -> dict[str, float]:
    """The event queue's counts, read from the store once per request, so a page and its banner agree."""
    if "event_counts" not in g:
        ctx = context()
        g.event_counts = ctx.store.event_counts(ctx.clock())
    return g.event_counts


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
        filterable=set(segment_names(ctx.rules())),
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
    segment = _choice("segment", segment_names(rules))
    frequency = _choice("frequency", frequency_names(rules))
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
        segments=segment_names(rules), frequencies=frequency_names(rules), more=more, next_after=next_after,
        search_limit=SEARCH_LIMIT, search_max_chars=SEARCH_MAX_CHARS, colours=_colour_classes(segment_names(rules)),
    )


@bp.get("/customers/<path:contact_id>")
def customer(contact_id: str) -> str:
    ctx = context()
    record = ctx.store.get_customer(contact_id)
    if record is None:
        raise NotFound(f"No customer has the id '{contact_id}'.")
    now = ctx.clock()
    names = segment_names(ctx.rules())
    return render_template(
        "dashboard/customer.html", record=record, now=now, classification=ctx.classifier().classify(record.facts, now),
        transitions=ctx.store.transitions_for(contact_id), colours=_colour_classes(names),
    )


@bp.get("/events")
def events() -> str:
    ctx = context()
    status = _choice("status", STATUSES)
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


def _choice(name: str, valid: list[str] | tuple[str, ...]) -> str | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if raw not in valid:
        raise BadRequest(f"Unknown {name} '{raw}'; choose one of {', '.join(valid)}.")
    return raw


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
    names = segment_names(context().rules())
    by_name = {row.segment: row for row in stored}
    ordered = names + sorted(set(by_name) - set(names))
    return {name: by_name.get(name, SegmentSummary(name, 0, 0)) for name in ordered}


def _segment_rows(summary: dict[str, SegmentSummary]) -> list[SegmentRow]:
    total = sum(row.customers for row in summary.values())
    colours = _colour_classes(list(summary))
    return [SegmentRow(name, row.customers, row.total_cents, row.customers / total if total else 0.0,
                       colours[name]) for name, row in summary.items()]


def _colour_classes(names: list[str]) -> defaultdict[str, str]:
    classes = defaultdict(lambda: "seg-none")
    classes.update({name: f"seg-{index % SEGMENT_COLOURS}" for index, name in enumerate(names)})
    return classes


# --- charts (plain SVG, drawn by the templates from these numbers) -------------------------------------------

@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    css: str
    y: float
    text_y: float
    width: float
    value_x: float


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars in a BARS_WIDTH x height viewBox: labels left, bars from BARS_LEFT, values after them."""

    bars: list[Bar]
    width: float
    height: float
    left: float
    bar_height: float


BARS_WIDTH = 440.0
BARS_LEFT = 90.0
BARS_MAX = 240.0
BAR_HEIGHT = 22.0
BAR_GAP = 8.0


def horizontal_bars(rows: list[tuple[str, int, str, str]]) -> BarChart:
    """(label, size, value text, css class) rows as one chart, the largest bar BARS_MAX wide."""
    largest = max((size for _, size, _, _ in rows), default=0)
    bars = []
    for index, (label, size, text, css) in enumerate(rows):
        width = round(BARS_MAX * size / largest, 1) if largest else 0.0
        y = index * (BAR_HEIGHT + BAR_GAP)
        bars.append(Bar(label, text, css, y, y + BAR_HEIGHT * 0.7, width, BARS_LEFT + width + 6))
    return BarChart(bars, BARS_WIDTH, max(len(rows) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP, BAR_HEIGHT), BARS_LEFT,
                    BAR_HEIGHT)


@dataclass(frozen=True)
class Block:
    y: float
    height: float
    css: str


@dataclass(frozen=True)
class Column:
    day: str
    x: float
    total: int
    blocks: list[Block]
    detail: str  # '1 to VIP, 2 to New': segments in the rules' order

    @property
    def title(self) -> str:
        plural = "" if self.total == 1 else "s"
        return f"{self.day}: {self.total} transition{plural}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class DayChart:
    """A columns chart in a width x height viewBox: the plot spans (left, top) to (right, bottom), y ticks at the
    left, date labels below."""

    columns: list[Column]
    column_width: float
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    legend: list[tuple[str, str]]
    total: int
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


# About the pixel size it is shown at, so that its text reads like the page's.
CHART_WIDTH = 1000.0
CHART_HEIGHT = 220.0
PLOT_LEFT = 40.0
PLOT_RIGHT = CHART_WIDTH - 24  # room for the last date label
PLOT_TOP = 10.0
PLOT_BOTTOM = 190.0
X_LABEL_EVERY = 15


def transitions_chart(counts: list[tuple[str, str, int]], today: date, days: int, segments: list[str]) -> DayChart:
    """Stacked columns per day, oldest left, one colour per segment entered (in `segments` order, then any other),
    scaled to the busiest day."""
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for day_text, segment, count in counts:
        per_day[day_text][segment] = per_day[day_text].get(segment, 0) + count
    shown = [(today - timedelta(days=offset)).isoformat() for offset in range(days - 1, -1, -1)]
    entered = {d: per_day.get(d, {}) for d in shown}
    names = segments + sorted({s for e in entered.values() for s in e} - set(segments))
    colours = _colour_classes(names)
    top = _round_up(max((sum(e.values()) for e in entered.values()), default=0))
    plot_height = PLOT_BOTTOM - PLOT_TOP
    step = (PLOT_RIGHT - PLOT_LEFT) / days
    columns, x_labels = [], []
    for index, day_text in enumerate(shown):
        x = PLOT_LEFT + index * step
        blocks, y = [], PLOT_BOTTOM
        for name in (n for n in names if entered[day_text].get(n)):
            height = plot_height * entered[day_text][name] / top
            y -= height
            blocks.append(Block(round(y, 2), round(height, 2), colours[name]))
        detail = ", ".join(f"{entered[day_text][n]} to {n}" for n in names if entered[day_text].get(n))
        columns.append(Column(day_text, round(x, 2), sum(entered[day_text].values()), blocks, detail))
        if index % X_LABEL_EVERY == 0 or index == days - 1:
            x_labels.append((round(x + step / 2, 2), date.fromisoformat(day_text).strftime("%b %d")))
    ticks = [(round(PLOT_BOTTOM - plot_height * share, 2), number(top * share)) for share in (0, 0.5, 1)]
    used = [n for n in names if any(n in e for e in entered.values())]
    return DayChart(columns, round(step * 0.8, 2), ticks, x_labels, [(n, colours[n]) for n in used],
                    sum(c.total for c in columns), CHART_WIDTH, CHART_HEIGHT, PLOT_LEFT, PLOT_RIGHT, PLOT_TOP,
                    PLOT_BOTTOM)


def _round_up(value: int) -> int:
    """The chart's top: the first of 2, 4, 10, 20, 40, 50, 100, 200 ... not below `value`; always even, so the
    middle gridline is a whole number."""
    magnitude = 1
    while True:
        for factor in (2, 4, 5, 10):
            if factor * magnitude >= value and factor * magnitude % 2 == 0:
                return factor * magnitude
        magnitude *= 10


# --- formatting -----------------------------------------------------------------------------------------------

def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def day(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d")


def amount(cents: int) -> str:
    """Money for people: 12,450.00 (the API keeps the plain '12450.00')."""
    return f"{Decimal(cents) / 100:,.2f}"


def number(value: float) -> str:
    return f"{int(value):,}"


def age(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"
