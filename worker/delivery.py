"""Outbox -> signed HTTP: claim due events, send them (alone or in batches), record each attempt's outcome."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rules import Announced, Classifier, Rules, undone_because
from rules.schema import Webhook
from worker.clock import utc_now
from worker.prediction import load_model
from worker.rfm_boundaries import load_cutoffs
from worker.serialize import batch_message
from worker.store.base import CustomerRecord, EventRecord, Store, Superseded
from worker.subscriptions import WEBHOOK_PREFIX, webhook_name, webhook_of
from worker.transport import DeliveryError, SendResult, WebhookSender, next_attempt_at

log = logging.getLogger(__name__)

CLAIM_LIMIT = 200
# A claim lives this long unless renewed; the sender renews it every HEARTBEAT_SECONDS while the sends are in
# flight, so a crashed sender's events are free again within CLAIM_SECONDS and a live one never loses them.
CLAIM_SECONDS = 20
HEARTBEAT_SECONDS = 5
SLICE_SECONDS = 10  # no send starts later than this into a run: the rest goes back, so every run ends soon


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
        self.classifier = Classifier(rules, load_cutoffs(store), load_model(store, rules))

    def undone(self, events: list[EventRecord]) -> list[Superseded]:
        checked = [e for e in events if e.recheck and self._campaign_rechecks(e.campaign)]
        if not checked:
            return []
        records = self.store.customers_by_id(sorted({e.contact_id for e in checked}))
        customers = {r.contact_id: r for r in records}
        classified = dict(zip(customers, self.classifier.classify_many([r.facts for r in records], self.now),
                              strict=True))
        undone = []
        for event in checked:
            record = customers.get(event.contact_id)
            if record is None:
                undone.append(Superseded(event.id, "the customer is no longer in the store"))
                continue
            current = classified[event.contact_id]
            reason = undone_because(self.rules, Announced.from_body(json.loads(event.body)), record.facts, current)
            if reason is None:
                blocked = self.classifier.campaign_blocked(event.campaign, record.facts, current)
                reason = None if blocked is None else f"the campaign's condition no longer holds: {blocked}"
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
            sender = WebhookSender(name, webhook)
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
                clock: Callable[[], datetime] | None = None, stopping: threading.Event | None = None,
                heartbeat: Callable[[], None] | None = None, shards: frozenset[int] | None = None) -> DeliveryRun:
    """Send up to `limit` events due by `now`; returns what happened. Call until `attempted` is 0 to drain.

    `now` schedules retries; `clock` stamps signatures (receivers reject stale webhook-timestamps). Each webhook
    sends on its own threads, so a slow one never holds up another. No send starts after SLICE_SECONDS or once
    `stopping` is set: what is left goes back to the queue unsent. While sends are in flight the claims are
    renewed every HEARTBEAT_SECONDS, and `heartbeat` is called (the scheduler renews its leases there). With
    `shards`, only events of customers in those shards are taken (the shards this process holds).
    """
    if rules.delivery_problem is not None:  # a webhook lacks its settings: every event waits, in order
        return DeliveryRun()
    rng = rng or random.Random()
    clock = clock or utc_now
    events = store.claim_due_events(now, limit, holder, CLAIM_SECONDS, shards)
    if not events:
        return DeliveryRun()
    started = time.monotonic()
    gate = _Gate(started + SLICE_SECONDS, stopping)
    total, routes = DeliveryRun(), {}
    subscribed = ({webhook_name(s.id): webhook_of(s) for s in store.subscriptions()}
                  if any(e.webhook.startswith(WEBHOOK_PREFIX) for e in events) else {})
    for name in dict.fromkeys(e.webhook for e in events):
        webhook = subscribed.get(name) if name.startswith(WEBHOOK_PREFIX) else rules.webhooks.get(name)
        if webhook is not None:
            routes[name] = senders.route(name, webhook)
            continue
        orphans = [e.id for e in events if e.webhook == name]
        why = (f"the subscription '{name.removeprefix(WEBHOOK_PREFIX)}' was deleted" if name.startswith(WEBHOOK_PREFIX)
               else f"webhook '{name}' is no longer defined in the rules; fix rules.yaml, then replay")
        store.record_failed(orphans, now, None, why, 0, None)
        total += DeliveryRun(dead=len(orphans))
    recheck = Recheck(store, rules, now)
    work = {}
    for unit in _units([e for e in events if e.webhook in routes], routes):
        work[unit.route.pool.submit(_send_unit, unit, clock, recheck, gate)] = unit
    pending, next_beat = set(work), started + HEARTBEAT_SECONDS
    while pending:
        done, pending = wait(pending, timeout=max(0.0, next_beat - time.monotonic()), return_when=FIRST_COMPLETED)
        # Outcomes are recorded as soon as they are known, so a crash re-sends only what was in flight.
        total += _record(store, [f.result() for f in done], now, rng)
        if pending and time.monotonic() >= next_beat:
            in_flight = [e.id for f in pending for m in work[f].messages for e in m.events]
            store.renew_claims(in_flight, holder, now + timedelta(seconds=time.monotonic() - started + CLAIM_SECONDS))
            if heartbeat is not None:
                heartbeat()
            next_beat = time.monotonic() + HEARTBEAT_SECONDS
    return total


class _Gate:
    """Whether a send may still start: not after the slice's end, not once shutdown began."""

    def __init__(self, closes_at: float, stopping: threading.Event | None):
        self.closes_at, self.stopping = closes_at, stopping

    def open(self) -> bool:
        return time.monotonic() < self.closes_at and not (self.stopping is not None and self.stopping.is_set())


