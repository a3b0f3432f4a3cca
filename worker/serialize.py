"""The wire format, in one place: camelCase JSON for customers, money as '0.00' strings, UTC ISO times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

from rules import Classification
from rules.ids import digest_id
from rules.rfm import RfmScore
from worker.store.base import CustomerRecord, EventRecord, TransitionRecord
from worker.store.times import iso  # the store keeps instants in its meta in the same form


def money(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or datetime; a date means its UTC midnight, a time without offset means UTC.

    Raises ValueError with a message for people.
    """
    raw = text.strip()
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), tzinfo=timezone.utc)
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO 8601 date or datetime (e.g. 2026-02-21 or "
                         "2026-02-21T08:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"'{text}' is outside the supported range of dates") from None


def customer_json(record: CustomerRecord, classification: Classification) -> dict[str, Any]:
    facts = record.facts
    return {
        "contactID": record.contact_id,
        "name": record.name,
        "email": record.email,
        "metrics": {
            "orderCount": facts.order_count,
            "totalSpend": money(facts.total_cents),
            "firstOrderDate": iso(facts.first_order_at),
            "lastOrderDate": iso(facts.last_order_at),
            "lastOrderReference": record.last_order_ref,
            "segment": classification.segment,
            "lastOrderDaysAgo": classification.last_order_days_ago,
            "purchaseFrequency": classification.purchase_frequency,
            "rfm": rfm_json(classification.rfm),
            "predicted": predicted_json(classification.predicted),
        },
        # the arm of each running threshold experiment the customer is in; its segment was decided under it
        "experiments": dict(classification.experiments),
    }


def predicted_json(predicted: Any) -> dict[str, Any] | None:
    """The model's figures as the API shows them; null while no model is fitted (or the customer has no order)."""
    if predicted is None:
        return None
    return {"churnRisk": predicted.churn_risk, "churnRiskBand": predicted.band, "pAlive": predicted.p_alive,
            "expectedOrders90d": predicted.expected_orders_90d, "predictedClv12m": money(predicted.clv_cents),
            "modelFittedAt": iso(predicted.fitted_at)}


def event_body(event_id: str, kind: str, campaign: str, occurred_at: datetime, detected_at: str,
               transition: tuple[str | None, str], customer: dict[str, Any], rules_version: str,
               milestone: tuple[str, int | str] | None = None) -> str:
    """The JSON an event carries to n8n (`$json.body` there); `detected_at` comes formatted, shared by a run."""
    body: dict[str, Any] = {
        "id": event_id,
        "type": kind,
        "campaign": campaign,
        "occurredAt": iso(occurred_at),
        "detectedAt": detected_at,
        "transition": {"from": transition[0], "to": transition[1]},
        "customer": customer,
        "rulesVersion": rules_version,
    }
    if milestone is not None:
        # a day milestone says its days; a churn band trigger its band (and the customer's metrics the risk)
        key = "band" if isinstance(milestone[1], str) else "days"
        body["milestone"] = {"metric": milestone[0], key: milestone[1]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def batch_body(bodies: Sequence[str]) -> str:
    """Several events in one POST (a webhook's `batch_size`): `{"events": [...]}`, each body as it is."""
    return '{"events":[' + ",".join(bodies) + "]}"


def batch_message(events: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The webhook-id and body of one POST carrying these (event id, body) pairs: the batch id is a digest of the
    event ids (so a retry of the same batch has the same id), the body batch_body's."""
    return digest_id("bat", *(event_id for event_id, _ in events)), batch_body([body for _, body in events])


def rfm_json(score: RfmScore | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {"recency": score.recency, "frequency": score.frequency, "monetary": score.monetary,
            "group": score.group}


def transition_json(transition: TransitionRecord) -> dict[str, Any]:
    return {
        "id": transition.id,
        "contactID": transition.contact_id,
        "from": transition.from_segment,
        "to": transition.to_segment,
        "occurredAt": iso(transition.occurred_at),
        "detectedAt": iso(transition.detected_at),
        "rulesVersion": transition.rules_version,
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "contactID": event.contact_id,
        "campaign": event.campaign,
        "webhook": event.webhook,
        "type": event.type,
        "status": event.status,
        "attempts": event.attempts,
        "occurredAt": iso(event.occurred_at),
        "createdAt": iso(event.created_at),
        "nextAttemptAt": iso(event.next_attempt_at),
        "deliveredAt": iso(event.delivered_at),
        "lastStatus": event.last_status,
        "lastError": event.last_error,
        "supersededBy": event.superseded_by,
        "recheck": event.recheck,
    }
