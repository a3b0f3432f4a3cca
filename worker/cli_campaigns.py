"""`campaigns report [NAME]`: each campaign's measured outcomes, sent against held out, as a readable report (or
JSON). A Click command that worker.cli registers."""

from __future__ import annotations

import json

import click

from worker.cli import Context, _as_of, pass_context
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
    """Sent against held out for one campaign (or every one): conversion, uplift with its 95 % interval, verdict."""
    rules = ctx.rules_source().current()
    if name is not None and name not in rules.campaigns:
        raise click.UsageError(f"'{name}' is not a campaign of the rules (campaigns: "
                               f"{', '.join(rules.campaigns) or 'none'})")
    moment = _as_of(as_of)
    names = [name] if name else list(rules.campaigns)
    reports = [campaign_report(ctx.store, rules, n, moment, effect) for n in names]
    if as_json:
        shown = [report_json(r, rules.currency) for r in reports]
        click.echo(json.dumps(shown[0] if name else shown, indent=2))
        return
    click.echo("\n\n".join(report_text(r, rules.currency) for r in reports) or "No campaigns in the rules.")


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
