"""Campaign outcome reports: customers sent and held out, how many ordered within the campaign's window, the
uplift with a 95 % confidence interval, and a plain verdict. statsmodels does the statistics.

Everyone who triggered the campaign counts in the group they were drawn into (intent to treat): a sent customer
whose event was superseded or failed still counts as sent, so the uplift is that of the campaign as it runs.
Only events whose outcome window has closed are compared; the ones still open are counted apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from rules import Rules
from worker.serialize import iso
from worker.store.base import OutcomeCell, Store

CONFIDENCE = 0.95
POWER = 0.8
DEFAULT_EFFECT = 0.05  # the uplift (in conversion points) a "too few customers yet" verdict sizes the groups for
MIN_GROUP = 30  # fewer closed windows than this in a group: too few to say anything
UPLIFT, NO_EFFECT, NEGATIVE, TOO_FEW, NO_HOLDOUT = (
    "uplift", "no measurable effect", "negative effect", "too few customers yet", "no holdout group")


@dataclass(frozen=True)
class Group:
    """One group's closed windows: customers, those who ordered, their orders and spend."""

    customers: int = 0
    converted: int = 0
    orders: int = 0
    cents: int = 0

    @property
    def conversion(self) -> float | None:
        return self.converted / self.customers if self.customers else None

    @property
    def revenue_per_customer_cents(self) -> float | None:
        return self.cents / self.customers if self.customers else None

    def __add__(self, other: Group) -> Group:
        return Group(self.customers + other.customers, self.converted + other.converted,
                     self.orders + other.orders, self.cents + other.cents)


@dataclass(frozen=True)
class Comparison:
    """Sent against held out: the uplift in conversion (absolute and relative) with intervals, and the verdict."""

    verdict: str
    absolute: float | None = None
    absolute_interval: tuple[float, float] | None = None
    relative: float | None = None
    relative_interval: tuple[float, float] | None = None
    more_needed: tuple[int, int] | None = None  # (sent, held out) customers still needed to see DEFAULT_EFFECT
    explanation: str = ""


@dataclass(frozen=True)
class Period:
    label: str  # "all" or YYYY-MM
    sent: Group
    held_out: Group
    open_sent: int
    open_held_out: int
    comparison: Comparison


@dataclass(frozen=True)
class CampaignReport:
    campaign: str
    holdout_percent: Decimal
    outcome_days: int
    as_of: datetime
    total: Period
    months: tuple[Period, ...]


def campaign_report(store: Store, rules: Rules, campaign: str, as_of: datetime,
                    effect: float = DEFAULT_EFFECT) -> CampaignReport:
    """The report of one campaign of the rules at `as_of`, overall and per month of occurredAt (UTC)."""
    settings = rules.campaigns[campaign]
    cells = store.campaign_outcomes(campaign, as_of)
    months = sorted({cell.month for cell in cells})
    return CampaignReport(campaign, settings.holdout_percent, settings.outcome_days, as_of,
                          _period("all", cells, effect),
                          tuple(_period(month, [c for c in cells if c.month == month], effect, sized=False)
                                for month in months))


def _period(label: str, cells: Iterable[OutcomeCell], effect: float, sized: bool = True) -> Period:
    closed: dict[bool, Group] = defaultdict(Group)
    still_open: dict[bool, int] = defaultdict(int)
    for cell in cells:
        if cell.closed:
            closed[cell.held_out] += Group(cell.events, cell.converted, cell.orders, cell.cents)
        else:
            still_open[cell.held_out] += cell.events
    sent, held = closed[False], closed[True]
    return Period(label, sent, held, still_open[False], still_open[True], compare(sent, held, effect, sized))


