"""The rules in a marketer's words ('VIP: lifetime spend over $5,000'), section by section, and which of those lines
a candidate rules file changes. Pure: the dashboard's rules page renders what this returns."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from difflib import SequenceMatcher

from rules.money import NO_CENTS, format_money
from rules.schema import (
    NO_ORDERS_FREQUENCY,
    ONE_ORDER_FREQUENCY,
    Campaign,
    Condition,
    FrequencyBand,
    OrderRules,
    RfmGroupRule,
    Rules,
    Segment,
)
from rules.webhooks import Schedule

# Each phrase takes the threshold already worded: '{n}' is '90 days', '3 orders', '$5,000' or '4'.
_DAYS_SINCE_LAST_ORDER = {"gt": "no order for more than {n}", "gte": "no order for at least {n}",
                          "lt": "last order less than {n} ago", "lte": "an order in the last {n}",
                          "eq": "last order exactly {n} ago"}
_DAYS_SINCE_FIRST_ORDER = {"gt": "first order more than {n} ago", "gte": "first order at least {n} ago",
                           "lt": "first order less than {n} ago", "lte": "first order in the last {n}",
                           "eq": "first order exactly {n} ago"}
_SPEND = {"gt": "lifetime spend over {n}", "gte": "lifetime spend of at least {n}", "lt": "lifetime spend under {n}",
          "lte": "lifetime spend of at most {n}", "eq": "lifetime spend of exactly {n}"}
_ORDERS = {"gt": "more than {n}", "gte": "at least {n}", "lt": "fewer than {n}", "lte": "at most {n}",
           "eq": "exactly {n}"}
_AVERAGE_GAP = {"gt": "on average more than {n} between orders", "gte": "on average at least {n} between orders",
                "lt": "on average less than {n} between orders", "lte": "on average at most {n} between orders",
                "eq": "on average exactly {n} between orders"}
_SCORE = {"gt": "above {n}", "gte": "{n} or higher", "lt": "below {n}", "lte": "{n} or lower", "eq": "exactly {n}"}
_RFM_NAMES = {"rfmRecency": "recency", "rfmFrequency": "frequency", "rfmMonetary": "monetary"}

# Every metric of rules.schema.METRICS: (its phrases, how its threshold is worded given the currency).
PHRASES = {
    "totalSpend": (_SPEND, lambda value, currency: money(value, currency)),
    "orderCount": (_ORDERS, lambda value, currency: counted(value, "order")),
    "lastOrderDaysAgo": (_DAYS_SINCE_LAST_ORDER, lambda value, currency: counted(value, "day")),
    "firstOrderDaysAgo": (_DAYS_SINCE_FIRST_ORDER, lambda value, currency: counted(value, "day")),
    "avgDaysBetweenOrders": (_AVERAGE_GAP, lambda value, currency: counted(value, "day")),
    **{metric: ({op: f"RFM {name} score {phrase}" for op, phrase in _SCORE.items()},
                lambda value, currency: number(value)) for metric, name in _RFM_NAMES.items()},
    "churnRisk": ({op: f"predicted churn risk {phrase}" for op, phrase in _SCORE.items()},
                  lambda value, currency: number(value)),
    "pAlive": ({op: f"predicted chance of still being a customer {phrase}" for op, phrase in _SCORE.items()},
               lambda value, currency: number(value)),
    "expectedOrders90d": ({op: f"predicted orders in the next 90 days {phrase}" for op, phrase in _SCORE.items()},
                          lambda value, currency: number(value)),
    "predictedClv12m": ({op: f"predicted value of the next 12 months {phrase}" for op, phrase in _SCORE.items()},
                        lambda value, currency: money(value, currency)),
}


@dataclass(frozen=True)
class Section:
    """One part of the rules in plain words: `key` names it for pages and tests, `lines` are in the rules' order."""

    key: str
    title: str
    lines: tuple[str, ...]


def describe_rules(rules: Rules) -> tuple[Section, ...]:
    """Segments (priority order, then the no-orders segment), purchase frequency, campaigns, custom RFM groups if
    any, orders and money, then days and schedule."""
    sections = [
        Section("segments", "Segments · the first that fits, top to bottom",
                tuple(describe_segment(s, rules.currency) for s in rules.segments)
                + (f"Customers with no order that counts (none yet, or all cancelled): {rules.no_orders_segment}",)),
        Section("frequency", "Purchase frequency", describe_frequency(rules.purchase_frequency)),
        Section("campaigns", "Campaigns",
                tuple(describe_campaign(name, c, rules.currency) for name, c in rules.campaigns.items())
                or ("No campaigns: moves are recorded and nothing is sent",)),
    ]
    if rules.experiments:
        sections.append(Section("experiments", "Threshold experiments · each customer in one arm",
                                tuple(describe_experiment(name, rules) for name in rules.experiments)))
    if rules.rfm_groups is not None:
        sections.append(Section("rfm_groups", "RFM groups · the first that fits",
                                tuple(describe_rfm_group(g) for g in rules.rfm_groups)))
    sections.append(Section("orders", "Orders and money", describe_orders(rules.orders, rules.currency)))
    sections.append(Section("timing", "Days and schedule", (
        f"Day counts are calendar days in {rules.timezone}",
        describe_schedule(rules.schedule),
        describe_first_run(rules.first_run),
    )))
    return tuple(sections)


