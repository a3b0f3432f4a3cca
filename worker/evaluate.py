"""Evaluation runs: due or changed customers -> rules -> new state, transitions and outbox events, per batch."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache

from rules import Classification, Classifier, Rules, bands_reached, campaigns_for_move, event_id, milestones_reached
from rules.campaigns import Fired
from rules.holdouts import draws_held_out
from rules.ids import digest_id
from rules.metrics import local_date, local_midnight
from rules.rfm import RfmCutoffs
from rules.schema import BAND_METRIC
from worker.experiments import track_experiments
from worker.prediction import load_model, model_version, saved_model
from worker.rfm_boundaries import compute_rfm, evaluation_version, load_cutoffs, rfm_is_stale
from worker.serialize import customer_json, event_body, iso
from worker.shards import ShardLeases
from worker.store.base import (
    SHARDS,
    CustomerRecord,
    Evaluation,
    NewEvent,
    ShardState,
    Store,
    Subscription,
    TransitionRecord,
)
from worker.subscriptions import fan_out

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
# How far `evaluate --as-of` may be ahead of the wall clock: two machines' clocks seldom agree to the second.
CLOCK_SKEW = timedelta(minutes=1)


class EvaluationRefused(ValueError):
    """An evaluation at a moment that would rewrite history or run ahead of time; the message says why."""


@dataclass(frozen=True)
class RunResult:
    customers: int
    transitions: int
    events: int
    skipped: int
    errors: int
    seconds: float
    baseline: bool = False
    shards: int = SHARDS  # how many shards this run evaluated (a process sharing the base takes some of them)


def prepare_store(store: Store, rules: Rules) -> None:
    """Bring the stored aggregates to the rules' excluded statuses and timezone (a recount when they changed)."""
    store.apply_excluded_statuses(rules.orders.excluded)
    store.apply_timezone(rules.timezone)


def store_prepared(store: Store, rules: Rules) -> bool:
    """Whether the aggregates are counted as the rules count them (else another process is recounting them)."""
    return store.excluded_statuses() == rules.orders.excluded and store.order_days_timezone() == rules.timezone


def evaluate_due(store: Store, rules: Rules, as_of: datetime, batch_size: int = BATCH_SIZE,
                 leases: ShardLeases | None = None, fresh_since: datetime | None = None,
                 together: bool = False) -> RunResult:
    """One evaluation run: customers changed since their last evaluation or due for a re-check by `as_of`.

    Every customer of a shard is evaluated on the shard's first run and whenever the rules changed since its last.
    A shard's first run follows `first_run` (baseline: record segments silently); every later run announces what
    it finds. Without `leases` the run evaluates the whole base (after bringing the aggregates to the rules); with
    them it walks the shards this process can take, skipping those evaluated since `fresh_since` under these rules;
    with them and `together`, it evaluates the shards they already hold in one go, renewing them as it goes (the
    command line's run beside running schedulers).
    """
    started = time.perf_counter()
    if leases is None or together:
        prepare_store(store, rules)
    plan = _Plan.of(store, rules, load_cutoffs(store))
    subscriptions = store.subscriptions()  # read once a run, not once a shard
    totals = _Totals()

    def run(batches: Iterable[list[CustomerRecord]], scope: _Scope) -> None:
        totals.add(_evaluate(store, plan.classifier, batches, as_of, scope.announce, subscriptions),
                   baseline=not scope.announce)

    if leases is None or together:
        scope_shards = range(SHARDS) if leases is None else sorted(leases.held)
        states = {shard: store.shard_state(shard) for shard in scope_shards}
        for shards, scope in _scopes(states, plan, rules):
            batches = store.customers_to_evaluate(as_of, scope.everyone, batch_size, shards)
            if leases is not None:
                batches = _renewing(batches, leases)
            run(batches, scope)
            for shard in range(SHARDS) if shards is None else sorted(shards):
                store.save_shard_state(shard, _after(states[shard], plan.version, as_of))
        totals.shards = len(states)
    else:
        for shard in leases.walk():
            state = store.shard_state(shard)  # read under the lease: another process may just have run it
            if fresh_since is not None and state.ran_at is not None and state.ran_at >= fresh_since \
                    and state.version == plan.version:
                continue
            scope = _Scope.of(state, plan, rules)
            run(_renewing(store.customers_to_evaluate(as_of, scope.everyone, batch_size, frozenset({shard})), leases),
                scope)
            store.save_shard_state(shard, _after(state, plan.version, as_of))
            totals.shards += 1
    if totals.shards:
        if rules.experiments:
            track_experiments(store, rules, as_of)
        if not store.has_run() and all(store.shard_state(s).first_run_at is not None for s in range(SHARDS)):
            store.mark_first_run(as_of)
        store.add_run(as_of, totals.customers, totals.errors)
    return RunResult(totals.customers, totals.transitions, totals.events, totals.skipped, totals.errors,
                     seconds=time.perf_counter() - started, baseline=totals.baseline, shards=totals.shards)


