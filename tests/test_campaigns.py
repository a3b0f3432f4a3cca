"""Campaign matching: which moves fire which campaign, day milestones once per crossing, deterministic event ids."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from rules import Fired, campaigns_for_move, event_id, milestones_reached
from tests.factories import T0, UTC, days_ago, facts, make_rules

CAMPAIGNS = """\
  welcome:     {on: {entered: New}, webhook: n8n}
  win-back:    {on: {entered: Dormant}, webhook: n8n}
  vip-lost:    {on: {left: VIP}, webhook: n8n}
  vip-lapsed:  {on: {from: VIP, to: Dormant}, webhook: n8n}
  any-dormant: {on: {to: Dormant}, webhook: n8n}
  grown-up:    {on: {from: New}, webhook: n8n}
  at-risk:     {on: {reached: {lastOrderDaysAgo: 75}}, segment: Active, webhook: n8n}
  anniversary: {on: {reached: {firstOrderDaysAgo: 365}}, webhook: n8n}
"""
RULES = make_rules(campaigns=CAMPAIGNS)
NY_RULES = make_rules(campaigns=CAMPAIGNS, timezone="America/New_York")
DAY = timedelta(days=1)

MOVES = [
    # (case, from, to, fired (campaign, kind))
    ("first_seen_new_fires_entered_only", None, "New", {("welcome", "segment.entered")}),
    ("first_seen_dormant_fires_entered_but_no_from_to", None, "Dormant", {("win-back", "segment.entered")}),
    ("first_seen_vip_fires_nothing_here", None, "VIP", set()),
    ("vip_to_dormant_fires_entered_left_and_from_to", "VIP", "Dormant", {
        ("win-back", "segment.entered"), ("vip-lost", "segment.left"), ("vip-lapsed", "segment.changed"),
        ("any-dormant", "segment.changed")}),
    ("active_to_dormant", "Active", "Dormant", {("win-back", "segment.entered"), ("any-dormant", "segment.changed")}),
    ("vip_to_active_fires_left", "VIP", "Active", {("vip-lost", "segment.left")}),
    ("new_to_active_fires_from", "New", "Active", {("grown-up", "segment.changed")}),
    ("new_to_dormant_fires_from_and_to", "New", "Dormant", {
        ("win-back", "segment.entered"), ("any-dormant", "segment.changed"), ("grown-up", "segment.changed")}),
    ("dormant_to_active_fires_nothing", "Dormant", "Active", set()),
    ("active_to_vip_fires_nothing_here", "Active", "VIP", set()),
]


@pytest.mark.parametrize(("from_segment", "to_segment", "fired"), [c[1:] for c in MOVES], ids=[c[0] for c in MOVES])
def test_campaigns_for_move(from_segment, to_segment, fired):
    result = campaigns_for_move(RULES, from_segment, to_segment)
    assert len(result) == len(set(result))
    assert set(result) == fired


def test_campaigns_fire_in_the_order_they_are_listed():
    assert [c for c, _ in campaigns_for_move(RULES, "VIP", "Dormant")] == [
        "win-back", "vip-lost", "vip-lapsed", "any-dormant"]


# --- day milestones -----------------------------------------------------------------------------------------

LAST = days_ago(80)  # at-risk (75 days since the last order) was crossed 5 days before T0
CUSTOMER = facts((days_ago(200), 10_000), (LAST, 10_000))
AT_RISK = datetime.combine(LAST.date() + 75 * DAY, time(), tzinfo=UTC)


def at_risk(segment: str, since: datetime | None, as_of: datetime) -> list[Fired]:
    return [f for f in milestones_reached(RULES, CUSTOMER, segment, since, as_of) if f.campaign == "at-risk"]


@pytest.mark.parametrize(("case", "since", "as_of", "fires"), [
    ("since_before_crossing_fires", AT_RISK - timedelta(hours=1), T0, True),
    ("since_long_before_crossing_fires", days_ago(30), T0, True),
    ("never_evaluated_fires", None, T0, True),
    ("as_of_exactly_at_crossing_fires", AT_RISK - DAY, AT_RISK, True),
    ("since_after_crossing_does_not_fire", AT_RISK + timedelta(hours=1), T0, False),
    ("since_exactly_at_crossing_does_not_fire_again", AT_RISK, T0, False),
    ("as_of_before_crossing_does_not_fire", AT_RISK - DAY, AT_RISK - timedelta(microseconds=1), False),
])
def test_milestone_fires_when_crossed_between_since_and_as_of(case, since, as_of, fires):
    expected = [Fired("at-risk", "milestone.reached", AT_RISK)] if fires else []
    assert at_risk("Active", since, as_of) == expected


def test_milestone_fires_once_however_often_the_customer_is_evaluated():
    checks = [AT_RISK - DAY + timedelta(hours=h) for h in range(0, 24 * 4, 5)]
    fired = []
    for since, as_of in zip(checks, checks[1:], strict=False):
        fired += at_risk("Active", since, as_of)
    assert fired == [Fired("at-risk", "milestone.reached", AT_RISK)]


def test_milestone_respects_its_segment():
    assert at_risk("VIP", None, T0) == []
    assert at_risk("Dormant", AT_RISK - DAY, T0) == []


def test_milestone_without_segment_fires_in_any_segment():
    first = CUSTOMER.first_order_at
    old_customer = facts((first - 200 * DAY, 10_000), (LAST, 10_000))
    anniversary = datetime.combine(old_customer.first_order_at.date() + 365 * DAY, time(), tzinfo=UTC)
    for segment in ("VIP", "Dormant", "Active"):
        assert milestones_reached(RULES, old_customer, segment, anniversary - DAY, anniversary + DAY) == [
            Fired("anniversary", "milestone.reached", anniversary)]


def test_milestone_needs_orders():
    assert milestones_reached(RULES, facts(), "New", None, T0) == []


def test_milestone_crossing_is_local_midnight_in_the_rules_timezone():
    new_york = ZoneInfo("America/New_York")
    last = datetime(2026, 1, 10, 23, 30, tzinfo=new_york)  # already January 11 in UTC
    customer = facts((last - 40 * DAY, 10_000), (last, 10_000))
    crossing = datetime(2026, 3, 26, 0, 0, tzinfo=new_york)  # January 10 + 75 local days
    fired = milestones_reached(NY_RULES, customer, "Active", None, crossing)
    assert fired == [Fired("at-risk", "milestone.reached", crossing)]
    assert fired[0].occurred_at.astimezone(UTC) == datetime(2026, 3, 26, 4, 0, tzinfo=UTC)


# --- event ids ----------------------------------------------------------------------------------------------

BASE_ID = ("C-1", "win-back", "segment.entered", "Active", "Dormant", AT_RISK)


def test_event_id_is_deterministic():
    assert event_id(*BASE_ID) == event_id(*BASE_ID)
    assert event_id(*BASE_ID).startswith("evt_")
    assert event_id("C-1", "win-back", "segment.entered", "Active", "Dormant", AT_RISK.astimezone(UTC)) \
        == event_id(*BASE_ID)


@pytest.mark.parametrize(("case", "position", "other"), [
    ("another_moment", 5, AT_RISK + DAY),
    ("a_millisecond_later", 5, AT_RISK + timedelta(milliseconds=1)),
    ("another_customer", 0, "C-2"),
    ("another_campaign", 1, "any-dormant"),
    ("another_kind", 2, "segment.changed"),
    ("another_origin", 3, "New"),
    ("first_seen", 3, None),
    ("another_destination", 4, "VIP"),
])
def test_event_id_differs_when_anything_differs(case, position, other):
    changed = list(BASE_ID)
    changed[position] = other
    assert event_id(*changed) != event_id(*BASE_ID)
