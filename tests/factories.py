"""Builders for the domain and data-path suites: rules text with tunable parts, customer facts, orders, stores."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rules import CustomerFacts, Rules, parse_rules
from worker.store import open_store
from worker.store.base import Order, Store

UTC = timezone.utc
# A Saturday noon in UTC; every test counts days from here and never reads the clock.
T0 = datetime(2026, 2, 21, 12, 0, tzinfo=UTC)
SECRET = "whsec-test-secret-do-not-log"
ENV = {"WEBHOOK_SECRET": SECRET, "N8N_WEBHOOK_URL": "http://127.0.0.1:9/webhook/segment-events"}

DEFAULT_SEGMENTS = """\
  - {name: VIP, when: {totalSpend: {gt: @VIP@}}}
  - {name: Dormant, when: {lastOrderDaysAgo: {gt: 90}}}
  - {name: New, when: {firstOrderDaysAgo: {lte: 30}}}
  - {name: Active}
"""

FREQUENCY_BANDS = """\
purchase_frequency:
  - {name: Weekly, max_avg_days: 7}
  - {name: Monthly, max_avg_days: 30}
  - {name: Quarterly, max_avg_days: 90}
  - {name: Occasional}
"""

DEFAULT_CAMPAIGNS = """\
  welcome:  {on: {entered: New}, webhook: n8n}
  vip:      {on: {entered: VIP}, webhook: n8n}
  win-back: {on: {entered: Dormant}, webhook: n8n}
"""

_TEMPLATE = """\
version: 1
timezone: @TIMEZONE@
segments:
@SEGMENTS@no_orders_segment: New
@FREQUENCY@campaigns:
@CAMPAIGNS@webhooks:
  n8n: {url: "${N8N_WEBHOOK_URL}", secret: "${WEBHOOK_SECRET}", timeout_seconds: 10}
schedule: {evaluate_every_seconds: 60, deliver_every_seconds: 5}
first_run: @FIRST_RUN@
"""


def rules_text(timezone: str = "UTC", vip: str = "5000", first_run: str = "baseline",
               segments: str = DEFAULT_SEGMENTS, campaigns: str = DEFAULT_CAMPAIGNS) -> str:
    """The DESIGN.md seed rules, with the parts tests vary; `segments`/`campaigns` are indented YAML blocks."""
    return (_TEMPLATE.replace("@SEGMENTS@", segments).replace("@FREQUENCY@", FREQUENCY_BANDS)
            .replace("@CAMPAIGNS@", campaigns)
            .replace("@VIP@", vip).replace("@TIMEZONE@", timezone).replace("@FIRST_RUN@", first_run))


def make_rules(**parts: str) -> Rules:
    return parse_rules(rules_text(**parts), env=ENV)


def facts(*orders: tuple[datetime, int]) -> CustomerFacts:
    """Aggregates of (order time, cents) pairs, as the store keeps them."""
    if not orders:
        return CustomerFacts(0, 0, None, None)
    times = [when for when, _ in orders]
    return CustomerFacts(len(orders), sum(cents for _, cents in orders), min(times), max(times))


def days_ago(days: float, as_of: datetime = T0) -> datetime:
    return as_of - timedelta(days=days)


def order(contact_id: str, ref: str, order_at: datetime, total_cents: int = 10_000, status: str | None = None,
          email: str | None = None, name: str | None = None) -> Order:
    return Order(contact_id=contact_id, order_ref=ref, order_at=order_at, total_cents=total_cents, status=status,
                 email=email, name=name)


def new_store(directory: Path) -> Store:
    return open_store(f"sqlite:///{directory}/segments.db")


def ingest(store: Store, orders: Sequence[Order], now: datetime = T0) -> None:
    store.upsert_orders(list(orders), now)
