"""The experiments page: one threshold experiment of the rules in force (its segment, condition, status and outcome
window) with, per arm, the customers who entered the segment and what they ordered after, with 95 % intervals and a
chart of spend per customer; and the experiments as the campaigns list shows them. The figures are
worker.experiments' report, as in GET /api/experiments/<name>/outcomes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from flask import render_template
from werkzeug.exceptions import NotFound

from rules import Rules
from rules.describe import PHRASES, describe_condition
from rules.money import format_money
from rules.schema import Condition, Experiment
from worker.api.context import context
from worker.api.dashboard.blueprint import bp
from worker.api.dashboard.charts import (
    BAR_MAX_WIDTH,
    CAMPAIGN_LEFT,
    CAMPAIGN_RIGHT,
    CAMPAIGN_WIDTH,
    CONVERSION_BOTTOM,
    CONVERSION_HEIGHT,
    CONVERSION_TOP,
)
from worker.api.dashboard.formats import share, when
from worker.experiments import ArmReport, Interval, Span, definition_digest, experiment_report, spans
from worker.outcomes import MIN_GROUP
from worker.store.base import Store

# The status badge: its words are always in it, the colour only repeats them.
STATUS_CSS = {"not started": "verdict-none", "running": "verdict-waiting", "ended": "verdict-uplift"}


@dataclass(frozen=True)
class ExperimentLine:
    """One experiment as the campaigns list shows it."""

    name: str
    condition: str  # 'VIP when totalSpend gt 5000 / 3000 / 10000'
    status: str
    status_words: str

    @property
    def status_css(self) -> str:
        return STATUS_CSS[self.status]


def experiment_lines(store: Store, rules: Rules) -> list[ExperimentLine]:
    if not rules.experiments:
        return []
    started = spans(store)
    lines = []
    for name, experiment in rules.experiments.items():
        span = current_span(experiment, started.get(name))
        _, metric, op = rules.experiment_conditions[name]
        values = " / ".join(written(arm.value) for arm in experiment.arms.values())
        lines.append(ExperimentLine(name, f"{experiment.segment} when {metric} {op} {values}", status(span),
                                    status_words(experiment, span, metric, op, rules.currency)))
    return lines


def current_span(experiment: Experiment, span: Span | None) -> Span | None:
    """The span measured under the experiment as the rules define it now (as experiment_report takes it)."""
    return span if span is not None and span.definition == definition_digest(experiment) else None


def status(span: Span | None) -> str:
    if span is None:
        return "not started"
    return "running" if span.ended_at is None else "ended"


def status_words(experiment: Experiment, span: Span | None, metric: str, op: str, currency: str) -> str:
    """What follows the status badge, so that the two read as one sentence: 'running' + ' since 2026-01-05 12:00
    UTC.', 'ended' + ' 2026-02-01 12:00 UTC with winner low: ...'."""
    if span is None:
        return "yet: it starts at the next evaluation run."
    if span.ended_at is not None:
        winner = experiment.arms.get(span.winner or "")
        at = "" if winner is None else (f": everyone is classified at {written(winner.value)} "
                                        f"({threshold(metric, op, winner.value, currency)})")
        return f"{when(span.ended_at)} with winner {span.winner}{at}."
    words = f"since {when(span.started_at)}"
    if span.restarted:
        words += " (measuring began again then: the experiment was changed, or its winner withdrawn)"
    if experiment.winner is not None:
        words += f"; winner {experiment.winner} is set, so it ends at the next evaluation run"
    return words + "."


def written(value: Decimal) -> str:
    """A threshold as rules.yaml has it: 5000, 2.5."""
    return f"{value.normalize():f}"


def threshold(metric: str, op: str, value: Decimal, currency: str) -> str:
    return describe_condition(Condition(metric, op, value), currency)


def arm_value(metric: str, value: Decimal, currency: str) -> str:
    """An arm's value in words: '$3,000', '90 days'."""
    return PHRASES[metric][1](value, currency)


def count_with_interval(figure: Interval, shown: Callable[[float], str]) -> str:
    """A figure with its 95 % interval: '12.5 % (8.1 % to 18.7 %)'; alone where there is no interval (one
    customer), '—' where there is nobody to count."""
    if figure.value is None:
        return "—"
    if figure.low is None or figure.high is None:
        return shown(figure.value)
    return f"{shown(figure.value)} ({shown(figure.low)} to {shown(figure.high)})"


