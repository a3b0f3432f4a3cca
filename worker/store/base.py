"""The store interface every backend implements, and the records it speaks in (domain words, not SQL)."""

from __future__ import annotations

import abc
import json
import secrets
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rules import CustomerFacts
from rules.rfm import RfmCutoffs
from rules.schema import DEFAULT_EXCLUDED_STATUSES, status_key
from worker.store.times import from_iso, iso, to_ms

# Event statuses. Pending events wait for delivery; the others are final until a replay.
PENDING, DELIVERED, DEAD, SUPERSEDED, HELD_OUT = "pending", "delivered", "dead", "superseded", "held_out"
EVENT_STATUSES = (PENDING, DELIVERED, DEAD, SUPERSEDED, HELD_OUT)
DEFAULT_EXCLUDED = frozenset(status_key(s) for s in DEFAULT_EXCLUDED_STATUSES)

# How customer lists can be ordered besides by contact_id (the default): ties always go by contact_id.
CUSTOMER_SORT_KEYS = ("contact_id", "total_spend", "last_order")
# A customer with no counted order has no last order: it sorts before every date (both backends use this number;
# every real instant in milliseconds is far above it).
NO_ORDER_MS = -(1 << 62)
# Dead events a bulk replay makes pending again per call, at most: a bound on one request's work (the rest wait
# for the next call, which continues with them since the replayed ones are dead no more).
BULK_REPLAY_LIMIT = 1000
DELIVERY_STATE_KEY = "delivery_state"
# Why a held-out event is never replayed, for every place a person can ask to.
HELD_OUT_NOT_REPLAYED = ("it is held out: its customer is in the campaign's control group, and sending it would "
                         "spoil the measurement of the campaign (see holdout_percent)")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# Meta keys, as existing stores hold them: renaming one forgets what it kept.
EXCLUDED_STATUSES_KEY = "excluded_statuses"  # the order statuses the stored aggregates leave out (JSON list)
DEFAULT_EXCLUDED_JSON = json.dumps(sorted(DEFAULT_EXCLUDED))  # what a new store's orders are counted under
ORDER_DAYS_TIMEZONE_KEY = "order_days_timezone"  # the timezone orders' purchase days are counted in (IANA name)
PREDICTION_MODEL_KEY = "prediction_model"  # JSON: the fitted churn and value model, its report and summary
FIRST_RUN_KEY = "first_run_at"  # when the store's first evaluation run happened (ISO time)
# What the stored evaluations were made with (evaluation_version), before shards: each shard now keeps its own, and
# reads this one until it has it.
RULES_VERSION_KEY = "rules_version"
LAST_RUN_KEY = "last_evaluation"  # JSON: when the last run happened and running totals, for /metrics
RFM_KEY = "rfm"  # JSON: the RFM boundaries, when they were computed and over how many customers
SHARD_STATE_PREFIX = "evaluation_shard:"  # + a shard number -> JSON: the version and first run of its evaluations
SUBSCRIPTIONS_KEY = "webhook_subscriptions"  # JSON: id -> the subscription (POST /api/webhooks), secret included
SIGN_OUT_PREFIX = "dashboard_sign_out:"  # + a hash of an API key's fingerprint -> its current sign-out mark
_PROBE_KEY = "healthz-probe"  # never written: the cheapest read there is


# The base is split into this many shards by a hash of contactID: each has its own evaluation and delivery lease, so
# several scheduler processes share the work (worker/shards.py). Fixed: a store's shard states are kept by number.
SHARDS = 16


def shard_of(contact_id: str) -> int:
    """The shard a customer (and every event of theirs) belongs to: the same in every process and backend."""
    return zlib.crc32(contact_id.encode()) % SHARDS


class StoreError(Exception):
    """The store could not do what was asked (a value it cannot hold, a backend failure); nothing was written."""


class StoreUnavailable(ValueError):
    """DATABASE_URL names a store that cannot be opened; the message names the setting and the fix."""


class StoreBusy(StoreError):
    """Another writer held the store for longer than this write waits; the write stored nothing, so retry it."""


@dataclass(frozen=True, slots=True)
class Order:
    contact_id: str
    order_ref: str
    order_at: datetime
    total_cents: int
    status: str | None = None
    email: str | None = None
    name: str | None = None

    def excluded(self, statuses: frozenset[str]) -> bool:
        """True when the order does not count (its status is one of `statuses`, compared by status_key)."""
        return self.status is not None and status_key(self.status) in statuses


