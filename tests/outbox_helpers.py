"""Builders for the outbox suites: rules whose webhooks point at a test Receiver, orders, queued events, a
receiver that comes back on the same port, and a clock that stands still."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from typing import Any

from rules import Rules, parse_rules
from tests.conftest import OUTBOX_SECRET, FixedClock
from tests.factories import DEFAULT_SEGMENTS, FREQUENCY_BANDS
from tests.receiver import Receiver, _handler_for
from worker.delivery import DeliveryRun, Senders, deliver_due
from worker.evaluate import evaluate_due
from worker.ingest import parse_orders
from worker.serialize import iso
from worker.store.base import IngestResult, Store

UTC = timezone.utc
# Segment logic never reads the clock: every evaluation in these suites happens at (or after) T0.
T0 = datetime(2026, 2, 21, 12, 0, tzinfo=UTC)
SECRET = OUTBOX_SECRET
ENV = {"WEBHOOK_SECRET": SECRET}

WELCOME_ONLY = """\
  welcome: {on: {entered: New}, webhook: n8n}
"""
# For suites whose events, queued at T0, go out at the real clock: their customers are no longer New by then, so
# the re-check before each send would rightly supersede them. Those suites are about something else (crash safety,
# replay) and send the events as they were queued.
WELCOME_AS_QUEUED = """\
  welcome: {on: {entered: New}, webhook: n8n, recheck: false}
"""
LIFECYCLE = """\
  welcome:     {on: {entered: New}, webhook: n8n}
  vip:         {on: {entered: VIP}, webhook: n8n}
  win-back:    {on: {entered: Dormant}, webhook: n8n}
  at-risk:     {on: {reached: {lastOrderDaysAgo: 75}}, segment: Active, webhook: n8n}
  reactivated: {on: {left: Dormant}, webhook: n8n}
"""

_TEMPLATE = """\
version: 1
timezone: @TIMEZONE@
segments:
""" + DEFAULT_SEGMENTS + "no_orders_segment: New\n" + FREQUENCY_BANDS + """\
campaigns:
@CAMPAIGNS@webhooks:
  @WEBHOOK@:
    url: "@URL@"
    secret: "${WEBHOOK_SECRET}"
    timeout_seconds: 5
@OPTIONS@schedule: {evaluate_every_seconds: @EVALUATE_EVERY@, deliver_every_seconds: @DELIVER_EVERY@}
first_run: @FIRST_RUN@
"""


def rules_text(url: str, *, first_run: str = "emit", campaigns: str = WELCOME_ONLY, webhook: str = "n8n",
               timezone: str = "UTC", vip: str = "5000", batch_size: int | None = None,
               max_concurrency: int | None = None, retry_schedule: Sequence[float] | None = None,
               headers: dict[str, str] | None = None, evaluate_every: float = 60,
               deliver_every: float = 5, max_per_second: float | None = None) -> str:
    """Seed rules with one webhook `webhook` at `url`, signed with ${WEBHOOK_SECRET}; campaigns use `n8n`."""
    options = ""
    if batch_size is not None:
        options += f"    batch_size: {batch_size}\n"
    if max_concurrency is not None:
        options += f"    max_concurrency: {max_concurrency}\n"
    if max_per_second is not None:
        options += f"    max_per_second: {max_per_second}\n"
    if retry_schedule is not None:
        options += f"    retry_schedule_seconds: [{', '.join(str(s) for s in retry_schedule)}]\n"
    if headers:
        options += "    headers: {" + ", ".join(f'{k}: "{v}"' for k, v in headers.items()) + "}\n"
    replacements = {
        "@CAMPAIGNS@": campaigns, "@WEBHOOK@": webhook, "@URL@": url, "@OPTIONS@": options,
        "@TIMEZONE@": timezone, "@VIP@": vip, "@FIRST_RUN@": first_run,
        "@EVALUATE_EVERY@": str(evaluate_every), "@DELIVER_EVERY@": str(deliver_every),
    }
    text = _TEMPLATE
    for marker, value in replacements.items():
        text = text.replace(marker, value)
    return text


def make_rules(url: str, **options: Any) -> Rules:
    return parse_rules(rules_text(url, **options), env=ENV)


def order_json(contact_id: str, reference: str, order_at: datetime, total: str = "100.00") -> dict[str, Any]:
    """One order as n8n or an import file sends it."""
    return {"contactID": contact_id, "orderReference": reference, "orderDate": iso(order_at), "total": total,
            "email": f"{contact_id.lower()}@example.com", "name": f"Customer {contact_id}"}


def ingest(store: Store, records: Sequence[dict[str, Any]], now: datetime = T0) -> IngestResult:
    return store.upsert_orders(parse_orders(list(records)), now)


def queue_welcomes(store: Store, rules: Rules, count: int, as_of: datetime = T0, prefix: str = "C") -> list[str]:
    """`count` new customers with one order each, evaluated at `as_of`: the ids of their welcome events, in order.

    Under `first_run: emit` (or after a first run) each customer is announced once.
    """
    ingest(store, [order_json(f"{prefix}{n:04d}", f"{prefix}{n:04d}-ORD-1", as_of - timedelta(days=1))
                   for n in range(count)], as_of)
    run = evaluate_due(store, rules, as_of)
    assert run.events == count, run
    return [e.id for e in store.list_events("pending", limit=count + 1000) if e.contact_id.startswith(prefix)]


def drain(store: Store, rules: Rules, senders: Senders, now: datetime, holder: str = "test",
          rng: random.Random | None = None) -> DeliveryRun:
    """deliver_due until nothing due by `now` is left."""
    total = DeliveryRun()
    for _ in range(1000):
        run = deliver_due(store, rules, senders, now, holder, rng)
        total += run
        if run.attempted == 0:
            return total
    raise AssertionError("deliver_due kept finding work")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ReturningReceiver(Receiver):
    """A Receiver on a chosen port, so a test can play n8n being down and coming back at the same address."""

    def __init__(self, secret: str, port: int) -> None:
        super().__init__(secret)
        self.port = port

    def start(self) -> ReturningReceiver:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="test-receiver", daemon=True)
        self._thread.start()
        return self


# The worker's clock in tests stands still until a test moves it, like the API's (T0 is the same instant as NOW).
StillClock = FixedClock
