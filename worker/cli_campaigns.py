"""`campaigns report [NAME]`: each campaign's measured outcomes, sent against held out, as a readable report (or
JSON). A Click command that worker.cli registers."""

from __future__ import annotations

import json

import click

from worker.cli import Context, _as_of, pass_context
from worker.experiments import ExperimentReport, Interval, experiment_report
from worker.experiments import report_json as experiment_json
from worker.outcomes import DEFAULT_EFFECT, CampaignReport, Group, Period, campaign_report, report_json


@click.group()
def campaigns() -> None:
    """Campaign outcomes: holdout groups and measured uplift."""


@campaigns.command("report")
@click.argument("name", required=False)
@click.option("--as-of", help="Report as of this ISO date/datetime (windows closed by then).")
@click.option("--effect", type=click.FloatRange(0.001, 0.5), default=DEFAULT_EFFECT, show_default=True,
              help="The uplift (share of customers, 0.05 = 5 points) to size 'too few customers yet' for.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@pass_context
def campaigns_report(ctx: Context, name: str | None, as_of: str | None, effect: float, as_json: bool) -> None:
    """Sent against held out for one campaign (or every one): conversion, uplift with its 95 % interval, verdict.
    NAME may also be a threshold experiment: each arm's entrants and what they ordered after."""
    rules = ctx.rules_source().current()
    if name is not None and name not in rules.campaigns and name not in rules.experiments:
        raise click.UsageError(f"'{name}' is not a campaign or an experiment of the rules (campaigns: "
                               f"{', '.join(rules.campaigns) or 'none'}; experiments: "
                               f"{', '.join(rules.experiments) or 'none'})")
    moment = _as_of(as_of)
    campaign_names = [name] if name in rules.campaigns else [] if name else list(rules.campaigns)
    experiment_names = [name] if name in rules.experiments else [] if name else list(rules.experiments)
    reports = [campaign_report(ctx.store, rules, n, moment, effect) for n in campaign_names]
    experiments = [experiment_report(ctx.store, rules, n, moment) for n in experiment_names]
    if as_json:
        shown = [report_json(r, rules.currency) for r in reports] + [experiment_json(r, rules) for r in experiments]
        click.echo(json.dumps(shown[0] if name else shown, indent=2))
        return
    texts = [report_text(r, rules.currency) for r in reports] + [experiment_text(r, rules.currency)
                                                                  for r in experiments]
    click.echo("\n\n".join(texts) or "No campaigns in the rules.")


def experiment_text(report: ExperimentReport, currency: str) -> str:
    """An experiment's report as people read it: one block per arm."""
    span = report.span
    when = ("not started: it starts at the next evaluation run" if span is None else
            f"running since {span.started_at:%Y-%m-%d %H:%M} UTC" if span.ended_at is None else
            f"ran {span.started_at:%Y-%m-%d} to {span.ended_at:%Y-%m-%d}, winner {span.winner}")
    lines = [f"experiment {report.name}: {report.experiment.segment} at {report.metric} {report.op} <arm's value>; "
             f"{when}; outcome window {report.outcome_days} days (as of {report.as_of:%Y-%m-%d %H:%M} UTC)"]
    if report.whole:
        first = report.whole[0].arm
        lines.append(f"  every customer of each arm, while it ran (compared with {first}, the first arm):")
        for totals in report.whole:
            spend = totals.spend_per_customer
            line = (f"    {totals.arm}: {totals.customers:,} customers, {totals.buyers:,} bought, revenue "
                    f"{totals.cents / 100:,.2f} {currency}, {spend.value or 0:,.2f} per customer")
            if totals.versus is not None:
                difference = totals.versus.difference
                interval = "" if difference.low is None or difference.high is None else (
                    f" (95 % interval {difference.low:+,.2f} to {difference.high:+,.2f})")
                line += f"; {difference.value or 0:+,.2f}{interval}: {totals.versus.verdict}"
            lines.append(line)
        lines.append(f"  customers who entered {report.experiment.segment}, and what they did in the "
                     f"{report.outcome_days} days after:")
    for arm in report.arms:
        lines.append(f"  {arm.arm} ({report.metric} {report.op} {arm.value}, {arm.share} % of customers): "
                     f"{arm.entered:,} entered {report.experiment.segment}, {arm.measured:,} measured, "
                     f"{arm.still_open:,} still open")
        if not arm.measured:
            continue
        conv, orders, spend = arm.conversion, arm.orders_per_customer, arm.spend_per_customer
        lines.append(f"    ordered again {conv.value:.1%} ({_span(conv, '.1%')}); orders per customer "
                     f"{orders.value:.2f} ({_span(orders, '.2f')}); spend per customer {spend.value:,.2f} {currency} "
                     f"({_span(spend, ',.2f')})")
        if arm.note:
            lines.append(f"    {arm.note}")
    return "\n".join(lines)


def _span(interval: Interval, spec: str) -> str:
    if interval.low is None or interval.high is None:
        return "no interval from one customer"
    return f"95 % interval {format(interval.low, spec)} to {format(interval.high, spec)}"


def report_text(report: CampaignReport, currency: str) -> str:
    total = report.total
    lines = [f"{report.campaign}: holdout {report.holdout_percent} %, outcome window {report.outcome_days} days "
             f"(as of {report.as_of:%Y-%m-%d %H:%M} UTC)"]
    if not report.months:
        return lines[0] + "\n  no measured events yet"
    lines += [_group_line("sent", total.sent, total.open_sent, currency),
              _group_line("held out", total.held_out, total.open_held_out, currency)]
    lines.append(f"  verdict: {total.comparison.verdict}: {total.comparison.explanation}")
    if total.comparison.relative is not None and total.comparison.relative_interval is not None:
        low, high = total.comparison.relative_interval
        lines.append(f"  relative uplift {total.comparison.relative:+.0%} (95 % interval {low:+.0%} to {high:+.0%})")
    if len(report.months) > 1:
        lines.append("  by month of the event:")
        lines += [_month_line(period) for period in report.months]
    return "\n".join(lines)


def _group_line(label: str, group: Group, still_open: int, currency: str) -> str:
    if not group.customers:
        return f"  {label:<9} no closed window yet ({still_open:,} still open)"
    per = group.revenue_per_customer_cents or 0
    return (f"  {label:<9} {group.customers:>7,} customers, {group.converted:,} ordered ({group.conversion:.1%}), "
            f"revenue {group.cents / 100:,.2f} {currency} ({per / 100:,.2f} per customer); {still_open:,} still open")


def _month_line(period: Period) -> str:
    sent, held = period.sent, period.held_out
    conv = lambda g: "-" if g.conversion is None else f"{g.conversion:.1%}"  # noqa: E731
    return (f"    {period.label}: sent {sent.customers:,} ({conv(sent)}), held out {held.customers:,} "
            f"({conv(held)}): {period.comparison.verdict}")
