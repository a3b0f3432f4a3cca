"""Webhook subscriptions made through the API (`POST /api/webhooks`, what the n8n trigger node calls when its
workflow is activated): every event of a subscribed campaign is queued once more for each subscription, as its own
outbox event (own id, own retries, dead letter and replay), and signed with the subscription's own secret."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from rules.ids import digest_id
from rules.webhooks import Webhook
from worker.store.base import Evaluation, NewEvent, Subscription

WEBHOOK_PREFIX = "subscription:"  # + the subscription's id: the webhook name of its events
MAX_SUBSCRIPTIONS = 100
# n8n keeps an execution per call and takes some 15-75 calls a second on a small host: a subscription is paced like
# the shipped rules' webhooks, so a threshold change that moves thousands of customers never floods the workflow.
MAX_PER_SECOND = 15.0


def new_subscription(url: str, campaigns: Sequence[str], description: str, now: datetime) -> Subscription:
    """A subscription with a fresh id and a fresh Standard Webhooks secret (`whsec_` + 24 random bytes, base64)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return Subscription(f"sub_{secrets.token_hex(12)}", url, tuple(dict.fromkeys(campaigns)), description, secret, now)


def webhook_name(subscription_id: str) -> str:
    return WEBHOOK_PREFIX + subscription_id


def webhook_of(subscription: Subscription) -> Webhook:
    """How its events are sent: one event a request, at most MAX_PER_SECOND, the default timeout, retries and
    concurrency."""
    return Webhook(url=subscription.url, secret=subscription.secret, max_per_second=MAX_PER_SECOND)


def fan_out(evaluations: list[Evaluation], subscriptions: Sequence[Subscription]) -> list[Evaluation]:
    """Each evaluation with, beside every event it queues, a copy for each subscription to the event's campaign.

    A copy has its own id (so its own webhook-id) and the same body otherwise; it is never held out (a customer in a
    control group gets no copy either: nothing is sent to them) and never measured (the campaign's own event is)."""
    if not subscriptions:
        return evaluations
    out = []
    for evaluation in evaluations:
        copies = tuple(_copy(event, s) for event in evaluation.events if not event.held_out
                       for s in subscriptions if event.campaign in s.campaigns)
        out.append(replace(evaluation, events=evaluation.events + copies) if copies else evaluation)
    return out


def _copy(event: NewEvent, subscription: Subscription) -> NewEvent:
    copy_id = digest_id("evt", event.id, subscription.id)
    body = json.loads(event.body)
    body["id"] = copy_id
    return replace(event, id=copy_id, webhook=webhook_name(subscription.id),
                   body=json.dumps(body, separators=(",", ":"), ensure_ascii=False), outcome_until=None)