@dataclass(frozen=True, slots=True)
class IngestResult:
    inserted: int
    updated: int
    unchanged: int
    contact_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A customer's aggregates as maintained at ingest, plus the state the last evaluation stored."""

    contact_id: str
    name: str | None
    email: str | None
    facts: CustomerFacts
    last_order_ref: str | None
    version: int
    segment: str | None
    purchase_frequency: str | None
    next_check_at: datetime | None
    evaluated_at: datetime | None
    # when the customer entered the stored segment (its last transition's occurredAt; the baseline's time)
    segment_since: datetime | None = None
    changed: bool = False  # orders arrived or changed since the last evaluation
    # campaign -> held out (True) or sent (False): the customer's group in each campaign with a holdout, drawn once
    holdouts: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    id: str
    contact_id: str
    from_segment: str | None
    to_segment: str
    occurred_at: datetime
    detected_at: datetime
    rules_version: str


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    contact_id: str
    campaign: str
    webhook: str
    type: str
    occurred_at: datetime
    body: str
    ordered: bool = True  # waits while an earlier event of the customer is retrying (campaign `ordered: false`)
    held_out: bool = False  # the customer is in the campaign's control group: recorded `held_out`, never sent
    # the end (exclusive) of the window in which the customer's orders are the event's outcome; None: not measured
    outcome_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord(NewEvent):
    """An event in the outbox: what was queued, and where its delivery stands."""

    created_at: datetime
    status: str  # one of EVENT_STATUSES
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None  # for a superseded event: why it was not sent
    last_status: int | None
    delivered_at: datetime | None
    superseded_by: str | None = None  # the transition that undid the move, when one was recorded
    recheck: bool = True  # False after a superseded event is replayed by hand: send it as it is
    outcome_orders: int = 0  # counted orders of the customer in the outcome window so far
    outcome_cents: int = 0


@dataclass(frozen=True, slots=True)
class Superseded:
    """An event not sent because its move no longer holds: why, and the transition that undid it (if recorded)."""

    event_id: str
    reason: str
    transition_id: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    attempted_at: datetime
    status: int | None
    error: str | None
    duration_ms: int


@dataclass(slots=True)  # not frozen: built once per evaluated customer, and frozen init costs 4x
class Evaluation:
    """What one evaluation decided for one customer; saved only if the customer is unchanged since it was read."""

    contact_id: str
    seen_version: int
    seen_segment: str | None
    segment: str
    purchase_frequency: str
    next_check_at: datetime | None
    evaluated_at: datetime
    transition: TransitionRecord | None = None
    events: Sequence[NewEvent] = field(default_factory=tuple)
    segment_since: datetime | None = None  # set when the segment changes (with or without a transition)
    holdouts: Mapping[str, bool] | None = None  # the customer's holdout groups, when this evaluation drew new ones


@dataclass(frozen=True, slots=True)
class CustomerOrder:
    """How a customer list is ordered: by `key` (one of CUSTOMER_SORT_KEYS), ties by contact_id, the whole order
    ascending or descending. A page continues strictly after the `position` of the last row seen, so rows with equal
    values are neither repeated nor skipped; the page before a row is the page after it in `reversed()` order."""

    key: str = "contact_id"
    descending: bool = False

    def __post_init__(self) -> None:
        if self.key not in CUSTOMER_SORT_KEYS:
            raise ValueError(f"unknown sort key {self.key!r} (use one of: {', '.join(CUSTOMER_SORT_KEYS)})")

    def reversed(self) -> CustomerOrder:
        return replace(self, descending=not self.descending)

    def position(self, record: CustomerRecord) -> tuple[int, str]:
        """Where `record` stands in this order: (its sort value, its contact_id)."""
        return sort_value(record, self.key), record.contact_id

    def sorted(self, records: Sequence[CustomerRecord]) -> list[CustomerRecord]:
        return sorted(records, key=self.position, reverse=self.descending)


def sort_value(record: CustomerRecord, key: str) -> int:
    """The integer a customer is ordered by under `key`: spend in cents, the last order in epoch milliseconds
    (NO_ORDER_MS without one), 0 for contact_id order (the contact_id then decides alone)."""
    if key == "total_spend":
        return record.facts.total_cents
    if key == "last_order":
        last = record.facts.last_order_at
        return NO_ORDER_MS if last is None else to_ms(last)
    return 0


