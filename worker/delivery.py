"""Outbox -> signed HTTP: claim due events, send them (alone or in batches), record each attempt's outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from rules import Announced, Classifier, Rules, undone_because
from rules.schema import Webhook
from worker.rfm import load_cutoffs
from worker.store.base import CustomerRecord, EventRecord, Store, Superseded
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
    superseded: int = 0  # not sent: the move they announce was undone before their turn

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.dead + self.superseded

    def __add__(self, other: DeliveryRun) -> DeliveryRun:
        return DeliveryRun(self.delivered + other.delivered, self.retrying + other.retrying, self.dead + other.dead,
                           self.superseded + other.superseded)


class Recheck:
    """The last look before a send: does the move each event announces still hold for its customer right now?

    Reads the customer's current aggregates (an order cancelled a second ago counts, evaluated or not) and
    classifies them under the rules in force. Campaigns with `recheck: false`, and superseded events a person
    replayed, are sent as they are.
    """

    def __init__(self, store: Store, rules: Rules, now: datetime):
        self.store, self.rules, self.now = store, rules, now
        self.classifier = Classifier(rules, load_cutoffs(store))

    def undone(self, events: list[EventRecord]) -> list[Superseded]:
        checked = [e for e in events if e.recheck and self._campaign_rechecks(e.campaign)]
        if not checked:
            return []
        customers = {r.contact_id: r for r in self.store.customers_by_id(sorted({e.contact_id for e in checked}))}
        undone = []
        for event in checked:
            record = customers.get(event.contact_id)
            if record is None:
                undone.append(Superseded(event.id, "the customer is no longer in the store"))
                continue
            now = self.classifier.classify(record.facts, self.now)
            reason = undone_because(self.rules, Announced.from_body(json.loads(event.body)), record.facts, now)
            if reason is not None:
                undone.append(self._superseded(event, record, reason))
        return undone

    def _campaign_rechecks(self, name: str) -> bool:
        campaign = self.rules.campaigns.get(name)
        return campaign is None or campaign.recheck

    def _superseded(self, event: EventRecord, record: CustomerRecord, reason: str) -> Superseded:
        # The move that undid it is the customer's latest transition, if one was recorded after this event was.
        history = self.store.transitions_for(record.contact_id, limit=10_000)
        latest = history[-1] if history else None
        if latest is not None and latest.detected_at > event.created_at:
            return Superseded(event.id, f"{reason} (transition {latest.from_segment} -> {latest.to_segment} "
                                        f"detected {latest.detected_at.isoformat()})", latest.id)
        return Superseded(event.id, f"{reason} (not evaluated yet: the orders changed since)")


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


@dataclass(frozen=True)
class _Route:
    """Everything that sends to one webhook: its settings, keep-alive session, pacer and sending threads."""

    webhook: Webhook
    sender: WebhookSender
    pacer: Pacer | _Unpaced
    # Threads that live as long as the route: each keeps its own store connection for the re-check before a send,
    # where threads made per delivery run would open (and leave for the collector) new ones every few seconds.
    pool: ThreadPoolExecutor

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.sender.close()


class Senders:
    """One WebhookSender (one keep-alive HTTP session), one pacer and one pool of sending threads per webhook,
    rebuilt only when its settings change."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()

    def get(self, name: str, webhook: Webhook) -> WebhookSender:
        return self.route(name, webhook).sender

    def pacer(self, name: str, webhook: Webhook) -> Pacer | _Unpaced:
        return self.route(name, webhook).pacer

    def route(self, name: str, webhook: Webhook) -> _Route:
        with self._lock:
            known = self._routes.get(name)
            if known is not None and known.webhook == webhook:
                return known
            if known is not None:
                known.close()
            sender = WebhookSender(_Endpoint(name, webhook.url, webhook.secret, webhook.timeout_seconds,
                                             dict(webhook.headers)))
            pacer = Pacer(webhook.max_per_second) if webhook.max_per_second else _Unpaced()
            pool = ThreadPoolExecutor(max_workers=webhook.max_concurrency, thread_name_prefix=f"deliver-{name}")
            route = self._routes[name] = _Route(webhook, sender, pacer, pool)
            return route

    def close(self) -> None:
        with self._lock:
            for route in self._routes.values():
                route.close()
            self._routes.clear()


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
    recheck = Recheck(store, rules, now)
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
        total += _deliver_group(store, senders.route(name, webhook), group, now, rng, clock, recheck)
    return total


