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
_MS = timedelta(milliseconds=1)
_MS_PER_DAY = 86_400_000


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
        self._bands = [(b.name, None if b.max_avg_days is None else _whole(Fraction(b.max_avg_days) * _MS_PER_DAY))
                       for b in rules.purchase_frequency]
        metrics = {c.metric for s in rules.segments for c in s.conditions}
        self._needs_avg = "avgDaysBetweenOrders" in metrics
        self._no_rfm = dict.fromkeys(RFM_METRICS)
        self._today_cache: tuple[datetime, date] | None = None
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
        self._last_days = tuple(self._segment_days["lastOrderDaysAgo"])
        self._first_days = tuple(self._segment_days["firstOrderDaysAgo"])
        milestones: dict[str, set[int]] = {m: set() for m in DAY_METRICS}
        for campaign in rules.campaigns.values():
            for metric, value in (campaign.on.reached or {}).items():
                milestones[metric].add(int(value))
        self._milestone_days = {m: sorted(v) for m, v in milestones.items()}

    def classify(self, facts: CustomerFacts, as_of: datetime) -> Classification:
        if facts.order_count == 0 or facts.last_order_at is None or facts.first_order_at is None:
            return Classification(self.rules.no_orders_segment, NO_ORDERS_FREQUENCY, None, None)
        today = self._today(as_of)
        tz = self.tz
        last_days = (today - facts.last_order_at.astimezone(tz).date()).days
        first_days = (today - facts.first_order_at.astimezone(tz).date()).days
        values = self._values(facts, last_days, first_days)
        rfm = None
        if self.rfm_cutoffs is not None:
            rfm = rfm_score(last_days, facts.order_count, facts.total_cents, self.rfm_cutoffs, self._rfm_groups)
            values.update(zip(RFM_METRICS, rfm[:3], strict=True))
        return Classification(self._segment(values), self._frequency(facts), last_days, first_days, rfm)

    def next_check_at(self, facts: CustomerFacts, as_of: datetime,
                      current: Classification | None = None) -> datetime | None:
        """The earliest instant after `as_of` at which, with no new orders, the segment changes or a milestone
        is reached; None when time alone can change nothing more (e.g. a VIP, or a customer already Dormant).

        Both day counts grow by one at each local midnight, so the future is a walk over day offsets.
        """
        current = current or self.classify(facts, as_of)
        if current.last_order_days_ago is None:
            return None
        last, first = current.last_order_days_ago, current.first_order_days_ago
        milestone = min((d - last for d in self._milestone_days["lastOrderDaysAgo"] if d > last), default=None)
        first_milestone = min((d - first for d in self._milestone_days["firstOrderDaysAgo"] if d > first),
                              default=None)
        milestone = min((m for m in (milestone, first_milestone) if m is not None), default=None)
        for offset in self._offsets(last, first, lambda k: k > 0):
            if milestone is not None and milestone <= offset:
                break
            if self._segment_at(facts, last + offset, first + offset) != current.segment:
                return self._midnight_after(as_of, offset)
        return None if milestone is None else self._midnight_after(as_of, milestone)

    def entered_at(self, facts: CustomerFacts, as_of: datetime, current: Classification | None = None) -> datetime:
        """When the customer's current segment began, assuming no order since the last one.

        Either the local midnight a day threshold was crossed (even if nobody evaluated then) or the last order.
        """
        current = current or self.classify(facts, as_of)
        if facts.last_order_at is None or current.last_order_days_ago is None:
            return as_of
        last, first = current.last_order_days_ago, current.first_order_days_ago
        # a crossing at offset k (<= 0) is the midnight starting day last+k; it must come after the last order
        for offset in sorted(self._offsets(last, first, lambda k: k <= 0 and last + k > 0), reverse=True):
            if self._segment_at(facts, last + offset - 1, first + offset - 1) != current.segment:
                return self._midnight_after(as_of, offset)
        return min(facts.last_order_at, as_of)

    def _offsets(self, last: int, first: int, keep: Callable[[int], bool]) -> list[int]:
        """Day offsets from today at which a segment condition can flip, ascending."""
        offsets = {d - last for d in self._last_days}
        offsets.update([d - first for d in self._first_days])
        return sorted(filter(keep, offsets))

    def _segment_at(self, facts: CustomerFacts, last_days: int, first_days: int) -> str:
        values = self._values(facts, last_days, first_days)
        if self.rfm_cutoffs is not None:
            score = rfm_score(last_days, facts.order_count, facts.total_cents, self.rfm_cutoffs, self._rfm_groups)
            values.update(zip(RFM_METRICS, score[:3], strict=True))
        return self._segment(values)

    def _values(self, facts: CustomerFacts, last_days: int, first_days: int) -> dict[str, object]:
        values: dict[str, object] = {
            "totalSpend": facts.total_cents,
            "orderCount": facts.order_count,
            "lastOrderDaysAgo": last_days,
            "firstOrderDaysAgo": first_days,
            "avgDaysBetweenOrders": avg_days_between_orders(facts) if self._needs_avg else None,
        }
        values.update(self._no_rfm)
        return values

    def _today(self, as_of: datetime) -> date:
        cached = self._today_cache
        if cached is None or cached[0] != as_of:
            cached = self._today_cache = (as_of, local_date(as_of, self.tz))
        return cached[1]

    def _midnight_after(self, as_of: datetime, offset: int) -> datetime:
        return local_midnight(self._today(as_of) + timedelta(days=offset), self.tz)

    def _segment(self, values: dict[str, object]) -> str:
        for name, conditions in self._segments:  # plain loops: this runs for every customer, several times
            for metric, test, threshold in conditions:
                value = values[metric]
                if value is None or not test(value, threshold):
                    break
            else:
                return name
        raise AssertionError("the rules schema guarantees a default segment")

    def _frequency(self, facts: CustomerFacts) -> str:
        if facts.order_count == 0:
            return NO_ORDERS_FREQUENCY
        if facts.order_count == 1 or facts.first_order_at is None or facts.last_order_at is None:
            return ONE_ORDER_FREQUENCY
        # avg <= max  <=>  span <= max * gaps: exact, without building a fraction per customer
        span_ms = (facts.last_order_at - facts.first_order_at) // _MS
        gaps = facts.order_count - 1
        for name, max_ms in self._bands:
            if max_ms is None or span_ms <= max_ms * gaps:
                return name
        raise AssertionError("the rules schema guarantees a catch-all frequency band")


def _threshold(metric: str, value: object) -> Fraction | int:
    # totalSpend is compared in cents so money never passes through a float.
    amount = Fraction(value)  # type: ignore[arg-type]
    return _whole(amount * 100 if metric == "totalSpend" else amount)


def _whole(value: Fraction) -> Fraction | int:
    """Whole thresholds as ints: comparing ints is several times cheaper than comparing Fractions."""
    return value.numerator if value.denominator == 1 else value