@dataclass
class _Totals:
    customers: int = 0
    transitions: int = 0
    events: int = 0
    skipped: int = 0
    errors: int = 0
    shards: int = 0
    baseline: bool = False  # some shard had its silent first run

    def add(self, counts: tuple[int, int, int, int, int], baseline: bool) -> None:
        self.customers += counts[0]
        self.transitions += counts[1]
        self.events += counts[2]
        self.skipped += counts[3]
        self.errors += counts[4]
        self.baseline = self.baseline or baseline


def _renewing(batches: Iterable[list[CustomerRecord]], leases: ShardLeases) -> Iterator[list[CustomerRecord]]:
    for batch in batches:  # the lease is renewed before each batch: a long shard never lapses while it is worked
        leases.renew()
        yield batch


@dataclass(frozen=True)
class _Plan:
    """What a run evaluates under: the classifier and its version (rules, RFM boundaries, the fitted model)."""

    classifier: Classifier
    version: str

    @classmethod
    def of(cls, store: Store, rules: Rules, cutoffs: RfmCutoffs | None) -> _Plan:
        saved = saved_model(store)
        version = evaluation_version(rules, cutoffs)
        model = model_version(rules, saved)
        if model is not None:  # the rules read the predictions: a refit can move anyone
            version = f"{version}+{model}"
        return cls(Classifier(rules, cutoffs, load_model(store, rules, saved)), version)


@dataclass(frozen=True)
class _Scope:
    """For whom a shard's run is (everyone on its first run or under changed rules), and whether its moves are
    announced (not on a first run with `first_run: baseline`)."""

    everyone: bool
    announce: bool

    @classmethod
    def of(cls, state: ShardState, plan: _Plan, rules: Rules) -> _Scope:
        first_run = state.first_run_at is None
        return cls(everyone=first_run or state.version != plan.version,
                   announce=not (first_run and rules.first_run == "baseline"))


def _after(state: ShardState, version: str, as_of: datetime) -> ShardState:
    return ShardState(version, state.first_run_at or as_of, as_of)


def _scopes(states: dict[int, ShardState], plan: _Plan, rules: Rules,
            ) -> list[tuple[frozenset[int] | None, _Scope]]:
    """The shards grouped by what their run is (usually one group: the whole base, read in one go)."""
    groups: dict[_Scope, list[int]] = {}
    for shard, state in sorted(states.items()):
        groups.setdefault(_Scope.of(state, plan, rules), []).append(shard)
    return [(None if len(shards) == SHARDS else frozenset(shards), scope) for scope, shards in groups.items()]


def check_as_of(store: Store, as_of: datetime, wall_clock: datetime) -> None:
    """Refuse an evaluation that would write the future or rewrite the past: `as_of` later than the wall clock (plus
    CLOCK_SKEW), or earlier than the store's last run. Past moments that move forward (backfills) are fine."""
    if as_of > wall_clock + CLOCK_SKEW:
        raise EvaluationRefused(
            f"{iso(as_of)} is later than the clock ({iso(wall_clock)}): a run ahead of time would record moves that "
            "have not happened and queue their campaigns; use --dry-run to see what it would do")
    recorded = store.last_run()
    last = None if recorded is None else recorded.at
    if last is not None and as_of < last:
        raise EvaluationRefused(
            f"{iso(as_of)} is earlier than this store's last evaluation run ({iso(last)}): time only moves forward "
            "in a store; use --dry-run to look at an earlier moment")


@dataclass
class DryRun:
    """What an evaluation run would do, computed without writing anything."""

    customers: int = 0
    moves: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    campaigns: Counter[str] = field(default_factory=Counter)
    samples: dict[tuple[str | None, str], list[str]] = field(default_factory=dict)
    errors: int = 0
    baseline: bool = False
    everyone: bool = False
    recount_statuses: bool = False  # the rules exclude other statuses: a real run counts the orders again first
    seconds: float = 0.0