def money(value: float, currency: str) -> str:
    return format_money(Decimal(repr(value)).quantize(Decimal("0.01")), currency)


@bp.get("/experiments/<path:name>")
def experiment(name: str) -> str:
    ctx = context()
    rules = ctx.rules()
    if name not in rules.experiments:
        listed = ", ".join(rules.experiments) or "none"
        raise NotFound(f"No experiment is named '{name}' in the rules in force (experiments: {listed}).")
    as_of = ctx.clock()
    report = experiment_report(ctx.store, rules, name, as_of)
    currency = rules.currency
    return render_template(
        "dashboard/experiments.html", report=report, as_of=as_of, currency=currency, min_group=MIN_GROUP,
        status_css=STATUS_CSS[report.status],
        status_words=status_words(report.experiment, report.span, report.metric, report.op, currency),
        chart=spend_chart(report.arms, currency),
        threshold=lambda value: threshold(report.metric, report.op, value, currency),
        arm_value=lambda value: arm_value(report.metric, value, currency), written=written,
        conversion=lambda figure: count_with_interval(figure, share),
        per_customer=lambda figure: count_with_interval(figure, lambda x: f"{x:.2f}"),
        spend=lambda figure: count_with_interval(figure, lambda x: money(x, currency)))


# --- spend per customer per arm, with its 95 % interval ---------------------------------------------------------

@dataclass(frozen=True)
class ArmBar:
    """One arm's mean spend per customer (the bar's top) and its interval (the whisker from low to high); `y` None
    when none of its windows has closed (no bar, a dash)."""

    arm: str
    x: float
    centre: float
    width: float
    y: float | None
    low_y: float | None
    high_y: float | None
    title: str

    @property
    def height(self) -> float:
        return 0.0 if self.y is None else round(CONVERSION_BOTTOM - self.y, 2)


@dataclass(frozen=True)
class SpendChart:
    bars: list[ArmBar]
    y_ticks: list[tuple[float, str]]
    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


def spend_chart(arms: tuple[ArmReport, ...], currency: str) -> SpendChart | None:
    """None while no arm has a closed window: there is nothing to draw yet."""
    figures = [a.spend_per_customer for a in arms]
    if all(f.value is None for f in figures):
        return None
    top = _money_top(max(max(f.value, f.high or 0.0) for f in figures if f.value is not None))
    step = (CAMPAIGN_RIGHT - CAMPAIGN_LEFT) / len(arms)
    plot = CONVERSION_BOTTOM - CONVERSION_TOP

    def y_of(value: float | None) -> float | None:
        # a t interval of skewed spend can reach below 0: drawn from 0, the bar's title keeps the figure
        return None if value is None else round(CONVERSION_BOTTOM - plot * max(value, 0.0) / top, 2)

    bars = []
    for index, arm in enumerate(arms):
        f = arm.spend_per_customer
        title = f"{arm.arm}: no closed window yet" if f.value is None else \
            f"{arm.arm}: {count_with_interval(f, lambda x: money(x, currency))} per customer, " \
            f"{arm.measured} closed windows"
        centre, width = CAMPAIGN_LEFT + step * (index + 0.5), min(step * 0.5, BAR_MAX_WIDTH)
        bars.append(ArmBar(arm.arm, round(centre - width / 2, 2), round(centre, 2), round(width, 2), y_of(f.value),
                           y_of(f.low), y_of(f.high), title))
    ticks = [(y_of(top * part), format_money(Decimal(repr(top * part)), currency, cents=False))
             for part in (0, 0.5, 1)]
    return SpendChart(bars, ticks, CAMPAIGN_WIDTH, CONVERSION_HEIGHT, CAMPAIGN_LEFT, CAMPAIGN_RIGHT, CONVERSION_TOP,
                      CONVERSION_BOTTOM)


def _money_top(reach: float) -> float:
    """The scale's top: the first of 1, 2, 5, 10, 20, 50 ... currency units not below `reach`."""
    magnitude = 10 ** max(0, math.floor(math.log10(reach))) if reach > 0 else 1
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= reach)
