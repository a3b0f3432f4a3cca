"""A customer's facts (the aggregates kept at ingest) and the metrics derived from them at a moment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

CENTS = Decimal("0.01")
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """What the rules may look at: counts and money over non-cancelled orders, and their first/last times."""

    order_count: int
    total_cents: int
    first_order_at: datetime | None
    last_order_at: datetime | None
    # Distinct calendar days (in the store's order-day timezone, the rules') with a counted order, and the spend on
    # the first of them: what the churn and value model reads (repeat purchases are counted per day, as in the
    # BG/NBD paper). None where a caller builds facts without them: no prediction is made then.
    purchase_days: int | None = None
    first_day_cents: int | None = None
    # Whose facts these are: it decides the customer's arm of a running experiment. None: in no experiment.
    contact_id: str | None = None

    @property
    def total_spend(self) -> Decimal:
        return (Decimal(self.total_cents) / 100).quantize(CENTS)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def days_between(earlier: datetime, later: datetime, tz: ZoneInfo) -> int:
    """Calendar days from `earlier` to `later` in `tz`: an order at 23:30 and a check at 00:30 are one day apart."""
    return (local_date(later, tz) - local_date(earlier, tz)).days


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which `day` starts in `tz`."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(timezone.utc)


def avg_days_between_orders(facts: CustomerFacts) -> Fraction | None:
    """Exact average gap in (fractional) days between first and last order; None with fewer than two orders."""
    if facts.order_count < 2 or facts.first_order_at is None or facts.last_order_at is None:
        return None
    span = facts.last_order_at - facts.first_order_at
    span_ms = span // timedelta(milliseconds=1)
    return Fraction(span_ms, _MS_PER_DAY * (facts.order_count - 1))
