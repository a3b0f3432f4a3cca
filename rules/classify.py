"""Segment, purchase frequency, the next moment a customer's segment can change, and when it last did."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date, datetime, timedelta
from fractions import Fraction
from math import floor
from typing import NamedTuple

from rules.metrics import CustomerFacts, avg_days_between_orders, local_date, local_midnight
from rules.rfm import DEFAULT_GROUPS, RfmCutoffs, RfmGroup, RfmScore, rfm_score
from rules.schema import (
    DAY_METRICS,
    NO_ORDERS_FREQUENCY,
    ONE_ORDER_FREQUENCY,
    RFM_METRICS,
    Rules,
)

_OPS: dict[str, Callable[[object, object], bool]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le, "eq": operator.eq,
}
_BEFORE = timedelta(microseconds=1)


class Classification(NamedTuple):
    segment: str
    purchase_frequency: str
    last_order_days_ago: int | None
    first_order_days_ago: int | None
    rfm: RfmScore | None = None


class Classifier:
    """Rules compiled once per run so that classifying a customer is a few comparisons, not a walk of the YAML."""

    def __init__(self, rules: Rules, rfm: RfmCutoffs | None = None):
        """`rfm`: the quintile boundaries of the base, when known; without them RFM conditions never hold."""
        self.rules = rules
        self.tz = rules.tz
        self.rfm_cutoffs = rfm
        self._rfm_groups = DEFAULT_GROUPS if rules.rfm_groups is None else tuple(
            RfmGroup(g.name, g.recency, g.frequency_monetary) for g in rules.rfm_groups)
        self._segments = [
            (s.name, [(c.metric, _OPS[c.op], _threshold(c.metric, c.value)) for c in s.conditions])
            for s in rules.segments
        ]
        self._bands = [(b.name, None if b.max_avg_days is None else Fraction(b.max_avg_days))
                       for b in rules.purchase_frequency]
        # Day counts at which some condition can flip: a threshold v flips between day floor(v) and floor(v)+1.
        days: dict[str, set[int]] = {m: set() for m in DAY_METRICS}
        for segment in rules.segments:
            for c in segment.conditions:
                if c.metric in DAY_METRICS:
                    days[c.metric].update({floor(c.value), floor(c.value) + 1})
                elif c.metric == "rfmRecency" and rfm is not None:
                    # the recency score steps one day after each quintile boundary of days since the last order
                    days["lastOrderDaysAgo"].update(d + 1 for d in rfm.recency_days)
        self._segment_days = {m: sorted(d for d in v if d >= 0) for m, v in days.items()}
        milestones: dict[str, set[int]] = {m: set() for m in DAY_METRICS}
        for campaign in rules.campaigns.values():
            for metric, value in (campaign.on.reached or {}).items():
                milestones[metric].add(int(value))
        self._milestone_days = {m: sorted(v) for m, v in milestones.items()}

    def classify(self, facts: CustomerFacts, as_of: datetime) -> Classification:
        if facts.order_count == 0 or facts.last_order_at is None or facts.first_order_at is None:
            return Classification(self.rules.no_orders_segment, NO_ORDERS_FREQUENCY, None, None)
        today = local_date(as_of, self.tz)
        last_days = (today - local_date(facts.last_order_at, self.tz)).days
        first_days = (today - local_date(facts.first_order_at, self.tz)).days
        avg = avg_days_between_orders(facts)
        values: dict[str, object] = {
            "totalSpend": facts.total_cents,
            "orderCount": facts.order_count,
            "lastOrderDaysAgo": last_days,
            "firstOrderDaysAgo": first_days,
            "avgDaysBetweenOrders": avg,
        }
        rfm = None
        if self.rfm_cutoffs is not None:
            rfm = rfm_score(last_days, facts.order_count, facts.total_cents, self.rfm_cutoffs, self._rfm_groups)
            values.update(zip(RFM_METRICS, rfm[:3], strict=True))
        else:
            values.update(dict.fromkeys(RFM_METRICS))
        return Classification(self._segment(values), self._frequency(facts.order_count, avg), last_days, first_days,
                              rfm)

    def next_check_at(self, facts: CustomerFacts, as_of: datetime) -> datetime | None:
        """The earliest instant after `as_of` at which, with no new orders, the segment changes or a milestone
        is reached; None when time alone can change nothing more (e.g. a VIP, or a customer already Dormant)."""
        current = self.classify(facts, as_of).segment
        milestones = {when for when in self._crossings(facts, self._milestone_days) if when > as_of}
        for when in sorted({when for when in self._crossings(facts, self._segment_days) if when > as_of}):
            if milestones and min(milestones) <= when:
                return min(milestones)
            if self.classify(facts, when).segment != current:
                return when
        return min(milestones, default=None)

    def entered_at(self, facts: CustomerFacts, as_of: datetime) -> datetime:
        """When the customer's current segment began, assuming no order since the last one.

        Either the local midnight a day threshold was crossed (even if nobody evaluated then) or the last order.
        """
        if facts.last_order_at is None:
            return as_of
        current = self.classify(facts, as_of).segment
        crossings = sorted(
            (when for when in self._crossings(facts, self._segment_days)
             if facts.last_order_at < when <= as_of),
            reverse=True,
        )
        for when in crossings:
            if self.classify(facts, when - _BEFORE).segment != current:
                return when
        return min(facts.last_order_at, as_of)

    def _crossings(self, facts: CustomerFacts, days: dict[str, list[int]]) -> list[datetime]:
        if facts.last_order_at is None or facts.first_order_at is None:
            return []
        bases = {
            "lastOrderDaysAgo": local_date(facts.last_order_at, self.tz),
            "firstOrderDaysAgo": local_date(facts.first_order_at, self.tz),
        }
        return [self._midnight(bases[metric], n) for metric, offsets in days.items() for n in offsets]

    def _midnight(self, base: date, days: int) -> datetime:
        return local_midnight(base + timedelta(days=days), self.tz)

    def _segment(self, values: dict[str, object]) -> str:
        for name, conditions in self._segments:
            if all(value is not None and test(value, threshold)
                   for metric, test, threshold in conditions
                   for value in (values[metric],)):
                return name
        raise AssertionError("the rules schema guarantees a default segment")

    def _frequency(self, order_count: int, avg: Fraction | None) -> str:
        if order_count == 0:
            return NO_ORDERS_FREQUENCY
        if order_count == 1 or avg is None:
            return ONE_ORDER_FREQUENCY
        for name, max_avg in self._bands:
            if max_avg is None or avg <= max_avg:
                return name
        raise AssertionError("the rules schema guarantees a catch-all frequency band")


def _threshold(metric: str, value: object) -> Fraction:
    # totalSpend is compared in cents so money never passes through a float.
    amount = Fraction(value)  # type: ignore[arg-type]
    return amount * 100 if metric == "totalSpend" else amount


def classify(facts: CustomerFacts, rules: Rules, as_of: datetime, rfm: RfmCutoffs | None = None) -> Classification:
    """Convenience for one customer; runs over many customers should build one Classifier."""
    return Classifier(rules, rfm).classify(facts, as_of)
