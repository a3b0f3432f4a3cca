"""Threshold experiments: when each one ran, which arm each customer is in, and the report per arm (customers who
entered the segment, and their orders and spend in the days after, with 95 % confidence intervals from statsmodels).

An experiment starts at the first evaluation run under it (the run that moves everyone to their arm's rules: those
moves are the start, not entries to measure) and ends at the first run with a `winner`. Changing its segment,
metric or arms starts it again: customers measured under one definition are never mixed with another's.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from rules import Rules
from rules.holdouts import ArmDraw
from rules.metrics import local_date, local_midnight
from rules.schema import MONEY_METRICS, Experiment
from worker.outcomes import CONFIDENCE, MIN_GROUP
from worker.serialize import iso, parse_instant
from worker.store.base import Store

META_KEY = "experiments"


@dataclass(frozen=True)
class Span:
    """When an experiment ran: from its first evaluation run to the first run with a winner (None: still running)."""

    definition: str
    started_at: datetime
    ended_at: datetime | None = None
    winner: str | None = None
    restarted: bool = False  # the definition changed (or a winner was withdrawn): measuring began again


def definition_digest(experiment: Experiment) -> str:
    """What the measurement depends on: the segment, the metric and the arms (values, shares, order)."""
    data = {"segment": experiment.segment, "metric": experiment.metric,
            "arms": [[name, str(arm.value), str(arm.share)] for name, arm in experiment.arms.items()]}
    return hashlib.sha256(json.dumps(data, separators=(",", ":")).encode()).hexdigest()[:16]


def spans(store: Store) -> dict[str, Span]:
    raw = store.get_meta(META_KEY)
    if not raw:
        return {}
    return {name: Span(s["definition"], parse_instant(s["startedAt"]),
                       None if s.get("endedAt") is None else parse_instant(s["endedAt"]), s.get("winner"),
                       bool(s.get("restarted")))
            for name, s in json.loads(raw).items()}


def track_experiments(store: Store, rules: Rules, as_of: datetime) -> None:
    """After an evaluation run at `as_of`: note the experiments that start or end with it. Runs hold the evaluation
    lease, so this read-then-write is not raced."""
    known = spans(store)
    updated = dict(known)
    for name, experiment in rules.experiments.items():
        digest = definition_digest(experiment)
        span = known.get(name)
        if span is None or span.definition != digest or (span.ended_at is not None and experiment.running):
            span = updated[name] = Span(digest, as_of, restarted=span is not None)
        if experiment.winner is not None and span.ended_at is None:
            updated[name] = Span(digest, span.started_at, as_of, experiment.winner, span.restarted)
    if updated != known:
        store.set_meta(META_KEY, json.dumps({
            name: {"definition": s.definition, "startedAt": iso(s.started_at),
                   "endedAt": None if s.ended_at is None else iso(s.ended_at), "winner": s.winner,
                   "restarted": s.restarted}
            for name, s in updated.items()}, sort_keys=True))


# the report ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class ArmReport:
    arm: str
    value: Decimal  # the threshold this arm's customers were classified at
    share: Decimal
    entered: int  # customers who entered the segment during the experiment
    still_open: int  # of those, entered too recently for their window to have closed
    measured: int  # closed windows: what the figures below are over
    converted: int
    orders: int
    cents: int
    conversion: Interval
    orders_per_customer: Interval
    spend_per_customer: Interval  # in currency units (not cents)
    note: str = ""


MORE, LESS, NO_DIFFERENCE, TOO_FEW = ("more revenue per customer", "less revenue per customer",
                                     "no measurable difference", "too few customers yet")


@dataclass(frozen=True)
class Versus:
    """An arm's revenue per customer against the first arm's: the difference with its 95 % interval (Welch's)."""

    difference: Interval  # currency units per customer, this arm minus the first
    verdict: str


@dataclass(frozen=True)
class ArmTotals:
    """Everyone in an arm (intent to treat: every customer of the base drawn into it, whether or not the arm's
    threshold moved them), and what they ordered while the experiment ran. The fair comparison of thresholds."""

    arm: str
    customers: int
    buyers: int  # ordered at least once during the experiment
    orders: int
    cents: int
    conversion: Interval
    spend_per_customer: Interval
    versus: Versus | None = None  # None for the first arm, which the others are compared with


@dataclass(frozen=True)
class ExperimentReport:
    name: str
    experiment: Experiment
    metric: str
    op: str
    span: Span | None
    outcome_days: int
    as_of: datetime
    arms: tuple[ArmReport, ...]
    whole: tuple[ArmTotals, ...] = ()

    @property
    def status(self) -> str:
        if self.span is None:
            return "not started"
        return "running" if self.span.ended_at is None else "ended"


def experiment_report(store: Store, rules: Rules, name: str, as_of: datetime) -> ExperimentReport:
    """The report of one experiment of the rules at `as_of`: per arm, the customers who entered its segment after
    the experiment started (each customer's first entry) and what they ordered through the `outcome_days`-th
    calendar day after entering, over the windows closed by `as_of`."""
    experiment = rules.experiments[name]
    _, metric, op = rules.experiment_conditions[name]
    span = spans(store).get(name)
    if span is not None and span.definition != definition_digest(experiment):
        span = None  # the file changed since the last run: nothing has been measured under this definition yet
    entered: dict[str, list[tuple[str, datetime, datetime]]] = defaultdict(list)
    whole: tuple[ArmTotals, ...] = ()
    if span is not None:
        # the run that ends it moves customers to the winner's rules: those moves are the end, not entrants
        until = as_of if span.ended_at is None else min(as_of, span.ended_at - timedelta(milliseconds=1))
        draw = ArmDraw(rules.holdout_salt, name, experiment.shares)
        whole = _whole_arms(store, rules, name, span.started_at, until) if until > span.started_at else ()
        for contact_id, at in store.segment_entries(experiment.segment, span.started_at, until):
            arm = draw.arm(contact_id)
            window_end = local_midnight(local_date(at, rules.tz) + timedelta(days=experiment.outcome_days + 1),
                                        rules.tz)
            entered[arm].append((contact_id, at, window_end))
    closed = [w for windows in entered.values() for w in windows if w[2] <= as_of]
    outcomes = dict(zip(((w[0], w[1]) for w in closed), store.orders_in_windows(closed), strict=True))
    arms = tuple(_arm_report(arm, settings.value, settings.share, entered.get(arm, []), outcomes, as_of)
                 for arm, settings in experiment.arms.items())
    return ExperimentReport(name, experiment, metric, op, span, experiment.outcome_days, as_of, arms, whole)


def _whole_arms(store: Store, rules: Rules, name: str, after: datetime, until: datetime) -> tuple[ArmTotals, ...]:
    experiment = rules.experiments[name]
    shares = experiment.shares
    spend: dict[str, list[int]] = {arm: [] for arm, _ in shares}
    orders: dict[str, int] = dict.fromkeys(spend, 0)
    draw = ArmDraw(rules.holdout_salt, name, shares)
    for contact_id, count, cents in store.spend_between(after, until):
        arm = draw.arm(contact_id)
        spend[arm].append(cents)
        orders[arm] += count
    first = spend[shares[0][0]]
    totals = []
    for arm, cents in spend.items():
        buyers = sum(1 for c in cents if c > 0)
        totals.append(ArmTotals(arm, len(cents), buyers, orders[arm], sum(cents), _proportion(buyers, len(cents)),
                                _mean([c / 100 for c in cents]), None if cents is first else _versus(cents, first)))
    return tuple(totals)


def _versus(cents: list[int], first: list[int]) -> Versus:
    """This arm's revenue per customer minus the first arm's, with Welch's 95 % interval (statsmodels)."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    if min(len(cents), len(first)) < MIN_GROUP:
        mean = (sum(cents) / len(cents) - sum(first) / len(first)) / 100 if cents and first else None
        return Versus(Interval(mean), TOO_FEW)
    mine, theirs = DescrStatsW([c / 100 for c in cents]), DescrStatsW([c / 100 for c in first])
    difference = float(mine.mean - theirs.mean)
    if mine.std == 0 and theirs.std == 0:  # nobody in either arm ordered anything (or all alike): no spread
        return Versus(Interval(difference, difference, difference),
                      NO_DIFFERENCE if difference == 0 else (MORE if difference > 0 else LESS))
    low, high = CompareMeans(mine, theirs).tconfint_diff(alpha=1 - CONFIDENCE, usevar="unequal")
    verdict = MORE if low > 0 else LESS if high < 0 else NO_DIFFERENCE
    return Versus(Interval(difference, float(low), float(high)), verdict)


def _arm_report(arm: str, value: Decimal, share: Decimal, windows: list[tuple[str, datetime, datetime]],
                outcomes: dict[tuple[str, datetime], tuple[int, int]], as_of: datetime) -> ArmReport:
    measured = [outcomes[(contact_id, at)] for contact_id, at, end in windows if end <= as_of]
    orders = [n for n, _ in measured]
    cents = [c for _, c in measured]
    converted = sum(1 for n in orders if n > 0)
    note = "" if len(measured) >= MIN_GROUP else (
        f"too few customers yet: {len(measured)} closed window{'s' if len(measured) != 1 else ''}, "
        f"at least {MIN_GROUP} are needed for the intervals to mean much")
    return ArmReport(arm, value, share, len(windows), len(windows) - len(measured), len(measured), converted,
                     sum(orders), sum(cents), _proportion(converted, len(measured)), _mean(orders),
                     _mean([c / 100 for c in cents]), note)


def _proportion(count: int, total: int) -> Interval:
    from statsmodels.stats.proportion import proportion_confint

    if total == 0:
        return Interval(None)
    low, high = proportion_confint(count, total, alpha=1 - CONFIDENCE, method="wilson")
    return Interval(count / total, float(low), float(high))


def _mean(values: Iterable[float]) -> Interval:
    """The mean with a 95 % t interval (statsmodels' DescrStatsW); no interval from fewer than two values."""
    from statsmodels.stats.weightstats import DescrStatsW

    data = list(values)
    if not data:
        return Interval(None)
    mean = sum(data) / len(data)
    if len(data) < 2 or len(set(data)) == 1:
        return Interval(mean, mean, mean) if len(data) >= 2 else Interval(mean)
    low, high = DescrStatsW(data).tconfint_mean(alpha=1 - CONFIDENCE)
    return Interval(mean, float(low), float(high))


# JSON ------------------------------------------------------------------------------------------------------------

def experiment_summary_json(rules: Rules, name: str, span: Span | None) -> dict[str, Any]:
    """What GET /api/campaigns lists of an experiment."""
    experiment = rules.experiments[name]
    _, metric, op = rules.experiment_conditions[name]
    if span is not None and span.definition != definition_digest(experiment):
        span = None
    status = "not started" if span is None else ("running" if span.ended_at is None else "ended")
    return {"name": name, "segment": experiment.segment, "metric": metric, "operator": op, "status": status,
            "winner": experiment.winner, "outcomeDays": experiment.outcome_days,
            "startedAt": None if span is None else iso(span.started_at),
            "endedAt": None if span is None or span.ended_at is None else iso(span.ended_at),
            "arms": [{"arm": arm, "value": _value(metric, settings.value), "share": float(settings.share)}
                     for arm, settings in experiment.arms.items()]}


def report_json(report: ExperimentReport, rules: Rules) -> dict[str, Any]:
    return {
        **experiment_summary_json(rules, report.name, report.span),
        "asOf": iso(report.as_of), "currency": rules.currency, "confidence": CONFIDENCE,
        "restarted": bool(report.span and report.span.restarted),
        "arms": [{
            "arm": a.arm, "value": _value(report.metric, a.value),
            "share": float(a.share), "entered": a.entered, "stillOpen": a.still_open, "measured": a.measured,
            "converted": a.converted, "orders": a.orders, "revenue": f"{Decimal(a.cents) / 100:.2f}",
            "conversion": _interval(a.conversion), "ordersPerCustomer": _interval(a.orders_per_customer),
            "spendPerCustomer": _interval(a.spend_per_customer, money=True), "note": a.note,
        } for a in report.arms],
        "wholeArms": [{
            "arm": t.arm, "customers": t.customers, "buyers": t.buyers, "orders": t.orders,
            "revenue": f"{Decimal(t.cents) / 100:.2f}", "conversion": _interval(t.conversion),
            "revenuePerCustomer": _interval(t.spend_per_customer, money=True),
            "versusFirstArm": None if t.versus is None else {
                "difference": _interval(t.versus.difference, money=True, signed=True), "verdict": t.versus.verdict},
        } for t in report.whole],
    }


def _value(metric: str, value: Decimal) -> str | float:
    return f"{value:.2f}" if metric in MONEY_METRICS else float(value)


def _interval(interval: Interval, money: bool = False, signed: bool = False) -> dict[str, Any]:
    def shown(x: float | None) -> Any:
        if x is None:
            return None
        if not money:
            return round(x, 4)
        return f"{Decimal(repr(x)).quantize(Decimal('0.01')):{'+' if signed else ''}f}"
    return {"value": shown(interval.value), "low": shown(interval.low), "high": shown(interval.high)}