def _deliver_group(store: Store, route: _Route, events: list[EventRecord], now: datetime, rng: random.Random,
                   clock: Callable[[], datetime], recheck: Recheck) -> DeliveryRun:
    webhook, sender, pacer = route.webhook, route.sender, route.pacer
    if webhook.batch_size > 1:
        units = [_batch_message(events[i:i + webhook.batch_size])
                 for i in range(0, len(events), webhook.batch_size)]
    else:
        # One unit per customer, its events in order, so a customer never hears "win-back" before "welcome".
        per_customer: dict[str, list[_Message]] = defaultdict(list)
        for event in events:
            per_customer[event.contact_id].append(_Message([event], event.id, event.body.encode()))
        units = list(per_customer.values())
    total = DeliveryRun()
    delivered: list[tuple[_Message, SendResult]] = []
    # Threads only talk HTTP; outcomes are recorded here, on the caller's store connection, in small groups as
    # units finish: a crash mid-claim re-sends at most a group and what was in flight, never the whole claim.
    for outcomes, superseded, unsent in route.pool.map(
            lambda unit: _send_in_order(sender, pacer, unit, clock, recheck), units):
        if superseded:
            total += _record_superseded(store, superseded, now)
        for message, outcome in outcomes:
            if isinstance(outcome, SendResult):
                delivered.append((message, outcome))
            else:
                total += _record_failure(store, webhook, message, outcome, now, rng)
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
    return [_batch(events)]


def _batch(events: list[EventRecord]) -> _Message:
    ids = [e.id for e in events]
    batch_id = "bat_" + hashlib.sha256("|".join(ids).encode()).hexdigest()[:26]
    body = '{"events":[' + ",".join(e.body for e in events) + "]}"
    return _Message(events, batch_id, body.encode())


_Sent = tuple[list[tuple["_Message", SendResult | Exception]], list[Superseded], list[str]]


def _send_in_order(sender: WebhookSender, pacer: Pacer | _Unpaced, unit: list[_Message],
                   clock: Callable[[], datetime], recheck: Recheck) -> _Sent:
    """A customer's messages one after another, stopping at the first failure so that none overtakes it.

    Each message is re-checked just before it goes: events whose move was undone are left out (a batch is sent
    with the rest). Returns the send outcomes, the superseded events, and the ids left unsent after a failure.
    """
    sent: list[tuple[_Message, SendResult | Exception]] = []
    superseded: list[Superseded] = []
    for index, message in enumerate(unit):
        pacer.wait()
        try:
            undone = recheck.undone(message.events)
        except Exception as exc:  # no send without the check: retried like a failed send
            log.exception("could not re-check %s before sending", message.msg_id, extra=_log_fields(message))
            sent.append((message, DeliveryError(f"could not re-check the customer before sending: "
                                                f"{type(exc).__name__}", permanent=False)))
        else:
            superseded += undone
            message = _without(message, {s.event_id for s in undone})
            if message is None:
                continue
            sent.append(_send(sender, message, clock))
        if not isinstance(sent[-1][1], SendResult):
            return sent, superseded, [e.id for later in unit[index + 1:] for e in later.events]
    return sent, superseded, []


def _without(message: _Message, undone: set[str]) -> _Message | None:
    if not undone:
        return message
    kept = [e for e in message.events if e.id not in undone]
    if not kept:
        return None
    return _batch(kept) if message.msg_id.startswith("bat_") else message


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


def _record_superseded(store: Store, superseded: list[Superseded], now: datetime) -> DeliveryRun:
    store.record_superseded(superseded, now)
    for item in superseded:
        log.info("not sending %s: %s", item.event_id, item.reason,
                 extra={"event_ids": [item.event_id], "superseded_by": item.transition_id})
    return DeliveryRun(superseded=len(superseded))


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
