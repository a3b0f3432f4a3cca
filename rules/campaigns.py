"""Which campaigns a segment move or a day milestone fires, and the deterministic id of each event."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from rules.metrics import CustomerFacts, local_date, local_midnight
from rules.schema import Rules


@dataclass(frozen=True, slots=True)
class Fired:
    """One campaign to announce: `kind` is segment.entered / segment.left / segment.changed / milestone.reached."""

    campaign: str
    kind: str
    occurred_at: datetime


def campaigns_for_move(rules: Rules, from_segment: str | None, to_segment: str) -> list[tuple[str, str]]:
    """(campaign, kind) pairs fired by a move; `from_segment` is None for a customer seen for the first time."""
    fired = []
    for name, campaign in rules.campaigns.items():
        trigger = campaign.on
        if trigger.entered is not None and trigger.entered == to_segment:
            fired.append((name, "segment.entered"))
        elif trigger.left is not None and from_segment is not None and trigger.left == from_segment:
            fired.append((name, "segment.left"))
        elif (trigger.from_ is not None or trigger.to is not None) and from_segment is not None \
                and trigger.from_ in (None, from_segment) and trigger.to in (None, to_segment):
            fired.append((name, "segment.changed"))
    return fired


def milestones_reached(rules: Rules, facts: CustomerFacts, segment: str, since: datetime | None,
                       as_of: datetime) -> list[Fired]:
    """Day milestones (`on: {reached: {lastOrderDaysAgo: 75}}`) crossed after `since` and no later than `as_of`.

    Each crossing has one instant (a local midnight), so it fires once however often the customer is evaluated.
    """
    fired = []
    tz = rules.tz
    for name, campaign in rules.campaigns.items():
        if campaign.on.reached is None or (campaign.segment is not None and campaign.segment != segment):
            continue
        metric, days = next(iter(campaign.on.reached.items()))
        base = facts.last_order_at if metric == "lastOrderDaysAgo" else facts.first_order_at
        if base is None:
            continue
        crossed_at = local_midnight(local_date(base, tz) + timedelta(days=int(days)), tz)
        if crossed_at <= as_of and (since is None or crossed_at > since):
            fired.append(Fired(name, "milestone.reached", crossed_at))
    return fired


def event_id(contact_id: str, campaign: str, kind: str, from_segment: str | None, to_segment: str,
             occurred_at: datetime) -> str:
    """Same customer, campaign, move and moment give the same id, so re-running an evaluation never duplicates."""
    key = "|".join((contact_id, campaign, kind, from_segment or "", to_segment, occurred_at.isoformat()))
    return "evt_" + hashlib.sha256(key.encode()).hexdigest()[:26]