def describe_segment(segment: Segment, currency: str) -> str:
    """'VIP: lifetime spend over $5,000'; several conditions joined with 'and'; no condition: 'everyone else'."""
    if not segment.when:
        return f"{segment.name}: everyone else"
    return f"{segment.name}: " + " and ".join(describe_condition(c, currency) for c in segment.conditions)


def describe_condition(condition: Condition, currency: str) -> str:
    phrases, threshold = PHRASES[condition.metric]
    return phrases[condition.op].format(n=threshold(condition.value, currency))


def describe_experiment(name: str, rules: Rules) -> str:
    """'vip-threshold: VIP at lifetime spend over $5,000 (control, 34 %), $3,000 (low, 33 %) ...'; a winner's value
    for everyone once it has one."""
    experiment = rules.experiments[name]
    _, metric, op = rules.experiment_conditions[name]
    if experiment.winner is not None:
        value = experiment.arms[experiment.winner].value
        return (f"{name}: ended, winner {experiment.winner}: everyone is {experiment.segment} at "
                f"{describe_condition(Condition(metric, op, value), rules.currency)}")
    arms = ", ".join(f"{describe_condition(Condition(metric, op, arm.value), rules.currency)} ({arm_name}, "
                     f"{number(arm.share)} %)" for arm_name, arm in experiment.arms.items())
    return f"{name}: {experiment.segment} at {arms}"


def describe_frequency(bands: tuple[FrequencyBand, ...]) -> tuple[str, ...]:
    """Each band as the range of average gaps it takes (the first band that fits wins, so each starts where the one
    before ends), then One-time and None."""
    lines = []
    below: tuple[str, Decimal] | None = None  # the band that takes the gaps just below, and its limit
    for band in bands:
        limit = band.max_avg_days
        if limit is None:
            text = "every customer with 2 or more orders" if below is None else \
                f"on average more than {counted(below[1], 'day')} between orders"
        elif below is None:
            text = f"on average at most {counted(limit, 'day')} between orders"
        elif limit == below[1]:
            text = f"nobody ({below[0]} comes first with the same limit)"
        else:
            text = f"on average more than {number(below[1])} and at most {counted(limit, 'day')} between orders"
        lines.append(f"{band.name}: {text}")
        if limit is not None and (below is None or limit != below[1]):
            below = (band.name, limit)
    return (*lines, f"{ONE_ORDER_FREQUENCY}: a single order", f"{NO_ORDERS_FREQUENCY}: no order that counts")


def describe_campaign(name: str, campaign: Campaign, currency: str = "USD") -> str:
    """'vip: when a customer enters VIP → webhook vip', with what it does unlike the defaults after a ';'."""
    trigger = campaign.on
    notes = []
    if trigger.band_milestone is not None:
        who = "a customer" if campaign.segment is None else f"{_article(campaign.segment)} {campaign.segment} customer"
        when = f"when the predicted churn risk of {who} rises into {trigger.band_milestone}"
    elif trigger.reached is not None:
        metric, days = next(iter(trigger.reached.items()))
        who = "a customer" if campaign.segment is None else f"{_article(campaign.segment)} {campaign.segment} customer"
        since = "without an order" if metric == "lastOrderDaysAgo" else "since the first order"
        when = f"when {who} reaches {counted(days, 'day')} {since}"
    else:
        if trigger.entered is not None:
            when = f"when a customer enters {trigger.entered}"
        elif trigger.left is not None:
            when = f"when a customer leaves {trigger.left}"
        elif trigger.to is None:
            when = f"when a customer moves from {trigger.from_} to any other segment"
        elif trigger.from_ is None:
            when = f"when a customer moves into {trigger.to} from another segment"
        else:
            when = f"when a customer moves from {trigger.from_} to {trigger.to}"
        if campaign.segment is not None:
            notes.append(f"segment: {campaign.segment} applies only to reached triggers (day milestones and churn "
                         "risk bands) and is ignored here")
    if campaign.conditions:
        notes.append("only if " + " and ".join(describe_condition(c, currency) for c in campaign.conditions))
    if campaign.holdout_percent:
        notes.append(f"holds out {number(campaign.holdout_percent)} % as a control group, outcomes over "
                     f"{counted(Decimal(campaign.outcome_days), 'day')}")
    if not campaign.recheck:
        notes.append("sent even if the move is undone before it goes out (recheck: false)")
    if not campaign.ordered:
        notes.append("does not wait for the customer's earlier events (ordered: false)")
    return f"{name}: {when} → webhook {campaign.webhook}" + "".join(f"; {note}" for note in notes)


