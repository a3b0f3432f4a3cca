"""Which campaigns a segment move or a day milestone fires, and the deterministic id of each event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from rules.classify import Classification
from rules.ids import digest_id
from rules.metrics import CustomerFacts, local_date, local_midnight
from rules.schema import BAND_METRIC, CHURN_BANDS, Rules


@dataclass(frozen=True, slots=True)
class Fired:
    """One campaign to announce: `kind` is segment.entered / segment.left / segment.changed / milestone.reached."""

    campaign: str
    kind: str
    occurred_at: datetime
    # what the event id is made of instead of occurred_at: a band crossing's id holds the last order, so that a
    # refit moving the crossing day never announces the same rise twice
    id_at: datetime | None = None


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
        milestone = campaign.on.day_milestone
        if milestone is None:
            continue
        metric, days = milestone
        base = facts.last_order_at if metric == "lastOrderDaysAgo" else facts.first_order_at
        if base is None:
            continue
        crossed_at = local_midnight(local_date(base, tz) + timedelta(days=int(days)), tz)
        if crossed_at <= as_of and (since is None or crossed_at > since):
            fired.append(Fired(name, "milestone.reached", crossed_at))
    return fired


def bands_reached(rules: Rules, facts: CustomerFacts, current: Classification, since: datetime | None,
                  as_of: datetime) -> list[Fired]:
    """Band triggers (`on: {reached: {churnRiskBand: High}}`) whose band the churn risk rose into after `since`.

    A rise starts below the band on the day of the last order; the crossing is dated at the local midnight of the
    first day the risk reached it since, so it fires once per rise however often the customer is evaluated. A
    customer already in the band on the day it ordered did not rise into it: nothing fires.
    """
    reached = dict(current.band_reached)
    if not reached or facts.last_order_at is None:
        return []
    fired = []
    tz = rules.tz
    for name, campaign in rules.campaigns.items():
        band = campaign.on.band_milestone
        if band is None or band not in reached:
            continue
        if campaign.segment is not None and campaign.segment != current.segment:
            continue
        crossed_at = local_midnight(date.fromordinal(reached[band]), tz)
        if crossed_at <= as_of and (since is None or crossed_at > since):
            fired.append(Fired(name, "milestone.reached", crossed_at, id_at=facts.last_order_at))
    return fired


def event_id(contact_id: str, campaign: str, kind: str, from_segment: str | None, to_segment: str,
             occurred_at: datetime) -> str:
    """Same customer, campaign, move and moment give the same id, so re-running an evaluation never duplicates."""
    return digest_id("evt", contact_id, campaign, kind, from_segment or "", to_segment, occurred_at.isoformat())


@dataclass(frozen=True, slots=True)
class Announced:
    """What an event told (or is about to tell) n8n, as read back from its body."""

    kind: str
    campaign: str
    from_segment: str | None
    to_segment: str
    milestone: tuple[str, int | str] | None = None  # (metric, days) or (churnRiskBand, band) for milestone.reached

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Announced:
        transition = body.get("transition") or {}
        milestone = body.get("milestone")
        return cls(kind=body["type"], campaign=body["campaign"], from_segment=transition.get("from"),
                   to_segment=transition["to"],
                   milestone=None if milestone is None else _milestone(milestone))


def undone_because(rules: Rules, announced: Announced, facts: CustomerFacts, current: Classification) -> str | None:
    """Why the move an event announces no longer holds for the customer as classified now; None while it holds.

    entered / from-to: still in the target segment; left: still out of the segment left; a milestone: the day count
    is still at or past it (no newer order) and, where the campaign names a segment, the customer is still in it.
    """
    if facts.order_count == 0:
        return "no order of the customer counts any more (all cancelled or excluded)"
    if announced.kind in ("segment.entered", "segment.changed"):
        if current.segment != announced.to_segment:
            return f"the customer is now {current.segment}, no longer {announced.to_segment}"
        return None
    if announced.kind == "segment.left":
        if current.segment == announced.from_segment:
            return f"the customer is back in {current.segment}"
        return None
    if announced.milestone is None:
        return None
    metric, days = announced.milestone
    if metric == BAND_METRIC:
        return _band_undone(rules, announced, str(days), current)
    value = current.last_order_days_ago if metric == "lastOrderDaysAgo" else current.first_order_days_ago
    if value is None or value < days:
        return f"a newer order since: {metric} is now {value}, below the milestone's {days}"
    return _left_segment(rules, announced, current, "milestone")


def _left_segment(rules: Rules, announced: Announced, current: Classification, trigger: str) -> str | None:
    """A `reached` trigger counts only in its campaign's segment: why it no longer does, or None."""
    campaign = rules.campaigns.get(announced.campaign)
    segment = campaign.segment if campaign is not None else announced.to_segment
    if segment is not None and current.segment != segment:
        return f"the customer is now {current.segment}, no longer {segment} (the {trigger} counts only there)"
    return None


def _milestone(body: dict[str, Any]) -> tuple[str, int | str]:
    if body["metric"] == BAND_METRIC:
        return body["metric"], str(body["band"])
    return body["metric"], int(body["days"])


def _band_undone(rules: Rules, announced: Announced, band: str, current: Classification) -> str | None:
    predicted = current.predicted
    if predicted is None:
        return "no churn prediction can be made now (the model is not fitted, or the customer has no order days)"
    if band in CHURN_BANDS and CHURN_BANDS.index(predicted.band) < CHURN_BANDS.index(band):
        return f"the churn risk is now {predicted.churn_risk:.2f} ({predicted.band}), below {band}"
    return _left_segment(rules, announced, current, "trigger")