def compare(sent: Group, held: Group, effect: float = DEFAULT_EFFECT, sized: bool = True) -> Comparison:
    """The verdict on sent against held out, with the statistics behind it (statsmodels, imported when asked).
    `sized`: say how many more customers a verdict short of one needs (the overall period only: sizing takes a
    solver run, and a month's answer is the overall one's)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    if held.customers == 0:
        return Comparison(NO_HOLDOUT, explanation="no customer has been held out with a closed window yet: set "
                          "holdout_percent on the campaign, then wait outcome_days")
    if sent.customers == 0:
        return Comparison(TOO_FEW, explanation="no sent customer's window has closed yet")
    p1, p0 = sent.conversion, held.conversion
    assert p1 is not None and p0 is not None
    low, high = confint_proportions_2indep(sent.converted, sent.customers, held.converted, held.customers,
                                           method="newcomb", compare="diff", alpha=1 - CONFIDENCE)
    absolute = (float(low), float(high))
    relative = relative_interval = None
    if p0 > 0 and sent.converted > 0:
        relative = p1 / p0 - 1
        r_low, r_high = confint_proportions_2indep(sent.converted, sent.customers, held.converted, held.customers,
                                                   method="log", compare="ratio", alpha=1 - CONFIDENCE)
        relative_interval = (float(r_low) - 1, float(r_high) - 1)
    common = {"absolute": p1 - p0, "absolute_interval": absolute, "relative": relative,
              "relative_interval": relative_interval}
    if min(sent.customers, held.customers) < MIN_GROUP or sent.converted + held.converted == 0:
        more = more_needed(sent, held, effect) if sized else None
        explanation = (_too_few(sent, held, more, effect) if more else
                       f"{sent.customers} sent and {held.customers} held-out customers have closed windows")
        return Comparison(TOO_FEW, more_needed=more, explanation=explanation, **common)
    if absolute[0] > 0:
        return Comparison(UPLIFT, explanation=f"sent customers ordered more: {_points(p1 - p0)} points (95 % "
                          f"interval {_points(absolute[0])} to {_points(absolute[1])})", **common)
    if absolute[1] < 0:
        return Comparison(NEGATIVE, explanation=f"sent customers ordered less: {_points(p1 - p0)} points (95 % "
                          f"interval {_points(absolute[0])} to {_points(absolute[1])})", **common)
    more = more_needed(sent, held, effect) if sized else None
    return Comparison(NO_EFFECT, more_needed=more,
                      explanation=f"the difference ({_points(p1 - p0)} points) could be chance: the 95 % interval "
                                  f"{_points(absolute[0])} to {_points(absolute[1])} includes 0", **common)


def more_needed(sent: Group, held: Group, effect: float = DEFAULT_EFFECT) -> tuple[int, int]:
    """How many more (sent, held out) customers with closed windows it takes to detect an uplift of `effect`
    (conversion points) over the held-out conversion, at 95 % confidence and 80 % power, keeping the groups'
    ratio: a two-sample test of proportions sized by statsmodels."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    base = held.conversion if held.customers and held.conversion else 0.1
    target = min(base + effect, 0.999)
    ratio = sent.customers / held.customers if sent.customers and held.customers else 9.0
    held_needed = NormalIndPower().solve_power(effect_size=proportion_effectsize(target, base), alpha=1 - CONFIDENCE,
                                               power=POWER, ratio=ratio, alternative="two-sided")
    return (max(0, math.ceil(held_needed * ratio) - sent.customers), max(0, math.ceil(held_needed) - held.customers))


def _too_few(sent: Group, held: Group, more: tuple[int, int], effect: float) -> str:
    return (f"{sent.customers} sent and {held.customers} held-out customers have closed windows; about {more[0]:,} "
            f"more sent and {more[1]:,} more held out are needed to detect an uplift of {effect * 100:.1f} points")


def _points(share: float) -> str:
    return f"{share * 100:+.1f}" if share else "0.0"


# JSON -------------------------------------------------------------------------------------------------------------

def report_json(report: CampaignReport, currency: str) -> dict[str, Any]:
    return {"campaign": report.campaign, "holdoutPercent": float(report.holdout_percent),
            "outcomeDays": report.outcome_days, "asOf": iso(report.as_of), "currency": currency,
            "confidence": CONFIDENCE, "total": period_json(report.total),
            "months": [period_json(p) for p in report.months]}


def period_json(period: Period) -> dict[str, Any]:
    c = period.comparison
    return {
        "period": period.label,
        "sent": group_json(period.sent, period.open_sent),
        "heldOut": group_json(period.held_out, period.open_held_out),
        "uplift": {
            "absolute": _round(c.absolute), "absoluteInterval": _pair(c.absolute_interval),
            "relative": _round(c.relative), "relativeInterval": _pair(c.relative_interval),
        },
        "verdict": c.verdict,
        "explanation": c.explanation,
        "moreNeeded": None if c.more_needed is None else {"sent": c.more_needed[0], "heldOut": c.more_needed[1]},
    }


def group_json(group: Group, still_open: int) -> dict[str, Any]:
    per = group.revenue_per_customer_cents
    return {"customers": group.customers, "converted": group.converted, "conversion": _round(group.conversion),
            "orders": group.orders, "revenue": _money(group.cents),
            "revenuePerCustomer": None if per is None else _money(round(per)), "stillOpen": still_open}


def _money(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pair(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 4), round(pair[1], 4)]


