"""The experiments page: one threshold experiment of the rules in force (its segment, condition, status and outcome
window) with, per arm, every customer drawn into it and what they ordered while it ran (revenue per customer against
the first arm's, with the verdict), then the customers who entered the segment and what they ordered after, with 95 %
intervals and a chart of spend per customer; and the experiments as the campaigns list shows them. The figures are
worker.experiments' report, as in GET /api/experiments/<name>/outcomes."""

from __future__ import annotations

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
from worker.api.dashboard.charts import spend_chart
from worker.api.dashboard.formats import share, when
from worker.experiments import (
    LESS,
    MORE,
    NO_DIFFERENCE,
    TOO_FEW,
    Interval,
    Span,
    definition_digest,
    experiment_report,
    spans,
)
from worker.outcomes import MIN_GROUP
from worker.store.base import Store

# The status badge: its words are always in it, the colour only repeats them.
STATUS_CSS = {"not started": "verdict-none", "running": "verdict-waiting", "ended": "verdict-uplift"}
# The whole arms' verdict, in the campaigns pages' badge colours (their words are always in the badge too).
VERSUS_CSS = {MORE: "verdict-uplift", LESS: "verdict-negative", NO_DIFFERENCE: "verdict-none",
              TOO_FEW: "verdict-waiting"}


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


def signed_money(value: float, currency: str) -> str:
    """A difference of money with its sign: '+$12.40', '-$3.10', '$0.00'."""
    rounded = Decimal(repr(value)).quantize(Decimal("0.01"))
    return ("+" if rounded > 0 else "") + format_money(rounded, currency)


def versus_css(verdict: str) -> str:
    return VERSUS_CSS.get(verdict, "verdict-waiting")


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

    def spend(figure: Interval) -> str:
        return count_with_interval(figure, lambda x: money(x, currency))

    return render_template(
        "dashboard/experiments.html", report=report, as_of=as_of, currency=currency, min_group=MIN_GROUP,
        status_css=STATUS_CSS[report.status],
        status_words=status_words(report.experiment, report.span, report.metric, report.op, currency),
        chart=spend_chart(report.arms, currency, spend), versus_css=versus_css,
        threshold=lambda value: threshold(report.metric, report.op, value, currency),
        arm_value=lambda value: arm_value(report.metric, value, currency), written=written,
        conversion=lambda figure: count_with_interval(figure, share),
        per_customer=lambda figure: count_with_interval(figure, lambda x: f"{x:.2f}"),
        spend=spend, difference=lambda figure: count_with_interval(figure, lambda x: signed_money(x, currency)))