def dry_run(store: Store, rules: Rules, as_of: datetime, samples: int = 5,
            batch_size: int = BATCH_SIZE) -> DryRun:
    """The run evaluate_due would make at `as_of` (any moment, past or future), with nothing stored.

    RFM boundaries a day old are recomputed in memory only.
    """
    started = time.perf_counter()
    cutoffs = compute_rfm(store, rules, as_of) if rfm_is_stale(store, as_of) else load_cutoffs(store)
    plan = _Plan.of(store, rules, cutoffs)
    scopes = _scopes({shard: store.shard_state(shard) for shard in range(SHARDS)}, plan, rules)
    result = DryRun(baseline=any(not scope.announce for _, scope in scopes),
                    everyone=any(scope.everyone for _, scope in scopes),
                    recount_statuses=store.excluded_statuses() != rules.orders.excluded)
    for batch, announce in ((batch, scope.announce) for shards, scope in scopes
                            for batch in store.customers_to_evaluate(as_of, scope.everyone, batch_size, shards)):
        decisions, errors = _decide_batch(batch, plan.classifier, as_of, announce)
        result.errors += errors
        for record, _current, evaluation in decisions:
            result.customers += 1
            if evaluation.transition is not None:
                move = (evaluation.transition.from_segment, evaluation.transition.to_segment)
                result.moves[move] += 1
                shown = result.samples.setdefault(move, [])
                if len(shown) < samples:
                    shown.append(record.contact_id)
            result.campaigns.update(event.campaign for event in evaluation.events)
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class CustomersEvaluated:
    """What evaluate_customers did, and each customer as read with what the rules say of them at `as_of`."""

    run: RunResult
    customers: list[tuple[CustomerRecord, Classification]]


def evaluate_customers(store: Store, classifier: Classifier, contact_ids: Iterable[str],
                       as_of: datetime) -> CustomersEvaluated:
    """Evaluate these customers now (after an order arrives through the API), in contact_id order.

    Before the store's first run nothing is announced: that run decides, under `first_run`, what the base was.
    """
    started = time.perf_counter()
    announce = store.has_run() or classifier.rules.first_run == "emit"
    ids = sorted(set(contact_ids))
    batches = (store.customers_by_id(ids[i:i + BATCH_SIZE]) for i in range(0, len(ids), BATCH_SIZE))
    decided: list[tuple[CustomerRecord, Classification]] = []
    totals = _evaluate(store, classifier, batches, as_of, announce, store.subscriptions(), decided)
    return CustomersEvaluated(RunResult(*totals, seconds=time.perf_counter() - started, baseline=not announce),
                              decided)


def _evaluate(store: Store, classifier: Classifier, batches: Iterable[list[CustomerRecord]], as_of: datetime,
              announce: bool, subscriptions: Sequence[Subscription],
              decided: list[tuple[CustomerRecord, Classification]] | None = None) -> tuple[int, int, int, int, int]:
    """Decide and save each batch; every subscription queues its own copy of its campaigns' events."""
    customers = transitions = events = skipped = errors = 0
    for batch in batches:
        decisions, failed = _decide_batch(batch, classifier, as_of, announce)
        errors += failed
        if decided is not None:
            decided += [(record, current) for record, current, _ in decisions]
        saved = store.save_evaluations(fan_out([evaluation for _, _, evaluation in decisions], subscriptions))
        customers += saved.saved
        transitions += saved.transitions
        events += saved.events
        skipped += saved.skipped
    return customers, transitions, events, skipped, errors


def _decide_batch(batch: list[CustomerRecord], classifier: Classifier, as_of: datetime, announce: bool,
                  ) -> tuple[list[tuple[CustomerRecord, Classification, Evaluation]], int]:
    """Each customer's classification and evaluation, and how many could not be evaluated: one bad customer must
    not stop the run; it stays due and is tried again."""
    decisions, errors = [], 0
    try:
        classified = classifier.classify_many([record.facts for record in batch], as_of)
    except Exception:  # the batch's scoring failed: classify one by one, so only the bad customer fails
        classified = [None] * len(batch)
    for record, current in zip(batch, classified, strict=True):
        try:
            current = current or classifier.classify(record.facts, as_of)
            decisions.append((record, current, decide(record, classifier, as_of, announce, current)))
        except Exception:
            errors += 1
            log.exception("could not evaluate customer %s", record.contact_id, extra={"contact_id": record.contact_id})
    return decisions, errors


