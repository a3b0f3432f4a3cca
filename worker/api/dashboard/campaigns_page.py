"""The campaigns pages: every campaign of the rules in force with its holdout, outcome window and measured outcome
(sent against held out, the uplift with its 95 % interval, the verdict in words), and one campaign by month with a
chart of conversion by group. The figures are worker.outcomes' report, as in GET /api/campaigns/<name>/outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import render_template
from werkzeug.exceptions import NotFound

from rules import Rules
from rules.describe import describe_campaign
from rules.schema import Campaign
from worker.api.context import context
from worker.api.dashboard.blueprint import bp
from worker.api.dashboard.charts import conversion_chart, uplift_chart
from worker.api.dashboard.experiments_page import experiment_lines
from worker.api.dashboard.formats import number, points, share, signed_share
from worker.outcomes import (
    DEFAULT_EFFECT,
    NEGATIVE,
    NO_EFFECT,
    NO_HOLDOUT,
    TOO_FEW,
    UPLIFT,
    CampaignReport,
    Period,
    campaign_report,
)

# The verdict's badge: its words are always in it, the colour only repeats them.
VERDICT_CSS = {UPLIFT: "verdict-uplift", NEGATIVE: "verdict-negative", NO_EFFECT: "verdict-none",
               TOO_FEW: "verdict-waiting", NO_HOLDOUT: "verdict-waiting"}


@dataclass(frozen=True)
class CampaignCard:
    """One campaign as the page shows it: the rules' settings in words and its report at the page's moment."""

    name: str
    description: str
    campaign: Campaign
    report: CampaignReport
    subscribers: tuple[str, ...] = ()  # the API's subscriptions to it (n8n trigger nodes), by their description

    @property
    def measured(self) -> bool:
        """Whether there is a control group to compare with: a holdout now, or customers drawn into one earlier
        (holdout_percent set back to 0 keeps them)."""
        total = self.report.total
        return bool(self.campaign.holdout_percent or total.held_out.customers or total.open_held_out)

    @property
    def holdout(self) -> str:
        """The holdout as rules.yaml has it: '10 %', '12.5 %', '0 %'."""
        return f"{self.campaign.holdout_percent.normalize():f} %"

    def explanation(self, period: Period) -> str:
        """The verdict in a sentence. While the control group has no closed window yet, what the page is waiting for:
        the report's own words ('set holdout_percent') would send a reader to set what is set already."""
        comparison = period.comparison
        if comparison.verdict != NO_HOLDOUT:
            return _sentence(comparison.explanation)
        if period.open_held_out:
            return (f"No held-out customer's {self.report.outcome_days}-day window has closed yet "
                    f"({number(period.open_held_out)} still open): the comparison starts as they close.")
        if self.campaign.holdout_percent:
            return (f"Nobody has been held out yet: {self.holdout} of the customers who trigger {self.name} from now "
                    "on are.")
        return "No held-out customer's window has closed yet."

    def more_needed(self, period: Period) -> str | None:
        """How many more customers it takes to see an uplift, where the explanation does not say it already."""
        comparison = period.comparison
        if comparison.verdict != NO_EFFECT or comparison.more_needed is None:
            return None
        sent, held = comparison.more_needed
        return (f"About {number(sent)} more sent and {number(held)} more held-out customers with closed windows are "
                f"needed to detect an uplift of {DEFAULT_EFFECT * 100:g} points.")


def verdict_css(verdict: str) -> str:
    return VERDICT_CSS.get(verdict, "verdict-waiting")


def interval(pair: tuple[float, float] | None, relative: bool = False) -> str:
    """A 95 % interval in words: '+6.8 to +10.6' points, or '+30 % to +55 %' relative."""
    if pair is None:
        return "—"
    shown = signed_share if relative else points
    return f"{shown(pair[0])} to {shown(pair[1])}"


@bp.get("/campaigns")
def campaigns() -> str:
    ctx = context()
    rules = ctx.rules()
    as_of = ctx.clock()
    cards = [_card(rules, name, as_of) for name in rules.campaigns]
    return render_template("dashboard/campaigns.html", cards=cards, as_of=as_of,
                           experiments=experiment_lines(ctx.store, rules), **_formats())


@bp.get("/campaigns/<path:name>")
def campaign(name: str) -> str:
    ctx = context()
    rules = ctx.rules()
    if name not in rules.campaigns:
        listed = ", ".join(rules.campaigns) or "none"
        raise NotFound(f"No campaign is named '{name}' in the rules in force (campaigns: {listed}).")
    as_of = ctx.clock()
    card = _card(rules, name, as_of)
    months = card.report.months
    return render_template("dashboard/campaigns.html", card=card, as_of=as_of,
                           conversion=conversion_chart(months, held_out=card.measured) if months else None,
                           uplift=uplift_chart(months) if card.measured else None, **_formats())


def _card(rules: Rules, name: str, as_of: datetime) -> CampaignCard:
    campaign = rules.campaigns[name]
    store = context().store
    subscribers = tuple(s.description or s.url for s in store.subscriptions() if name in s.campaigns)
    return CampaignCard(name, describe_campaign(name, campaign, rules.currency), campaign,
                        campaign_report(store, rules, name, as_of), subscribers)


def _formats() -> dict[str, object]:
    return {"share": share, "points": points, "signed_share": signed_share, "interval": interval,
            "verdict_css": verdict_css}


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
