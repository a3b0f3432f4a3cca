"""Outbox -> signed HTTP: claim due events, send them (alone or in batches), record each attempt's outcome."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from rules import Rules
from rules.schema import Webhook
from worker.store.base import EventRecord, Store
from worker.transport import DeliveryError, SendResult, WebhookSender, next_attempt_at

log = logging.getLogger(__name__)

CLAIM_LIMIT = 200
RECORD_EVERY = 25  # successful sends written per transaction
CLAIM_SECONDS = 120  # longer than the worst case of one claim's sends; a crashed holder's claim expires


@dataclass(frozen=True)
class DeliveryRun:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.dead

    def __add__(self, other: DeliveryRun) -> DeliveryRun:
        return DeliveryRun(self.delivered + other.delivered, self.retrying + other.retrying, self.dead + other.dead)


@dataclass(frozen=True)
class _Endpoint:
    """A rules.yaml webhook with its name, the shape WebhookSender expects."""

    name: str
    url: str
    secret: str
    timeout_seconds: float
    headers: dict[str, str]


class Pacer:
    """Spaces the sends to one webhook at least 1/`per_second` apart, across threads and successive claims."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class _Unpaced:
    def wait(self) -> None:
        return None


class Senders:
    """One WebhookSender (one keep-alive HTTP session) and one pacer per webhook, rebuilt only when its
    settings change."""

    def __init__(self) -> None:
        self._senders: dict[str, tuple[Webhook, WebhookSender, Pacer | _Unpaced]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, webhook: Webhook) -> WebhookSender:
        return self._entry(name, webhook)[1]

    def pacer(self, name: str, webhook: Webhook) -> Pacer | _Unpaced:
        return self._entry(name, webhook)[2]

    def _entry(self, name: str, webhook: Webhook) -> tuple[Webhook, WebhookSender, Pacer | _Unpaced]:
        with self._lock:
            known = self._senders.get(name)
            if known is not None and known[0] == webhook:
                return known
            if known is not None:
                known[1].close()
            sender = WebhookSender(_Endpoint(name, webhook.url, webhook.secret, webhook.timeout_seconds,
                                             dict(webhook.headers)))
            pacer = Pacer(webhook.max_per_second) if webhook.max_per_second else _Unpaced()
            entry = self._senders[name] = (webhook, sender, pacer)
            return entry

    def close(self) -> None:
        with self._lock:
            for _, sender, _pacer in self._senders.values():
                sender.close()
            self._senders.clear()


def deliver_due(store: Store, rules: Rules, senders: Senders, now: datetime, holder: str,
                rng: random.Random | None = None, limit: int = CLAIM_LIMIT,
                clock: Callable[[], datetime] | None = None) -> DeliveryRun:
    """Send up to `limit` events due by `now`; returns what happened. Call until `attempted` is 0 to drain.

    `now` schedules retries; `clock` stamps signatures (receivers reject stale webhook-timestamps).
    """
    rng = rng or random.Random()
    clock = clock or (lambda: datetime.now(timezone.utc))
    events = store.claim_due_events(now, limit, holder, CLAIM_SECONDS)
    if not events:
        return DeliveryRun()
    by_webhook: dict[str, list[EventRecord]] = defaultdict(list)
    for event in events:
        by_webhook[event.webhook].append(event)
    total = DeliveryRun()
    for name, group in by_webhook.items():
        webhook = rules.webhooks.get(name)
        if webhook is None:
            store.record_failed([e.id for e in group], now, None,
                                f"webhook '{name}' is no longer defined in the rules; fix rules.yaml, then replay",
                                0, None)
            total += DeliveryRun(dead=len(group))
            continue
        sender, pacer = senders.get(name, webhook), senders.pacer(name, webhook)
        total += _deliver_group(store, webhook, sender, pacer, group, now, rng, clock)
    return total


