"""A fitted churn and value model applied to customers: their predicted figures at a moment, the day their churn
risk will reach a threshold, and the day it did. Pure (numpy over a batch of customers), no I/O, no clock.

Imported only where a model is in use: numpy and scipy cost about a second to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from rules.metrics import CustomerFacts
from rules.predict import (
    DAYS_PER_WEEK,
    BgNbdParams,
    GammaGammaParams,
    ModelInputs,
    PredictionError,
    inputs_from_store_days,
    predict,
    probability_no_purchase,
)
from rules.schema import ChurnBands

ORDERS_HORIZON_DAYS = 90  # expectedOrders90d, whatever the churn horizon
CLV_MONTHS = 12  # predictedClv12m
# How far ahead a re-check is planned for a risk still below a threshold; beyond it the daily refit re-plans anyway.
LOOKAHEAD_DAYS = 1095
_DIGITS = 4  # churnRisk and pAlive as shown and compared: 0.8123


@dataclass(frozen=True, slots=True)
class FittedModel:
    """What scoring needs: the fitted parameters, when they were fitted, and the rules' prediction settings."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    fitted_at: datetime
    horizon_days: int
    monthly_discount_rate: float
    bands: ChurnBands


class Predicted(NamedTuple):  # a tuple: made for every customer of every evaluation, so it must be cheap
    """One customer's figures, rounded as the API shows them (conditions compare these same values)."""

    churn_risk: float
    band: str
    p_alive: float
    expected_orders_90d: float
    clv_cents: int
    fitted_at: datetime


class Scorer:
    """A model applied in batches: one vectorised pass per batch, whatever its size."""

    def __init__(self, model: FittedModel, tz: ZoneInfo):
        self.model = model
        self.tz = tz
        self._horizon = model.horizon_days / DAYS_PER_WEEK

    def score(self, facts: Sequence[CustomerFacts], as_of: datetime) -> list[Predicted | None]:
        """Each customer's figures at `as_of`; None for a customer without the purchase-day aggregates."""
        rows = _Rows.of(facts, as_of, self.tz)
        result: list[Predicted | None] = [None] * len(facts)
        if not rows.index.size:
            return result
        model = self.model
        inputs = rows.inputs()
        predictions = predict(model.bgnbd, model.gamma_gamma, inputs, horizon_days=model.horizon_days,
                              months=CLV_MONTHS, monthly_discount_rate=model.monthly_discount_rate)
        orders = predictions.expected_orders
        if model.horizon_days != ORDERS_HORIZON_DAYS:
            orders = predict(model.bgnbd, model.gamma_gamma, inputs, horizon_days=ORDERS_HORIZON_DAYS,
                             months=1).expected_orders
        risk = np.round(predictions.churn_risk, _DIGITS)
        bands = self._bands(risk)
        value = predictions.predicted_value
        if not np.isfinite(value).all():
            raise PredictionError("a predicted value is not a finite number")
        cents = np.rint(value * 100).astype(np.int64).tolist()
        fitted_at = model.fitted_at
        for i, churn, band, alive, n, clv in zip(rows.index.tolist(), risk.tolist(), bands,
                                                  np.round(predictions.p_alive, _DIGITS).tolist(),
                                                  np.round(orders, 3).tolist(), cents, strict=True):
            result[i] = Predicted(churn, band, alive, n, clv, fitted_at)
        return result

    def _bands(self, risk: np.ndarray) -> list[str]:
        bands = self.model.bands
        names = np.array(("Low", "Medium", "High"))
        return names[(risk >= float(bands.medium)).astype(np.int64) + (risk >= float(bands.high))].tolist()

    def days_until(self, facts: Sequence[CustomerFacts], as_of: datetime, thresholds: Sequence[float],
                   ) -> list[int | None]:
        """For each customer, the fewest whole days from today's date after which (with no new order) the churn
        risk, rounded as shown, reaches the lowest of `thresholds` above its risk today; None if it never does
        within LOOKAHEAD_DAYS (or there is no such threshold, or no aggregates).

        Between orders the risk only rises (fewer purchases per week look likelier as the silence grows), so a
        bisection over days finds the crossing.
        """
        rows = _Rows.of(facts, as_of, self.tz)
        result: list[int | None] = [None] * len(facts)
        if not rows.index.size or not thresholds:
            return result
        cuts = np.array(sorted(thresholds), dtype=np.float64)
        now = self._risk(rows, 0)
        position = np.searchsorted(cuts, now, side="right")  # the first cut strictly above today's risk
        wanted = position < len(cuts)
        target = np.where(wanted, cuts[np.minimum(position, len(cuts) - 1)], np.inf)
        found = self._first_day(rows, target, 0, LOOKAHEAD_DAYS, wanted)
        for k, i in enumerate(rows.index.tolist()):
            if found[k] >= 0:
                result[i] = int(found[k])
        return result

    def reached_on(self, facts: Sequence[CustomerFacts], as_of: datetime, threshold: float) -> list[int | None]:
        """For each customer whose risk rose to `threshold` or above since its last order (below it on the day of
        that order, at or above it today): the local date (as `date.toordinal()`) it first was; None for the
        others, among them a customer whose risk was already that high on the day it ordered (no rise)."""
        rows = _Rows.of(facts, as_of, self.tz)
        result: list[int | None] = [None] * len(facts)
        if not rows.index.size:
            return result
        span = rows.today - rows.last  # days since the last order: the search runs back to that day
        rose = (self._risk(rows, 0) >= threshold) & (self._risk(rows, -span) < threshold)
        found = self._search(rows, np.full(len(span), threshold), -span, np.zeros_like(span), rose)
        for k, i in enumerate(rows.index.tolist()):
            if rose[k]:
                result[i] = int(rows.today[k] + found[k])
        return result

    def _first_day(self, rows: _Rows, target: np.ndarray, low: int, high: int, wanted: np.ndarray) -> np.ndarray:
        """The first offset in (low, high] at which the risk reaches `target`; -1 where it does not."""
        n = len(rows.first)
        at_high = self._risk(rows, np.full(n, high)) >= target
        wanted = wanted & at_high
        found = self._search(rows, target, np.full(n, low), np.full(n, high), wanted)
        return np.where(wanted, found, -1)

    def _search(self, rows: _Rows, target: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                wanted: np.ndarray) -> np.ndarray:
        """Bisection: risk(lo) < target <= risk(hi) is kept for the wanted rows; returns hi (the first such day)."""
        lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
        active = wanted & (hi - lo > 1)
        while active.any():
            mid = (lo + hi) // 2
            reached = self._risk(rows, mid, active) >= target
            hi = np.where(active & reached, mid, hi)
            lo = np.where(active & ~reached, mid, lo)
            active = active & (hi - lo > 1)
        return hi

    def _risk(self, rows: _Rows, offset: int | np.ndarray, only: np.ndarray | None = None) -> np.ndarray:
        """The churn risk, rounded as shown, `offset` days after today (an offset before the last order's day
        counts as below every threshold)."""
        offset = np.broadcast_to(np.asarray(offset, dtype=np.int64), rows.first.shape)
        day = np.maximum(rows.today + offset, rows.last)
        T = (day - rows.first) / DAYS_PER_WEEK
        risk = np.zeros(len(T))
        mask = np.ones(len(T), dtype=bool) if only is None else only
        if mask.any():
            risk[mask] = probability_no_purchase(self.model.bgnbd, self._horizon, rows.x[mask], rows.t_x[mask], T[mask])
        risk = np.round(risk, _DIGITS)
        return np.where(rows.today + offset < rows.last, -np.inf, risk)