def search_matcher(text: str) -> Callable[[str, str | None, str | None], bool]:
    """search_customers' test as a function of (contact_id, email, name): the contact_id starts with `text`, or the
    email or the name contains it, ignoring case: of ASCII letters only for ASCII text (as SQLite's LIKE), casefolded
    for any other text."""
    fold: Callable[[str], str] = (lambda value: value.translate(_ASCII_LOWER)) if text.isascii() else str.casefold
    needle = fold(text)

    def matches(contact_id: str, email: str | None, name: str | None) -> bool:
        return fold(contact_id).startswith(needle) or any(needle in fold(value or "") for value in (email, name))

    return matches


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    segment: str
    customers: int
    total_cents: int


@dataclass(frozen=True, slots=True)
class OutcomeCell:
    """A campaign's events of one month (of occurredAt, UTC) in one group, windows closed or still open: how many,
    how many customers ordered in their window, their orders and spend (and its sum of squares, for spreads)."""

    month: str  # YYYY-MM
    held_out: bool
    closed: bool
    events: int
    converted: int
    orders: int
    cents: int
    cents_squared: int


@dataclass(frozen=True, slots=True)
class RunTotals:
    """Totals over every evaluation run of a store, and when the last one happened (None if unreadable)."""

    at: datetime | None
    runs: int = 0
    customers: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Subscription:
    """A webhook subscribed through the API (an n8n trigger node): every event of its campaigns goes to `url` too,
    signed with its own secret."""

    id: str
    url: str
    campaigns: tuple[str, ...]
    description: str
    secret: str
    created_at: datetime


@dataclass(frozen=True)
class ShardState:
    """What one shard's stored evaluations were made with, and whether its first run happened."""

    version: str | None = None
    first_run_at: datetime | None = None
    ran_at: datetime | None = None  # the moment (as_of) of its last evaluation run


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    """One customer with a counted order, as the churn and value model reads it: days are calendar days in the
    store's order_days_timezone() as `date.toordinal()`; the stored segment is there for per-segment summaries."""

    contact_id: str
    segment: str | None
    first_day: int
    last_day: int
    purchase_days: int
    total_cents: int
    first_day_cents: int


@dataclass(frozen=True, slots=True)
class SavedRfm:
    """The RFM boundaries every process uses, when they were computed (None if unreadable) and over how many."""

    cutoffs: RfmCutoffs
    computed_at: datetime | None
    customers: int


@dataclass(frozen=True, slots=True)
class SaveResult:
    saved: int
    transitions: int
    events: int
    skipped: int  # changed by someone else since they were read: evaluated again next run


