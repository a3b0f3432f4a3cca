"""The re-check before a send, as pure functions: does the move an event announces still hold for the customer as
they are now? Table-driven over every kind of trigger; and how a move that corrects the past is dated."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules import Announced, Classifier, undone_because
from tests.factories import T0, days_ago, facts, make_rules
from worker.evaluate import dated

CAMPAIGNS = """\
  welcome:   {on: {entered: New}, webhook: n8n}
  vip:       {on: {entered: VIP}, webhook: n8n}
  vip-lost:  {on: {left: VIP}, webhook: n8n}
  lapsed:    {on: {from: Active, to: Dormant}, webhook: n8n}
  at-risk:   {on: {reached: {lastOrderDaysAgo: 75}}, segment: Active, webhook: n8n}
  birthday:  {on: {reached: {firstOrderDaysAgo: 365}}, webhook: n8n}
"""
RULES = make_rules(campaigns=CAMPAIGNS)
CLASSIFIER = Classifier(RULES)

VIP = Announced("segment.entered", "vip", "Active", "VIP")
WELCOME = Announced("segment.entered", "welcome", None, "New")
VIP_LOST = Announced("segment.left", "vip-lost", "VIP", "Active")
LAPSED = Announced("segment.changed", "lapsed", "Active", "Dormant")
AT_RISK = Announced("milestone.reached", "at-risk", "Active", "Active", ("lastOrderDaysAgo", 75))
BIRTHDAY = Announced("milestone.reached", "birthday", "Active", "Active", ("firstOrderDaysAgo", 365))

CASES = [
    # (case, announced, the customer's orders now as (days ago, cents), reason expected or None while it holds)
    ("vip_still_vip", VIP, [(40, 100_000), (2, 450_000)], None),
    ("vip_after_the_big_order_was_cancelled", VIP, [(40, 100_000)], "the customer is now Active, no longer VIP"),
    ("welcome_still_new", WELCOME, [(3, 5_000)], None),
    ("welcome_of_a_customer_already_vip", WELCOME, [(3, 600_000)], "the customer is now VIP, no longer New"),
    ("welcome_after_every_order_was_cancelled", WELCOME, [], "no order of the customer counts any more"),
    ("left_vip_and_still_out", VIP_LOST, [(40, 100_000)], None),
    ("left_vip_but_back_in", VIP_LOST, [(40, 600_000)], "the customer is back in VIP"),
    ("from_to_still_in_the_target", LAPSED, [(120, 10_000)], None),
    ("from_to_no_longer_in_the_target", LAPSED, [(120, 10_000), (1, 5_000)], "the customer is now Active"),
    ("milestone_still_reached", AT_RISK, [(200, 10_000), (80, 10_000)], None),
    ("milestone_undone_by_a_newer_order", AT_RISK, [(200, 10_000), (80, 10_000), (5, 10_000)],
     "a newer order since: lastOrderDaysAgo is now 5, below the milestone's 75"),
    ("milestone_but_no_longer_in_its_segment", AT_RISK, [(200, 10_000), (95, 10_000)],
     "the customer is now Dormant, no longer Active (the milestone counts only there)"),
    ("milestone_of_a_campaign_without_a_segment_holds_anywhere", BIRTHDAY, [(400, 10_000), (95, 10_000)], None),
]


@pytest.mark.parametrize(("announced", "orders", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_move_holds_until_something_undoes_it(announced, orders, reason):
    customer = facts(*[(days_ago(d), cents) for d, cents in orders])
    found = undone_because(RULES, announced, customer, CLASSIFIER.classify(customer, T0))
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason), found


def test_an_event_body_reads_back_as_what_it_announced():
    body = {"id": "evt_1", "type": "milestone.reached", "campaign": "at-risk",
            "transition": {"from": "Active", "to": "Active"}, "milestone": {"metric": "lastOrderDaysAgo", "days": 75}}
    assert Announced.from_body(body) == AT_RISK
    assert Announced.from_body({"type": "segment.entered", "campaign": "vip",
                                "transition": {"from": "Active", "to": "VIP"}}) == VIP


SINCE = T0 - timedelta(days=3)

DATING = [
    # (case, the move's true moment, when the customer entered the segment it leaves, expected occurredAt)
    ("a_new_order_after_the_last_move_keeps_its_time", T0 - timedelta(hours=5), SINCE, T0 - timedelta(hours=5)),
    ("a_midnight_crossing_keeps_its_midnight", T0.replace(hour=0), SINCE, T0.replace(hour=0)),
    ("a_cancellation_falls_back_before_the_last_move_so_it_is_dated_now", SINCE - timedelta(days=30), SINCE, T0),
    ("the_same_moment_as_the_last_move_is_a_correction_too", SINCE, SINCE, T0),
    ("a_customer_first_seen_keeps_the_true_moment", T0 - timedelta(days=50), None, T0 - timedelta(days=50)),
]


@pytest.mark.parametrize(("true_moment", "since", "expected"), [c[1:] for c in DATING], ids=[c[0] for c in DATING])
def test_a_move_that_corrects_the_past_is_dated_when_it_was_detected(true_moment, since, expected):
    assert dated(true_moment, since, T0) == expected


def test_a_correction_is_never_dated_before_the_move_it_follows_even_if_the_clock_is_behind():
    assert dated(SINCE - timedelta(days=1), SINCE, SINCE - timedelta(hours=1)) == SINCE


def test_a_move_no_later_than_the_last_look_at_the_same_orders_comes_from_the_rules_and_is_dated_now():
    midnight_before_the_last_run = T0.replace(hour=0) - timedelta(days=5)
    last_run = T0 - timedelta(days=1)
    assert dated(midnight_before_the_last_run, SINCE - timedelta(days=30), T0, settled=last_run) == T0
    assert dated(T0.replace(hour=0), SINCE, T0, settled=last_run) == T0.replace(hour=0), "crossed since: kept"