@dataclass(frozen=True, eq=False)
class _Rows:
    """The customers of a batch that can be scored, as day numbers; `index` maps them back to the batch."""

    index: np.ndarray
    first: np.ndarray
    last: np.ndarray
    today: np.ndarray
    days: np.ndarray
    repeat_cents: np.ndarray

    @classmethod
    def of(cls, facts: Sequence[CustomerFacts], as_of: datetime, tz: ZoneInfo) -> _Rows:
        today = as_of.astimezone(tz).toordinal()
        index, first, last, days, repeat = [], [], [], [], []
        # The store's instants are UTC already: in UTC rules the calendar day needs no conversion.
        utc = tz.key == "UTC" if hasattr(tz, "key") else tz is timezone.utc
        for i, f in enumerate(facts):
            if not f.purchase_days or f.first_order_at is None or f.last_order_at is None:
                continue
            index.append(i)
            if utc and f.first_order_at.tzinfo is timezone.utc and f.last_order_at.tzinfo is timezone.utc:
                first.append(f.first_order_at.toordinal())
                last.append(f.last_order_at.toordinal())
            else:
                first.append(f.first_order_at.astimezone(tz).toordinal())
                last.append(f.last_order_at.astimezone(tz).toordinal())
            days.append(f.purchase_days)
            repeat.append(f.total_cents - (f.first_day_cents or 0))
        first_a, last_a = np.array(first, dtype=np.int64), np.array(last, dtype=np.int64)
        # as the model reads them (inputs_from_store_days): clipped to the calendar span
        days_a = np.minimum(np.array(days, dtype=np.int64), last_a - first_a + 1)
        return cls(np.array(index, dtype=np.int64), first_a, last_a,
                   np.full(len(index), today, dtype=np.int64), days_a, np.array(repeat, dtype=np.int64))

    def inputs(self) -> ModelInputs:
        return inputs_from_store_days(self.first, self.last, self.today, self.days, self.repeat_cents)

    @property
    def x(self) -> np.ndarray:
        return (self.days - 1).astype(np.float64)

    @property
    def t_x(self) -> np.ndarray:
        return (self.last - self.first) / DAYS_PER_WEEK
