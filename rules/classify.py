"""Segment, purchase frequency, the next moment a customer's segment can change, and when it last did."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import TYPE_CHECKING, NamedTuple

from rules.holdouts import ArmDraw
from rules.metrics import CustomerFacts, avg_days_between_orders, local_date, local_midnight
from rules.rfm import DEFAULT_GROUPS, RfmCutoffs, RfmGroup, RfmScore, rfm_score
from rules.schema import (
    CHURN_BANDS,
    DAY_METRICS,
    MONEY_METRICS,
    NO_ORDERS_FREQUENCY,
    ONE_ORDER_FREQUENCY,
    PREDICTED_METRICS,
    RFM_METRICS,
    Rules,
)

if TYPE_CHECKING:  # rules.scores needs numpy and scipy: imported only when a model is given
    from rules.scores import FittedModel, Predicted

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
    predicted: Predicted | None = None
    # Days from today until the churn risk reaches the next threshold a condition or a band trigger watches (None:
    # not within the look-ahead, or nothing watches it); and for each watched band the customer is in or above,
    # the local date (ordinal) its risk reached that band since the last order.
    risk_changes_in: int | None = None
    band_reached: tuple[tuple[str, int], ...] = ()
    # (experiment, arm) of each running experiment the customer is in: its segment was decided under these arms
    experiments: tuple[tuple[str, str], ...] = ()


class Classifier:
    """Rules compiled once per run so that classifying a customer is a few comparisons, not a walk of the YAML."""

    def __init__(self, rules: Rules, rfm: RfmCutoffs | None = None, model: FittedModel | None = None,
                 arms: tuple[tuple[str, str], ...] = ()):
        """`rfm`: the quintile boundaries of the base, when known; without them RFM conditions never hold.
        `model`: the fitted churn and value model; without it (or with `prediction.enabled: false`) the predicted
        figures are None and conditions on them never hold.

        While an experiment runs, each customer (known by the contact_id of its facts) is classified by the
        classifier of its arms (`for_customer`); `arms` makes one such classifier. Facts without a contact_id are
        classified as the segments are written."""
        self.rules = rules
        self.arms = arms
        self._running = () if arms else tuple((name, ArmDraw(rules.holdout_salt, name, rules.experiments[name].shares))
                                              for name in rules.running_experiments)
        self._variants: dict[tuple[tuple[str, str], ...], Classifier] = {}
        segments = rules.segments_under(dict(arms)) if rules.experiments else rules.segments
        self.tz = rules.tz
        self.rfm_cutoffs = rfm
        self.model = model if rules.prediction.enabled else None
        self._scorer = None
        if self.model is not None:
            from rules.scores import Scorer
            self._scorer = Scorer(self.model, self.tz)
        self._rfm_groups = DEFAULT_GROUPS if rules.rfm_groups is None else tuple(
            RfmGroup(g.name, g.recency, g.frequency_monetary) for g in rules.rfm_groups)
        self._segments = [
            (s.name, [(c.metric, _OPS[c.op], _threshold(c.metric, c.value)) for c in s.conditions])
            for s in segments
        ]
        self._bands = [(b.name, None if b.max_avg_days is None else _whole(Fraction(b.max_avg_days) * _MS_PER_DAY))
                       for b in rules.purchase_frequency]
        self._campaign_tests = {
            name: [(c, _OPS[c.op], _threshold(c.metric, c.value)) for c in campaign.conditions]
            for name, campaign in rules.campaigns.items() if campaign.when}
        metrics = {c.metric for s in segments for c in s.conditions}
        metrics |= {c.metric for tests in self._campaign_tests.values() for c, _, _ in tests}
        self._needs_avg = "avgDaysBetweenOrders" in metrics
        self._no_rfm = dict.fromkeys(RFM_METRICS)
        self._no_predicted = dict.fromkeys(PREDICTED_METRICS)
        self._needs_predicted = bool(metrics & set(PREDICTED_METRICS))
        # Churn risk thresholds to plan re-checks at: the conditions' and, for band triggers, the bands' cut points.
        self._band_triggers = sorted({c.on.band_milestone for c in rules.campaigns.values()
                                      if c.on.band_milestone is not None}, key=CHURN_BANDS.index)
        cuts = rules.prediction.churn_bands
        band_cut = {"Medium": float(cuts.medium), "High": float(cuts.high)}
        self._band_cuts = {band: band_cut[band] for band in self._band_triggers}
        self._risk_thresholds = sorted({float(c.value) for s in segments for c in s.conditions
                                        if c.metric == "churnRisk"} | set(self._band_cuts.values()))
        self._today_cache: tuple[datetime, date] | None = None
        # Day counts at which some condition can flip: a threshold v flips between day floor(v) and floor(v)+1.
        days: dict[str, set[int]] = {m: set() for m in DAY_METRICS}
        for segment in segments:
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
            if campaign.on.day_milestone is not None:
                metric, value = campaign.on.day_milestone
                milestones[metric].add(value)
        self._milestone_days = {m: sorted(v) for m, v in milestones.items()}

    def for_customer(self, contact_id: str | None) -> Classifier:
        """The classifier of the customer's arms while experiments run (built once per combination of arms);
        this one otherwise."""
        if not self._running or contact_id is None:
            return self
        arms = tuple((name, draw.arm(contact_id)) for name, draw in self._running)
        variant = self._variants.get(arms)
        if variant is None:
            variant = self._variants[arms] = Classifier(self.rules, self.rfm_cutoffs, self.model, arms)
        return variant

    def _variant(self, facts: CustomerFacts, current: Classification | None) -> Classifier:
        """The customer's classifier, found from the arms its classification carries when there is one (no hash)."""
        if current is not None and current.experiments:
            known = self._variants.get(current.experiments)
            if known is not None:
                return known
        return self.for_customer(facts.contact_id)

    def classify(self, facts: CustomerFacts, as_of: datetime) -> Classification:
        if self._running and facts.contact_id is not None:
            return self.for_customer(facts.contact_id).classify(facts, as_of)
        if self._scorer is None:
            return self._classify(facts, as_of)
        return self.classify_many([facts], as_of)[0]

    def classify_many(self, facts: list[CustomerFacts], as_of: datetime) -> list[Classification]:
        """`classify` for a batch: the model scores the whole batch in one vectorised pass (per arm)."""
        if self._running:
            return self._classify_by_arm(facts, as_of)
        return self._classify_here(facts, as_of)

    def _classify_here(self, facts: list[CustomerFacts], as_of: datetime) -> list[Classification]:
        scorer = self._scorer
        if scorer is None or not facts:
            return [self._classify(f, as_of) for f in facts]
        predicted = scorer.score(facts, as_of)
        if not self._risk_thresholds:  # nothing watches the risk: no re-check to plan, no band to date
            return [self._classify(f, as_of, p) for f, p in zip(facts, predicted, strict=True)]
        changes_in = scorer.days_until(facts, as_of, self._risk_thresholds)
        reached = {band: scorer.reached_on(facts, as_of, cut) for band, cut in self._band_cuts.items()}
        result = []
        for i, f in enumerate(facts):
            bands = tuple((band, days[i]) for band, days in reached.items() if days[i] is not None)
            result.append(self._classify(f, as_of, predicted[i], changes_in[i], bands))
        return result

    def _classify_by_arm(self, facts: list[CustomerFacts], as_of: datetime) -> list[Classification]:
        groups: dict[int, tuple[Classifier, list[int]]] = {}
        for i, f in enumerate(facts):
            variant = self.for_customer(f.contact_id)
            groups.setdefault(id(variant), (variant, []))[1].append(i)
        result: list[Classification | None] = [None] * len(facts)
        for variant, indexes in groups.values():
            batch = [facts[i] for i in indexes]  # this classifier's own: facts without a contact id
            classified_batch = variant._classify_here(batch, as_of) if variant is self else variant.classify_many(
                batch, as_of)
            for i, classified in zip(indexes, classified_batch, strict=True):
                result[i] = classified
        return result  # type: ignore[return-value] - every index was filled

    def _classify(self, facts: CustomerFacts, as_of: datetime, predicted: Predicted | None = None,
                  risk_changes_in: int | None = None, band_reached: tuple[tuple[str, int], ...] = ()) -> Classification:
        if facts.order_count == 0 or facts.last_order_at is None or facts.first_order_at is None:
            return Classification(self.rules.no_orders_segment, NO_ORDERS_FREQUENCY, None, None,
                                  experiments=self.arms)
        today = self._today(as_of)
        tz = self.tz
        last_days = (today - facts.last_order_at.astimezone(tz).date()).days
        first_days = (today - facts.first_order_at.astimezone(tz).date()).days
        values = self._values(facts, last_days, first_days, predicted)
        rfm = None
        if self.rfm_cutoffs is not None:
            rfm = rfm_score(last_days, facts.order_count, facts.total_cents, self.rfm_cutoffs, self._rfm_groups)
            values.update(zip(RFM_METRICS, rfm[:3], strict=True))
        return Classification(self._segment(values), self._frequency(facts), last_days, first_days, rfm, predicted,
                              risk_changes_in, band_reached, self.arms)

    def campaign_blocked(self, campaign: str, facts: CustomerFacts, current: Classification) -> str | None:
        """Which of the campaign's `when` conditions does not hold for the customer as classified, in words
        ('predictedClv12m is 120.00, needs gte 200'); None when all hold (or it has none)."""
        if self._running and facts.contact_id is not None:
            return self._variant(facts, current).campaign_blocked(campaign, facts, current)
        tests = self._campaign_tests.get(campaign)
        if not tests:
            return None
        if current.last_order_days_ago is None or current.first_order_days_ago is None:
            values = self._values(facts, 0, 0, current.predicted)
            values.update(lastOrderDaysAgo=None, firstOrderDaysAgo=None)
        else:
            values = self._values(facts, current.last_order_days_ago, current.first_order_days_ago, current.predicted)
        if current.rfm is not None:
            values.update(zip(RFM_METRICS, current.rfm[:3], strict=True))
        for condition, test, threshold in tests:
            value = values[condition.metric]
            if value is None or not test(value, threshold):
                shown = "unknown" if value is None else _shown(condition.metric, value)
                return f"{condition.metric} is {shown}, needs {condition.op} {condition.value}"
        return None

    def next_check_at(self, facts: CustomerFacts, as_of: datetime,
                      current: Classification | None = None) -> datetime | None:
        """The earliest instant after `as_of` at which, with no new orders, the segment changes or a milestone
        is reached; None when time alone can change nothing more (e.g. a VIP, or a customer already Dormant).

        Both day counts grow by one at each local midnight, so the future is a walk over day offsets.
        """
        if self._running and facts.contact_id is not None:
            return self._variant(facts, current).next_check_at(facts, as_of, current)
        current = current or self.classify(facts, as_of)
        if current.last_order_days_ago is None:
            return None
        last, first = current.last_order_days_ago, current.first_order_days_ago
        milestone = min((d - last for d in self._milestone_days["lastOrderDaysAgo"] if d > last), default=None)
        first_milestone = min((d - first for d in self._milestone_days["firstOrderDaysAgo"] if d > first),
                              default=None)
        # the churn risk reaching a watched threshold is a moment to look again, like a milestone
        milestone = min((m for m in (milestone, first_milestone, current.risk_changes_in) if m is not None),
                        default=None)
        for offset in self._offsets(last, first, lambda k: k > 0):
            if milestone is not None and milestone <= offset:
                break
            if self._segment_at(facts, last + offset, first + offset, current.predicted) != current.segment:
                return self._midnight_after(as_of, offset)
        return None if milestone is None else self._midnight_after(as_of, milestone)

    def entered_at(self, facts: CustomerFacts, as_of: datetime, current: Classification | None = None) -> datetime:
        """When the customer's current segment began, assuming no order since the last one.

        Either the local midnight a day threshold was crossed (even if nobody evaluated then) or the last order.
        """
        if self._running and facts.contact_id is not None:
            return self._variant(facts, current).entered_at(facts, as_of, current)
        current = current or self.classify(facts, as_of)
        if facts.last_order_at is None or current.last_order_days_ago is None:
            return as_of
        last, first = current.last_order_days_ago, current.first_order_days_ago
        # a crossing at offset k (<= 0) is the midnight starting day last+k; it must come after the last order
        for offset in sorted(self._offsets(last, first, lambda k: k <= 0 and last + k > 0), reverse=True):
            if self._segment_at(facts, last + offset - 1, first + offset - 1, current.predicted) != current.segment:
                return self._midnight_after(as_of, offset)
        return min(facts.last_order_at, as_of)

    def _offsets(self, last: int, first: int, keep: Callable[[int], bool]) -> list[int]:
        """Day offsets from today at which a segment condition can flip, ascending."""
        offsets = {d - last for d in self._last_days}
        offsets.update([d - first for d in self._first_days])
        return sorted(filter(keep, offsets))

    def _segment_at(self, facts: CustomerFacts, last_days: int, first_days: int,
                    predicted: Predicted | None = None) -> str:
        # The predicted figures are held at today's: their own changes are planned by risk_changes_in.
        values = self._values(facts, last_days, first_days, predicted)
        if self.rfm_cutoffs is not None:
            score = rfm_score(last_days, facts.order_count, facts.total_cents, self.rfm_cutoffs, self._rfm_groups)
            values.update(zip(RFM_METRICS, score[:3], strict=True))
        return self._segment(values)

    def _values(self, facts: CustomerFacts, last_days: int, first_days: int,
                predicted: Predicted | None = None) -> dict[str, object]:
        values: dict[str, object] = {
            "totalSpend": facts.total_cents,
            "orderCount": facts.order_count,
            "lastOrderDaysAgo": last_days,
            "firstOrderDaysAgo": first_days,
            "avgDaysBetweenOrders": avg_days_between_orders(facts) if self._needs_avg else None,
        }
        values.update(self._no_rfm)
        if not self._needs_predicted:
            return values
        if predicted is None:
            values.update(self._no_predicted)
        else:
            values.update(churnRisk=predicted.churn_risk, pAlive=predicted.p_alive,
                          expectedOrders90d=predicted.expected_orders_90d, predictedClv12m=predicted.clv_cents)
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


def _shown(metric: str, value: object) -> str:
    if metric in MONEY_METRICS:
        return f"{Decimal(value) / 100:.2f}" if isinstance(value, int) else str(value)
    return str(float(value)) if isinstance(value, Fraction) else str(value)


def _threshold(metric: str, value: object) -> Fraction | int:
    # Money is compared in cents so it never passes through a float.
    amount = Fraction(value)  # type: ignore[arg-type]
    return _whole(amount * 100 if metric in MONEY_METRICS else amount)


def _whole(value: Fraction) -> Fraction | int:
    """Whole thresholds as ints: comparing ints is several times cheaper than comparing Fractions."""
    return value.numerator if value.denominator == 1 else value