def describe_rfm_group(group: RfmGroupRule) -> str:
    return (f"{group.name}: RFM recency score {_score_range(group.recency)} and frequency-monetary score "
            f"{_score_range(group.frequency_monetary)}")


def describe_orders(orders: OrderRules, currency: str) -> tuple[str, ...]:
    if orders.exclude_statuses:
        statuses = f"Orders with status {_either(orders.exclude_statuses)} do not count (compared ignoring case and " \
                   "spaces)"
    else:
        statuses = "Every order counts, whatever its status"
    ahead = "after the server's clock" if orders.max_future_days == 0 else \
        f"more than {counted(Decimal(orders.max_future_days), 'day')} after the server's clock"
    return statuses, f"An order dated {ahead} is refused as a typo", f"Amounts are in {currency}"


def describe_schedule(schedule: Schedule) -> str:
    return (f"Segments are evaluated every {_interval(schedule.evaluate_every_seconds)}; events are delivered every "
            f"{_interval(schedule.deliver_every_seconds)}")


def describe_first_run(first_run: str) -> str:
    if first_run == "emit":
        return "The very first evaluation announces every customer's segment, so campaigns fire for everyone " \
               "(first_run: emit)"
    return "The very first evaluation records everyone's segment silently (first_run: baseline)"


# --- what a candidate changes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """One line of the rules in force beside the candidate's: `live` None is a line added, `candidate` None one
    removed."""

    live: str | None
    candidate: str | None

    @property
    def kind(self) -> str:
        if self.live == self.candidate:
            return "same"
        if self.live is None:
            return "added"
        if self.candidate is None:
            return "removed"
        return "changed"


@dataclass(frozen=True)
class SectionChanges:
    key: str
    title: str
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return any(change.kind != "same" for change in self.changes)


def compare(live: tuple[Section, ...], candidate: tuple[Section, ...]) -> tuple[SectionChanges, ...]:
    """Both descriptions side by side, section by section: unchanged lines paired, a line about the same thing
    (the same label before ': ', e.g. a segment) that reads differently paired as changed, the rest added or
    removed where they stand."""
    live_by_key = {section.key: section for section in live}
    candidate_by_key = {section.key: section for section in candidate}
    keys = list(live_by_key) + [key for key in candidate_by_key if key not in live_by_key]
    result = []
    for key in keys:
        old, new = live_by_key.get(key), candidate_by_key.get(key)
        title = new.title if new is not None else old.title if old is not None else key
        result.append(SectionChanges(key, title, _line_changes(old.lines if old else (), new.lines if new else ())))
    return tuple(result)


def _line_changes(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[Change, ...]:
    changes: list[Change] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            changes.extend(Change(line, line) for line in old[i1:i2])
        else:
            changes.extend(_pair(old[i1:i2], new[j1:j2]))
    return tuple(changes)


def _pair(old: tuple[str, ...], new: tuple[str, ...]) -> list[Change]:
    """Lines with the same label side by side, then the unlabelled ones in order; what is left is removed or
    added."""
    unmatched = list(new)
    paired: list[Change] = []
    for line in old:
        match = next((n for n in unmatched if _label(n) is not None and _label(n) == _label(line)), None)
        if match is None and _label(line) is None:
            match = next((n for n in unmatched if _label(n) is None), None)
        if match is not None:
            unmatched.remove(match)
        paired.append(Change(line, match))
    return paired + [Change(None, line) for line in unmatched]


def _label(line: str) -> str | None:
    label, colon, _ = line.partition(": ")
    return label if colon else None


# --- numbers and money in words ---------------------------------------------------------------------------------

def number(value: Decimal) -> str:
    """Exact, with thousands separators and no exponent: 5000 -> '5,000', 90.50 -> '90.5'."""
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def counted(value: Decimal, unit: str) -> str:
    """'1 day', '90 days', '2.5 days'."""
    return f"{number(value)} {unit}" + ("" if value == 1 else "s")


def money(value: Decimal, currency: str) -> str:
    """Through rules.money.format_money when it shows the amount exactly ('$5,000', '$5,000.50'); a threshold
    finer than the currency shows (a fraction of a cent, or of a yen) is written as it is, never rounded."""
    places = 0 if currency in NO_CENTS else 2
    if value == value.quantize(Decimal(1).scaleb(-places)):
        return format_money(value, currency, cents=False)
    return f"{number(value)} {currency}"


def _interval(seconds: float) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    shown = int(seconds) if float(seconds).is_integer() else seconds
    return "second" if shown == 1 else f"{shown} seconds"


def _score_range(bounds: tuple[int, int]) -> str:
    low, high = bounds
    return str(low) if low == high else f"{low} to {high}"


def _either(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"