def decide(record: CustomerRecord, classifier: Classifier, as_of: datetime, announce: bool,
           current: Classification | None = None) -> Evaluation:
    """What the rules say about one customer at `as_of` (`current`, if already classified), and what that means
    for transitions and campaigns."""
    rules = classifier.rules
    current = current or classifier.classify(record.facts, as_of)
    transition = None
    segment_since = None
    events: list[NewEvent] = []
    if not announce and record.segment != current.segment:
        segment_since = as_of  # recorded silently (the baseline): known to be in the segment from current on
    if announce and record.segment != current.segment:
        settled = None if record.changed else record.evaluated_at  # unchanged orders since: only rules moved it
        occurred_at = dated(classifier.entered_at(record.facts, as_of, current), record.segment_since, as_of, settled)
        segment_since = occurred_at
        transition = TransitionRecord(
            id=_transition_id(record.contact_id, record.segment, current.segment, occurred_at),
            contact_id=record.contact_id, from_segment=record.segment, to_segment=current.segment,
            occurred_at=occurred_at, detected_at=as_of, rules_version=rules.rules_version,
        )
        # Someone whose every order was cancelled is back to no orders: record it, announce nothing.
        moves = campaigns_for_move(rules, record.segment, current.segment) if record.facts.order_count else []
        for campaign, kind in moves:
            if classifier.campaign_blocked(campaign, record.facts, current) is None:
                events.append(_event(rules, record, current, Fired(campaign, kind, occurred_at), record.segment,
                                     as_of))
    if announce:
        for fired in (*milestones_reached(rules, record.facts, current.segment, record.evaluated_at, as_of),
                      *bands_reached(rules, record.facts, current, record.evaluated_at, as_of)):
            if classifier.campaign_blocked(fired.campaign, record.facts, current) is None:
                events.append(_event(rules, record, current, fired, current.segment, as_of))
    events, holdouts = _hold_out(rules, record, events)
    return Evaluation(
        contact_id=record.contact_id, seen_version=record.version, seen_segment=record.segment,
        segment=current.segment, purchase_frequency=current.purchase_frequency,
        next_check_at=classifier.next_check_at(record.facts, as_of, current), evaluated_at=as_of,
        transition=transition, events=tuple(events), segment_since=segment_since, holdouts=holdouts,
    )


def _hold_out(rules: Rules, record: CustomerRecord, events: list[NewEvent],
              ) -> tuple[list[NewEvent], dict[str, bool] | None]:
    """Mark the events of the customer's control groups held out; a customer's group in a campaign is drawn the
    first time it triggers the campaign and kept (changing holdout_percent never moves anyone already drawn).
    Returns the events and the customer's groups when new ones were drawn."""
    groups = dict(record.holdouts)
    drawn = False
    marked = []
    for event in events:
        percent = rules.campaigns[event.campaign].holdout_percent
        if not percent:
            marked.append(event)
            continue
        if event.campaign not in groups:
            groups[event.campaign] = draws_held_out(rules.holdout_salt, event.campaign, record.contact_id, percent)
            drawn = True
        marked.append(replace(event, held_out=True) if groups[event.campaign] else event)
    return marked, groups if drawn else None


def dated(true_moment: datetime, segment_since: datetime | None, as_of: datetime,
          settled: datetime | None = None) -> datetime:
    """When a move happened: its true moment (an order, a local midnight), unless that is no later than the move
    into the segment being left, or than `settled` (the last evaluation of the same orders). Then the move corrects
    what was known (an order cancelled or changed, a rules change) and is dated when it was detected, so that a
    customer's history read by occurredAt always ends in the stored segment and never rewrites what was announced.
    A late order dated after the last move keeps its own time."""
    floor = max((m for m in (segment_since, settled) if m is not None), default=None)
    if floor is None or true_moment > floor:
        return true_moment
    return max(as_of, floor)


def _event(rules: Rules, record: CustomerRecord, current: Classification, fired: Fired, from_segment: str | None,
           as_of: datetime) -> NewEvent:
    campaign = rules.campaigns[fired.campaign]
    eid = event_id(record.contact_id, fired.campaign, fired.kind, from_segment, current.segment,
                   fired.id_at or fired.occurred_at)
    milestone: tuple[str, int | str] | None = campaign.on.day_milestone
    if campaign.on.band_milestone is not None:
        milestone = (BAND_METRIC, campaign.on.band_milestone)
    body = event_body(eid, fired.kind, fired.campaign, fired.occurred_at, _iso_of_run(as_of),
                      (from_segment, current.segment), customer_json(record, current), rules.rules_version, milestone)
    # outcomes count through the outcome_days-th calendar day after the event: the window ends the midnight after
    until = local_midnight(local_date(fired.occurred_at, rules.tz) + timedelta(days=campaign.outcome_days + 1),
                           rules.tz)
    return NewEvent(id=eid, contact_id=record.contact_id, campaign=fired.campaign, webhook=campaign.webhook,
                    type=fired.kind, occurred_at=fired.occurred_at, body=body, ordered=campaign.ordered,
                    outcome_until=until)


_iso_of_run = lru_cache(maxsize=4)(iso)  # every event of a run shares its detectedAt


def _transition_id(contact_id: str, from_segment: str | None, to_segment: str, occurred_at: datetime) -> str:
    return digest_id("trn", contact_id, from_segment or "", to_segment, occurred_at.isoformat())