class Store(abc.ABC):
    """Orders, per-customer aggregates, evaluated state, transitions, the event outbox and leases."""

    # ingest
    @abc.abstractmethod
    def upsert_orders(self, orders: Sequence[Order], now: datetime) -> IngestResult:
        """Insert or update orders by order_ref in one transaction, refresh the touched customers' aggregates
        and mark them changed. All or nothing. Orders whose status is in excluded_statuses() do not count."""

    def excluded_statuses(self) -> frozenset[str]:
        """The order statuses the stored aggregates leave out (status_key form); the defaults until one is applied."""
        raw = self.get_meta(EXCLUDED_STATUSES_KEY)
        return DEFAULT_EXCLUDED if raw is None else frozenset(json.loads(raw))

    def apply_excluded_statuses(self, statuses: frozenset[str]) -> int:
        """Make `statuses` the ones that do not count: orders whose standing changes are counted again and their
        customers marked changed (a full pass over the orders, only when the list changed). Returns how many
        customers changed."""
        wanted = json.dumps(sorted(statuses))  # DEFAULT_EXCLUDED_JSON for the defaults
        return self._recount_once(EXCLUDED_STATUSES_KEY, wanted, lambda: self._recount_statuses(statuses))

    def _recount_once(self, key: str, wanted: str, recount: Callable[[], int]) -> int:
        """Make `wanted` the setting under `key` and recount what it changes. The setting is recorded first, so an
        ingest that runs meanwhile already writes under it, and the recount (a full pass) fixes every order written
        before; a marker kept until the recount ends makes a recount cut short (a crash) run again next time."""
        pending = f"{key}:recounting"
        if self.get_meta(key) == wanted and not self.get_meta(pending):
            return 0
        self.set_meta(key, wanted)
        self.set_meta(pending, wanted)
        changed = recount()
        self.set_meta(pending, "")
        return changed

    @abc.abstractmethod
    def _recount_statuses(self, statuses: frozenset[str]) -> int:
        """Re-flag every order under `statuses` and refresh the aggregates of the customers whose orders changed."""

    def order_days_timezone(self) -> str:
        """The timezone whose calendar days the stored purchase days count (UTC until the rules' is applied)."""
        return self.get_meta(ORDER_DAYS_TIMEZONE_KEY) or "UTC"

    def apply_timezone(self, timezone_name: str) -> int:
        """Count purchase days in `timezone_name` (the rules'): on a change, every order's day is computed again and
        the customers whose days moved are recounted and marked changed. Returns how many customers changed."""
        return self._recount_once(ORDER_DAYS_TIMEZONE_KEY, timezone_name, lambda: self._recount_days(timezone_name))

    @abc.abstractmethod
    def _recount_days(self, timezone_name: str) -> int:
        """Give every order its calendar day in `timezone_name` and recount the customers whose days moved."""

    # evaluation
    @abc.abstractmethod
    def customers_to_evaluate(self, as_of: datetime, everyone: bool, batch_size: int,
                              shards: frozenset[int] | None = None) -> Iterator[list[CustomerRecord]]:
        """Batches of customers changed since their last evaluation or due for a re-check by `as_of`
        (everyone when `everyone`), of these shards only (every shard when None)."""

    @abc.abstractmethod
    def customers_by_id(self, contact_ids: Sequence[str]) -> list[CustomerRecord]: ...

    @abc.abstractmethod
    def save_evaluations(self, evaluations: Sequence[Evaluation]) -> SaveResult:
        """Store new state, transitions and outbox events in one transaction, each customer only if its
        version and stored segment are still the ones the evaluation saw."""

    # the meta: two primitives each backend implements, and the typed records built on them once, here
    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abc.abstractmethod
    def update_meta(self, key: str, change: Callable[[str | None], str]) -> str:
        """Replace the value with `change(value)` atomically: a concurrent update is never lost (`change` may be
        called again with the newer value). Returns what was written."""

    def shard_state(self, shard: int) -> ShardState:
        """The shard's own record; a store evaluated before shards existed reads as the whole store's."""
        try:
            recorded = json.loads(self.get_meta(f"{SHARD_STATE_PREFIX}{shard}") or "{}")
        except ValueError:
            recorded = {}
        if not isinstance(recorded, dict) or not recorded:
            return ShardState(self.evaluated_version(), _instant(self.get_meta(FIRST_RUN_KEY)))
        return ShardState(recorded.get("version"), _instant(recorded.get("firstRunAt")),
                          _instant(recorded.get("ranAt")))

    def save_shard_state(self, shard: int, state: ShardState) -> None:
        self.set_meta(f"{SHARD_STATE_PREFIX}{shard}", json.dumps(
            {"version": state.version, "firstRunAt": iso(state.first_run_at), "ranAt": iso(state.ran_at)}))

    def has_run(self) -> bool:
        """True once the store's first evaluation run is recorded."""
        return self.get_meta(FIRST_RUN_KEY) is not None

    def mark_first_run(self, at: datetime) -> None:
        self.set_meta(FIRST_RUN_KEY, iso(at) or "")

    def evaluated_version(self) -> str | None:
        """The evaluation_version the stored evaluations were made with; None before the first run."""
        return self.get_meta(RULES_VERSION_KEY)

    def save_evaluated_version(self, version: str) -> None:
        self.set_meta(RULES_VERSION_KEY, version)

    def last_run(self) -> RunTotals | None:
        """Totals over all evaluation runs and when the last one happened; None before any run (or unreadable)."""
        return _run_totals(self.get_meta(LAST_RUN_KEY))

    def subscriptions(self) -> list[Subscription]:
        """Every webhook subscription, oldest first."""
        return list(_subscriptions(self.get_meta(SUBSCRIPTIONS_KEY)).values())

    def add_subscription(self, subscription: Subscription) -> None:
        def added(value: str | None) -> str:
            return _subscriptions_json({**_subscriptions(value), subscription.id: subscription})

        self.update_meta(SUBSCRIPTIONS_KEY, added)

    def remove_subscription(self, subscription_id: str) -> bool:
        """False if there was no such subscription."""
        found = []

        def removed(value: str | None) -> str:
            known = _subscriptions(value)
            found[:] = [subscription_id in known]
            return _subscriptions_json({k: v for k, v in known.items() if k != subscription_id})

        self.update_meta(SUBSCRIPTIONS_KEY, removed)
        return bool(found and found[0])

    def add_run(self, at: datetime, customers: int, errors: int) -> None:
        """Count one evaluation run at `at` into the running totals; runs of several processes all count."""
        def added(value: str | None) -> str:
            totals = _run_totals(value) or RunTotals(at=None)
            last = at if totals.at is None else max(totals.at, at)
            return _totals_json(RunTotals(last, totals.runs + 1, totals.customers + customers, totals.errors + errors))

        self.update_meta(LAST_RUN_KEY, added)

    def rfm_cutoffs(self) -> SavedRfm | None:
        """The RFM boundaries last saved; None before the first computation."""
        raw = self.get_meta(RFM_KEY)
        if raw is None:
            return None
        saved = json.loads(raw)
        return SavedRfm(RfmCutoffs.from_json(saved["cutoffs"]), from_iso(saved["computedAt"]),
                        int(saved.get("customers", 0)))

    def save_rfm_cutoffs(self, cutoffs: RfmCutoffs, computed_at: datetime, customers: int) -> None:
        self.set_meta(RFM_KEY, json.dumps({"computedAt": iso(computed_at), "customers": customers,
                                           "cutoffs": cutoffs.as_json()}))

    def resume_point(self, name: str) -> dict[str, Any] | None:
        """Where the named resumable job (a sync, a file import) got to, as it saved it; None if never saved."""
        raw = self.get_meta(name)
        if not raw:
            return None
        saved = json.loads(raw)
        return saved if isinstance(saved, dict) else None

    def save_resume_point(self, name: str, progress: Mapping[str, Any]) -> None:
        """Kept as JSON: `progress` holds plain values only."""
        self.set_meta(name, json.dumps(dict(progress)))

    def sign_out_mark(self, key: str) -> str:
        """The current sign-out mark of the dashboard key `key` (a hash, never the key itself); '' until one."""
        return self.get_meta(SIGN_OUT_PREFIX + key) or ""

    def renew_sign_out_mark(self, key: str) -> None:
        """A new sign-out mark for `key`: every session that holds the old one is over, in every process."""
        self.set_meta(SIGN_OUT_PREFIX + key, secrets.token_urlsafe(18))

    def delivery_state(self) -> tuple[str | None] | None:
        """What the last scheduler to run delivery found: (None,) delivering, (problem,) disabled and why; None
        before any scheduler said. The API shows this, not its own environment's view: a web process may run
        without the webhook secret that only the scheduler needs."""
        raw = self.get_meta(DELIVERY_STATE_KEY)
        return None if raw is None else (raw or None,)

    def record_delivery_state(self, problem: str | None) -> None:
        self.set_meta(DELIVERY_STATE_KEY, problem or "")

    def ping(self) -> None:
        """One cheap read; raises when the store does not answer."""
        self.get_meta(_PROBE_KEY)

    # reads
    @abc.abstractmethod
    def get_customer(self, contact_id: str) -> CustomerRecord | None: ...

    @abc.abstractmethod
    def list_customers(self, segment: str | None, purchase_frequency: str | None, after: str | None,
                       limit: int) -> list[CustomerRecord]:
        """Customers ordered by contact_id, after the cursor `after`, filtered by stored segment/frequency."""

    @abc.abstractmethod
    def list_customers_sorted(self, segment: str | None, purchase_frequency: str | None, order: CustomerOrder,
                              after: tuple[int, str] | None, limit: int) -> list[CustomerRecord]:
        """Up to `limit` customers filtered by stored segment/frequency, in `order`, strictly after the position
        `after` (CustomerOrder.position of the last row seen; None: from the start)."""

    @abc.abstractmethod
    def count_customers_where(self, segment: str | None, purchase_frequency: str | None) -> int | None:
        """How many customers have this stored segment and/or frequency (all of them when both are None); None
        when this backend cannot count it without reading every customer of the segment."""

    @abc.abstractmethod
    def iter_customers(self, batch_size: int = 1000) -> Iterator[list[CustomerRecord]]: ...

    @abc.abstractmethod
    def purchase_rows(self, until: datetime | None = None, batch_size: int = 5000) -> Iterator[list[PurchaseRow]]:
        """Every customer with a counted order, in batches: from the aggregates kept at ingest, or with `until`
        from the orders dated no later than it (the base as it stood then, for a backtest: a full pass)."""

    @abc.abstractmethod
    def segment_summary(self) -> list[SegmentSummary]: ...

    @abc.abstractmethod
    def count_customers(self) -> int: ...

    @abc.abstractmethod
    def transitions_for(self, contact_id: str, limit: int = 100) -> list[TransitionRecord]: ...

    # dashboard reads
    @abc.abstractmethod
    def transitions_per_day(self, since: datetime) -> list[tuple[str, str, int]]:
        """(day, to_segment, count) of transitions that occurred at or after `since`, by UTC calendar day
        ('2026-02-21'), ordered by day then segment; days without transitions are left out."""

    @abc.abstractmethod
    def search_customers(self, text: str, limit: int) -> list[CustomerRecord]:
        """Up to `limit` customers, ordered by contact_id, whose contact_id starts with `text` or whose email or
        name contains it, ignoring case; `text` is literal (no wildcards)."""

    # outbox
    @abc.abstractmethod
    def claim_due_events(self, now: datetime, limit: int, holder: str, claim_seconds: float,
                         shards: frozenset[int] | None = None) -> list[EventRecord]:
        """Take up to `limit` pending events due by `now` that nobody else holds, oldest first, of customers in
        these shards (every shard when None). An ordered event waits while an earlier ordered event of the same
        customer (to any webhook) has failed and is pending."""

    @abc.abstractmethod
    def record_delivered(self, event_ids: Sequence[str], attempt_at: datetime, status: int,
                         duration_ms: int) -> None: ...

    @abc.abstractmethod
    def record_failed(self, event_ids: Sequence[str], attempt_at: datetime, status: int | None, error: str,
                      duration_ms: int, next_attempt_at: datetime | None) -> None:
        """A failed attempt: retry at `next_attempt_at`, or dead when it is None."""

    @abc.abstractmethod
    def list_events(self, status: str | None, limit: int, after: str | None = None) -> list[EventRecord]: ...

    @abc.abstractmethod
    def get_event(self, event_id: str) -> EventRecord | None: ...

    @abc.abstractmethod
    def attempts_for(self, event_id: str) -> list[Attempt]: ...

    @abc.abstractmethod
    def record_superseded(self, superseded: Sequence[Superseded], at: datetime) -> None:
        """Claimed events that are not sent: status superseded, with the reason and the undoing transition."""

    @abc.abstractmethod
    def replay_event(self, event_id: str, now: datetime) -> bool:
        """Make a dead, delivered or superseded event pending again, due now, with its retry schedule restarted
        (`attempts` back to 0; the attempt history stays); False if unknown. A replayed superseded event is sent
        as it is (recheck off: a person decided); any other replay is checked again before it is sent."""

    @abc.abstractmethod
    def replay_dead_events(self, now: datetime, campaign: str | None = None,
                           limit: int = BULK_REPLAY_LIMIT) -> int:
        """Make up to `limit` dead events (of `campaign`, or of every campaign) pending again, oldest first, each as
        replay_event does (due now, retry schedule restarted, checked again before it is sent); returns how many.
        Only dead events: a superseded event replayed is sent without its re-check, which a person decides one
        event at a time. Two calls at once never replay one event twice."""

    @abc.abstractmethod
    def count_events(self, status: str, campaign: str | None = None) -> int:
        """Events with this status (and of this campaign, when given)."""

    @abc.abstractmethod
    def events_for(self, contact_id: str, limit: int = 100) -> list[EventRecord]:
        """The customer's latest `limit` events (every status), oldest first."""

    @abc.abstractmethod
    def campaign_outcomes(self, campaign: str, now: datetime) -> list[OutcomeCell]:
        """The campaign's measured events (those with an outcome window) summed per month, group and whether the
        window had closed by `now`."""

    @abc.abstractmethod
    def segment_entries(self, segment: str, after: datetime, until: datetime) -> list[tuple[str, datetime]]:
        """Each customer's first move into `segment` dated after `after` and no later than `until`:
        (contact_id, occurredAt), in contact_id order. What a threshold experiment's report counts."""

    @abc.abstractmethod
    def orders_in_windows(self, windows: Sequence[tuple[str, datetime, datetime]]) -> list[tuple[int, int]]:
        """For each (contact_id, start, end): the customer's counted orders dated after `start` and before `end`
        (both exclusive, as an event's outcome), and their spend in cents; in the order given."""

    @abc.abstractmethod
    def spend_between(self, after: datetime, until: datetime) -> list[tuple[str, int, int]]:
        """For every customer with a counted order at or before `until` (a customer of the base by then): its
        counted orders dated after `after`, after its first counted order (which no threshold can have changed) and
        no later than `until`, and their spend in cents, in contact_id order. What an experiment's whole-arm
        comparison reads: O(customers), a read of the orders of the span."""

    @abc.abstractmethod
    def event_counts(self, now: datetime) -> dict[str, float]:
        """Counts per status (every one of EVENT_STATUSES) and the age in seconds of the oldest pending event."""

    # operations: running totals for /metrics
    @abc.abstractmethod
    def transition_count(self) -> int:
        """Transitions recorded since the store was created."""

    @abc.abstractmethod
    def attempt_counts(self) -> dict[str, int]:
        """Delivery attempts since the store was created, by outcome: 'delivered' (a 2xx answer), 'http_error'
        (any other answer) and 'network_error' (no answer: refused, timed out, unsendable)."""

    # leases
    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        """Take or renew the named lease; False while another holder's lease has not expired."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None: ...

    @abc.abstractmethod
    def leases(self, prefix: str, now: datetime) -> dict[str, str]:
        """The unexpired leases whose names start with `prefix`: name -> holder."""

    def record_deliveries(self, deliveries: Sequence[tuple[Sequence[str], int, int]], attempt_at: datetime) -> None:
        """Several successful attempts at once, each (event ids, status, duration_ms); backends override this to
        write them in one go."""
        for event_ids, status, duration_ms in deliveries:
            self.record_delivered(event_ids, attempt_at, status, duration_ms)

    @abc.abstractmethod
    def renew_claims(self, event_ids: Sequence[str], holder: str, until: datetime) -> int:
        """Keep `holder`'s claims on these pending events until `until` (a heartbeat while they are being sent);
        returns how many it still held."""

    @abc.abstractmethod
    def release_claims(self, event_ids: Sequence[str], now: datetime) -> None:
        """Hand claimed events back unsent, due now, their attempts untouched."""

    def checkpoint(self) -> None:  # noqa: B027 - only backends with a local log need it
        """Housekeeping the scheduler runs off the hot path (SQLite: fold the write-ahead log into the file)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection and thread the store opened; the store is not used afterwards."""


def _run_totals(value: str | None) -> RunTotals | None:
    try:
        recorded = json.loads(value or "{}")
    except ValueError:
        return None
    if not isinstance(recorded, dict) or not recorded:
        return None
    return RunTotals(at=_instant(recorded.get("at")), runs=int(recorded.get("runs", 0)),
                     customers=int(recorded.get("customers", 0)), errors=int(recorded.get("errors", 0)))


def _totals_json(totals: RunTotals) -> str:
    return json.dumps({"at": iso(totals.at), "runs": totals.runs,
                       "customers": totals.customers, "errors": totals.errors})


def _instant(value: object) -> datetime | None:
    return from_iso(value) if isinstance(value, str) and value else None


def _subscriptions(value: str | None) -> dict[str, Subscription]:
    try:
        recorded = json.loads(value or "{}")
    except ValueError:
        return {}
    return {key: Subscription(key, item["url"], tuple(item["campaigns"]), item.get("description", ""),
                              item["secret"], from_iso(item["createdAt"]))
            for key, item in (recorded.items() if isinstance(recorded, dict) else ())}


def _subscriptions_json(subscriptions: Mapping[str, Subscription]) -> str:
    return json.dumps({key: {"url": s.url, "campaigns": list(s.campaigns), "description": s.description,
                             "secret": s.secret, "createdAt": iso(s.created_at)}
                       for key, s in subscriptions.items()})  # in the order they were made