@dataclass(frozen=True)
class _Message:
    events: list[EventRecord]
    msg_id: str
    body: bytes
    route: _Route


@dataclass(frozen=True)
class _Unit:
    """Messages sent one after another on `route`'s threads: a customer's ordered events (to whatever webhooks),
    or one event, or one batch."""

    route: _Route
    messages: list[_Message]


@dataclass
class _Outcome:
    sent: list[tuple[_Message, SendResult | Exception]] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)  # handed back: after a failure, at the slice's end, at shutdown


def _units(events: list[EventRecord], routes: dict[str, _Route]) -> list[_Unit]:
    units: list[_Unit] = []
    per_customer: dict[str, list[_Message]] = defaultdict(list)
    batched: dict[str, list[EventRecord]] = defaultdict(list)
    for event in events:  # claim order: oldest first, so a customer's events stay in the order they were queued
        route = routes[event.webhook]
        if route.webhook.batch_size > 1:
            batched[event.webhook].append(event)
        elif event.ordered:
            # One unit per customer across webhooks, so a customer never hears "vip" before "welcome".
            per_customer[event.contact_id].append(_Message([event], event.id, event.body.encode(), route))
        else:
            units.append(_Unit(route, [_Message([event], event.id, event.body.encode(), route)]))
    units += [_Unit(messages[0].route, messages) for messages in per_customer.values()]
    for name, group in batched.items():
        size = routes[name].webhook.batch_size
        units += [_Unit(routes[name], [_batch(group[i:i + size], routes[name])]) for i in range(0, len(group), size)]
    return units


def _batch(events: list[EventRecord], route: _Route) -> _Message:
    msg_id, body = batch_message([(e.id, e.body) for e in events])
    return _Message(events, msg_id, body.encode(), route)


def _send_unit(unit: _Unit, clock: Callable[[], datetime], recheck: Recheck, gate: _Gate) -> _Outcome:
    """A unit's messages in order, stopping at the first failure so that none overtakes it.

    Each message is re-checked just before it goes: events whose move was undone are left out (a batch is sent
    with the rest).
    """
    outcome = _Outcome()
    for index, message in enumerate(unit.messages):
        if gate.open():
            message.route.pacer.wait()
        if not gate.open():  # pacing may have waited past the slice's end
            outcome.unsent = [e.id for later in unit.messages[index:] for e in later.events]
            return outcome
        try:
            undone = recheck.undone(message.events)
        except Exception as exc:  # no send without the check: retried like a failed send
            log.exception("could not re-check %s before sending", message.msg_id, extra=_log_fields(message))
            outcome.sent.append((message, DeliveryError(f"could not re-check the customer before sending: "
                                                        f"{type(exc).__name__}", permanent=False)))
        else:
            outcome.superseded += undone
            kept = _without(message, {s.event_id for s in undone})
            if kept is None:
                continue
            outcome.sent.append(_send(kept, clock))
        if not isinstance(outcome.sent[-1][1], SendResult):
            outcome.unsent = [e.id for later in unit.messages[index + 1:] for e in later.events]
            return outcome
    return outcome


def _without(message: _Message, undone: set[str]) -> _Message | None:
    if not undone:
        return message
    kept = [e for e in message.events if e.id not in undone]
    if not kept:
        return None
    return _batch(kept, message.route) if message.msg_id.startswith("bat_") else message


def _send(message: _Message, clock: Callable[[], datetime]) -> tuple[_Message, SendResult | Exception]:
    try:
        return message, message.route.sender.send(message.msg_id, message.body, clock())
    except Exception as exc:  # recorded by _record: a failing webhook never stops the loop
        return message, exc


def _record(store: Store, outcomes: list[_Outcome], now: datetime, rng: random.Random) -> DeliveryRun:
    total = DeliveryRun()
    delivered = [(m, r) for o in outcomes for m, r in o.sent if isinstance(r, SendResult)]
    if delivered:
        store.record_deliveries([([e.id for e in m.events], r.status, r.duration_ms) for m, r in delivered], now)
        for message, result in delivered:
            log.info("delivered %s (%d event(s)) with HTTP %d", message.msg_id, len(message.events), result.status,
                     extra=_log_fields(message))
        total += DeliveryRun(delivered=sum(len(m.events) for m, _ in delivered))
    superseded = [s for o in outcomes for s in o.superseded]
    if superseded:
        total += _record_superseded(store, superseded, now)
    for message, failure in ((m, r) for o in outcomes for m, r in o.sent if not isinstance(r, SendResult)):
        total += _record_failure(store, message.route.webhook, message, failure, now, rng)
    unsent = [i for o in outcomes for i in o.unsent]
    if unsent:
        # Handed back due now with their attempts untouched; after a failure the claim rule keeps a customer's
        # later events waiting until the failed one is through.
        store.release_claims(unsent, now)
    return total


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