def _deliver_group(store: Store, webhook: Webhook, sender: WebhookSender, pacer: Pacer | _Unpaced,
                   events: list[EventRecord], now: datetime, rng: random.Random,
                   clock: Callable[[], datetime]) -> DeliveryRun:
    if webhook.batch_size > 1:
        units = [_batch_message(events[i:i + webhook.batch_size])
                 for i in range(0, len(events), webhook.batch_size)]
    else:
        # One unit per customer, its events in order, so a customer never hears "win-back" before "welcome".
        per_customer: dict[str, list[_Message]] = defaultdict(list)
        for event in events:
            per_customer[event.contact_id].append(_Message([event], event.id, event.body.encode()))
        units = list(per_customer.values())
    workers = min(webhook.max_concurrency, len(units))
    total = DeliveryRun()
    delivered: list[tuple[_Message, SendResult]] = []
    # Threads only talk HTTP; outcomes are recorded here, on the caller's store connection, in small groups as
    # units finish: a crash mid-claim re-sends at most a group and what was in flight, never the whole claim.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver") as pool:
        for unit, outcomes in zip(units, pool.map(lambda unit: _send_in_order(sender, pacer, unit, clock), units),
                                  strict=True):
            for message, outcome in outcomes:
                if isinstance(outcome, SendResult):
                    delivered.append((message, outcome))
                else:
                    total += _record_failure(store, webhook, message, outcome, now, rng)
            unsent = [event.id for message in unit[len(outcomes):] for event in message.events]
            if unsent:
                # An earlier event of the customer just failed: hand the rest back unsent (due now, attempts
                # untouched); the claim rule keeps them waiting until the failed one is through.
                store.release_claims(unsent, now)
            if len(delivered) >= RECORD_EVERY:
                total += _record_deliveries(store, delivered, now)
                delivered = []
    return total + _record_deliveries(store, delivered, now)


@dataclass(frozen=True)
class _Message:
    events: list[EventRecord]
    msg_id: str
    body: bytes


def _batch_message(events: list[EventRecord]) -> list[_Message]:
    ids = [e.id for e in events]
    batch_id = "bat_" + hashlib.sha256("|".join(ids).encode()).hexdigest()[:26]
    body = '{"events":[' + ",".join(e.body for e in events) + "]}"
    return [_Message(events, batch_id, body.encode())]


def _send_in_order(sender: WebhookSender, pacer: Pacer | _Unpaced, unit: list[_Message],
                   clock: Callable[[], datetime]) -> list[tuple[_Message, SendResult | Exception]]:
    """A customer's messages one after another, stopping at the first failure so that none overtakes it."""
    sent = []
    for message in unit:
        pacer.wait()
        sent.append(_send(sender, message, clock))
        if not isinstance(sent[-1][1], SendResult):
            break
    return sent


def _send(sender: WebhookSender, message: _Message,
          clock: Callable[[], datetime]) -> tuple[_Message, SendResult | Exception]:
    try:
        return message, sender.send(message.msg_id, message.body, clock())
    except Exception as exc:  # recorded by _record: a failing webhook never stops the loop
        return message, exc


def _record_deliveries(store: Store, delivered: list[tuple[_Message, SendResult]], now: datetime) -> DeliveryRun:
    if not delivered:
        return DeliveryRun()
    store.record_deliveries([([e.id for e in m.events], r.status, r.duration_ms) for m, r in delivered], now)
    for message, result in delivered:
        log.info("delivered %s (%d event(s)) with HTTP %d", message.msg_id, len(message.events), result.status,
                 extra=_log_fields(message))
    return DeliveryRun(delivered=sum(len(m.events) for m, _ in delivered))


def _record_failure(store: Store, webhook: Webhook, message: _Message, outcome: Exception, now: datetime,
                    rng: random.Random) -> DeliveryRun:
    ids = [e.id for e in message.events]
    attempts = max(e.attempts for e in message.events) + 1
    if isinstance(outcome, DeliveryError):
        error, status, duration = outcome.message, outcome.status, outcome.duration_ms
        retry_at = None if outcome.permanent else next_attempt_at(
            attempts, now, webhook.retry_schedule_seconds, rng, outcome.retry_after)
    else:
        log.error("unexpected error delivering %s", message.msg_id, exc_info=outcome, extra=_log_fields(message))
        error, status, duration = f"internal error: {type(outcome).__name__}", None, 0
        retry_at = next_attempt_at(attempts, now, webhook.retry_schedule_seconds, rng)
    store.record_failed(ids, now, status, error, duration, retry_at)
    log.warning("delivery of %s failed (attempt %d): %s; %s", message.msg_id, attempts, error,
                "dead" if retry_at is None else f"retry at {retry_at.isoformat()}", extra=_log_fields(message))
    return DeliveryRun(retrying=len(ids)) if retry_at is not None else DeliveryRun(dead=len(ids))


def _log_fields(message: _Message) -> dict[str, object]:
    """What a JSON log line carries besides its text, so an operator can search by event or by customer."""
    return {"event_ids": [e.id for e in message.events],
            "contact_ids": sorted({e.contact_id for e in message.events}), "webhook": message.events[0].webhook}
