"""The rules in plain words: every metric and operator, money in the rules' currency and exact, frequency bands,
campaigns, orders, schedule and first run, the shipped rules.yaml, and which lines a candidate changes."""

from __future__ import annotations

from decimal import Decimal
from itertools import product
from pathlib import Path

import pytest

from rules import parse_rules
from rules.describe import (
    PHRASES,
    Change,
    Section,
    compare,
    describe_campaign,
    describe_condition,
    describe_frequency,
    describe_orders,
    describe_rules,
    describe_schedule,
    money,
)
from rules.schema import METRICS, OPERATORS, Campaign, Condition, FrequencyBand, OrderRules
from rules.webhooks import Schedule
from tests.factories import DEFAULT_SEGMENTS, ENV, rules_text

ROOT = Path(__file__).resolve().parent.parent

# metric, operator, threshold -> the words (USD)
CONDITIONS = [
    ("totalSpend", "gt", "5000", "lifetime spend over $5,000"),
    ("totalSpend", "gte", "5000", "lifetime spend of at least $5,000"),
    ("totalSpend", "lt", "250.5", "lifetime spend under $250.50"),
    ("totalSpend", "lte", "0", "lifetime spend of at most $0"),
    ("totalSpend", "eq", "1234567.89", "lifetime spend of exactly $1,234,567.89"),
    ("orderCount", "gt", "1", "more than 1 order"),
    ("orderCount", "gte", "3", "at least 3 orders"),
    ("orderCount", "lt", "2", "fewer than 2 orders"),
    ("orderCount", "lte", "10", "at most 10 orders"),
    ("orderCount", "eq", "1", "exactly 1 order"),
    ("lastOrderDaysAgo", "gt", "90", "no order for more than 90 days"),
    ("lastOrderDaysAgo", "gte", "1", "no order for at least 1 day"),
    ("lastOrderDaysAgo", "lt", "30", "last order less than 30 days ago"),
    ("lastOrderDaysAgo", "lte", "14", "an order in the last 14 days"),
    ("lastOrderDaysAgo", "eq", "60", "last order exactly 60 days ago"),
    ("firstOrderDaysAgo", "gt", "365", "first order more than 365 days ago"),
    ("firstOrderDaysAgo", "gte", "730", "first order at least 730 days ago"),
    ("firstOrderDaysAgo", "lt", "7", "first order less than 7 days ago"),
    ("firstOrderDaysAgo", "lte", "30", "first order in the last 30 days"),
    ("firstOrderDaysAgo", "eq", "0", "first order exactly 0 days ago"),
    ("avgDaysBetweenOrders", "gt", "30", "on average more than 30 days between orders"),
    ("avgDaysBetweenOrders", "gte", "14", "on average at least 14 days between orders"),
    ("avgDaysBetweenOrders", "lt", "7.5", "on average less than 7.5 days between orders"),
    ("avgDaysBetweenOrders", "lte", "7", "on average at most 7 days between orders"),
    ("avgDaysBetweenOrders", "eq", "1", "on average exactly 1 day between orders"),
    ("rfmRecency", "gt", "3", "RFM recency score above 3"),
    ("rfmRecency", "gte", "4", "RFM recency score 4 or higher"),
    ("rfmFrequency", "lt", "2", "RFM frequency score below 2"),
    ("rfmFrequency", "lte", "2", "RFM frequency score 2 or lower"),
    ("rfmMonetary", "eq", "5", "RFM monetary score exactly 5"),
    ("churnRisk", "gte", "0.7", "predicted churn risk 0.7 or higher"),
    ("pAlive", "lt", "0.2", "predicted chance of still being a customer below 0.2"),
    ("expectedOrders90d", "gt", "1", "predicted orders in the next 90 days above 1"),
    ("predictedClv12m", "gte", "2000", "predicted value of the next 12 months $2,000 or higher"),
    ("rfmMonetary", "gte", "4", "RFM monetary score 4 or higher"),
]


@pytest.mark.parametrize("metric, op, value, words", CONDITIONS)
def test_each_condition_reads_as_a_sentence(metric, op, value, words):
    assert describe_condition(Condition(metric, op, Decimal(value)), "USD") == words


def test_every_metric_and_operator_of_the_schema_has_words():
    assert set(PHRASES) == set(METRICS)
    for metric, op in product(METRICS, OPERATORS):
        words = describe_condition(Condition(metric, op, Decimal(2)), "USD")
        assert "2" in words and "{" not in words, (metric, op, words)


def test_the_table_above_covers_every_metric_and_every_operator_of_each_day_and_money_metric():
    covered = {(metric, op) for metric, op, _, _ in CONDITIONS}
    for metric in ("totalSpend", "orderCount", "lastOrderDaysAgo", "firstOrderDaysAgo", "avgDaysBetweenOrders"):
        assert {op for m, op in covered if m == metric} == set(OPERATORS), metric
    assert {m for m, _ in covered} == set(METRICS)


@pytest.mark.parametrize("value, currency, words", [
    ("5000", "USD", "$5,000"),
    ("5000.5", "USD", "$5,000.50"),
    ("5000", "EUR", "€5,000"),
    ("5000", "CHF", "5,000 CHF"),
    ("5000", "JPY", "¥5,000"),
    # finer than the currency shows: written as it is, never rounded to a different threshold
    ("5000.125", "USD", "5,000.125 USD"),
    ("5000.5", "JPY", "5,000.5 JPY"),
    ("0.000001", "EUR", "0.000001 EUR"),
])
def test_money_is_exact_in_the_rules_currency(value, currency, words):
    assert money(Decimal(value), currency) == words


@pytest.mark.parametrize("written, words", [("90", "90 days"), ("90.0", "90 days"), ("90.50", "90.5 days"),
                                            ("1e2", "100 days"), ("1", "1 day")])
def test_numbers_are_exact_without_trailing_zeros_or_exponents(written, words):
    assert describe_condition(Condition("lastOrderDaysAgo", "gt", Decimal(written)), "USD") == \
        f"no order for more than {words}"


def test_several_conditions_are_joined_with_and():
    several = "{orderCount: {gte: 3}, lastOrderDaysAgo: {lte: 30}, totalSpend: {gt: 1000, lte: 5000}}"
    rules = parse_rules(rules_text(segments=DEFAULT_SEGMENTS.replace("{totalSpend: {gt: @VIP@}}", several)), env=ENV)

    assert describe_rules(rules)[0].lines[0] == (
        "VIP: at least 3 orders and an order in the last 30 days and lifetime spend over $1,000 and lifetime spend "
        "of at most $5,000")


def test_the_shipped_rules_yaml_in_plain_words():
    rules = parse_rules((ROOT / "rules.yaml").read_text(encoding="utf-8"), env={"WEBHOOK_SECRET": "s"})

    assert {section.key: section.lines for section in describe_rules(rules)} == {
        "segments": (
            "VIP: lifetime spend over $5,000",
            "Dormant: no order for more than 90 days",
            "New: first order in the last 30 days",
            "Active: everyone else",
            "Customers with no order that counts (none yet, or all cancelled): New",
        ),
        "frequency": (
            "Weekly: on average at most 7 days between orders",
            "Monthly: on average more than 7 and at most 30 days between orders",
            "Quarterly: on average more than 30 and at most 90 days between orders",
            "Occasional: on average more than 90 days between orders",
            "One-time: a single order",
            "None: no order that counts",
        ),
        "campaigns": (
            "welcome: when a customer enters New → webhook welcome",
            "vip: when a customer enters VIP → webhook vip",
            "win-back: when a customer enters Dormant → webhook win-back",
            "at-risk: when an Active customer reaches 75 days without an order → webhook at-risk",
        ),
        "orders": (
            "Orders with status cancelled, canceled, refunded or void do not count (compared ignoring case and spaces)",
            "An order dated more than 1 day after the server's clock is refused as a typo",
            "Amounts are in USD",
        ),
        "timing": (
            "Day counts are calendar days in UTC",
            "Segments are evaluated every minute; events are delivered every 5 seconds",
            "The very first evaluation records everyone's segment silently (first_run: baseline)",
        ),
    }


def test_the_rules_currency_is_used_for_every_amount():
    rules = parse_rules(rules_text() + "currency: GBP\n", env=ENV)

    assert describe_rules(rules)[0].lines[0] == "VIP: lifetime spend over £5,000"


@pytest.mark.parametrize("trigger, extra, words", [
    ({"entered": "VIP"}, {}, "vip: when a customer enters VIP → webhook n8n"),
    ({"left": "VIP"}, {}, "vip: when a customer leaves VIP → webhook n8n"),
    ({"from": "Active", "to": "Dormant"}, {}, "vip: when a customer moves from Active to Dormant → webhook n8n"),
    ({"from": "Active"}, {}, "vip: when a customer moves from Active to any other segment → webhook n8n"),
    ({"to": "Dormant"}, {}, "vip: when a customer moves into Dormant from another segment → webhook n8n"),
    ({"reached": {"lastOrderDaysAgo": 75}}, {"segment": "Active"},
     "vip: when an Active customer reaches 75 days without an order → webhook n8n"),
    ({"reached": {"lastOrderDaysAgo": 1}}, {"segment": "VIP"},
     "vip: when a VIP customer reaches 1 day without an order → webhook n8n"),
    ({"reached": {"firstOrderDaysAgo": 365}}, {},
     "vip: when a customer reaches 365 days since the first order → webhook n8n"),
    ({"entered": "VIP"}, {"recheck": False},
     "vip: when a customer enters VIP → webhook n8n; sent even if the move is undone before it goes out "
     "(recheck: false)"),
    ({"entered": "VIP"}, {"ordered": False},
     "vip: when a customer enters VIP → webhook n8n; does not wait for the customer's earlier events "
     "(ordered: false)"),
    ({"entered": "VIP"}, {"segment": "Active"},
     "vip: when a customer enters VIP → webhook n8n; segment: Active applies only to reached triggers (day "
     "milestones and churn risk bands) and is ignored here"),
    ({"reached": {"churnRiskBand": "High"}}, {"segment": "VIP"},
     "vip: when the predicted churn risk of a VIP customer rises into High → webhook n8n"),
    ({"entered": "Dormant"}, {"when": {"predictedClv12m": {"gte": Decimal(200)}}},
     "vip: when a customer enters Dormant → webhook n8n; only if predicted value of the next 12 months $200 or "
     "higher"),
])
def test_each_campaign_trigger_reads_as_a_sentence(trigger, extra, words):
    campaign = Campaign.model_validate({"on": trigger, "webhook": "n8n", **extra})

    assert describe_campaign("vip", campaign) == words


def test_rules_without_campaigns_say_nothing_is_sent():
    rules = parse_rules(rules_text(campaigns="  {}\n").replace("campaigns:\n  {}", "campaigns: {}"), env=ENV)

    assert describe_rules(rules)[2].lines == ("No campaigns: moves are recorded and nothing is sent",)


@pytest.mark.parametrize("bands, words", [
    ([("Weekly", "7"), ("Monthly", "30"), ("Rest", None)],
     ["Weekly: on average at most 7 days between orders",
      "Monthly: on average more than 7 and at most 30 days between orders",
      "Rest: on average more than 30 days between orders"]),
    ([("All", None)], ["All: every customer with 2 or more orders"]),
    ([("Weekly", "7"), ("Twice", "7"), ("Rest", None)],
     ["Weekly: on average at most 7 days between orders",
      "Twice: nobody (Weekly comes first with the same limit)",
      "Rest: on average more than 7 days between orders"]),
    ([("Daily", "0.5"), ("Rest", None)],
     ["Daily: on average at most 0.5 days between orders",
      "Rest: on average more than 0.5 days between orders"]),
])
def test_frequency_bands_read_as_the_range_each_takes(bands, words):
    built = tuple(FrequencyBand(name=name, max_avg_days=None if limit is None else Decimal(limit))
                  for name, limit in bands)

    assert describe_frequency(built) == (*words, "One-time: a single order", "None: no order that counts")


@pytest.mark.parametrize("orders, words", [
    (OrderRules(), ("Orders with status cancelled, canceled, refunded or void do not count (compared ignoring case "
                    "and spaces)", "An order dated more than 1 day after the server's clock is refused as a typo")),
    (OrderRules(exclude_statuses=("void",), max_future_days=3),
     ("Orders with status void do not count (compared ignoring case and spaces)",
      "An order dated more than 3 days after the server's clock is refused as a typo")),
    (OrderRules(exclude_statuses=(), max_future_days=0),
     ("Every order counts, whatever its status", "An order dated after the server's clock is refused as a typo")),
])
def test_which_orders_count(orders, words):
    assert describe_orders(orders, "EUR") == (*words, "Amounts are in EUR")


@pytest.mark.parametrize("evaluate, deliver, words", [
    (60, 5, "Segments are evaluated every minute; events are delivered every 5 seconds"),
    (3600, 1, "Segments are evaluated every hour; events are delivered every second"),
    (7200, 0.5, "Segments are evaluated every 2 hours; events are delivered every 0.5 seconds"),
    (90, 120, "Segments are evaluated every 90 seconds; events are delivered every 2 minutes"),
])
def test_the_schedule(evaluate, deliver, words):
    assert describe_schedule(Schedule(evaluate_every_seconds=evaluate, deliver_every_seconds=deliver)) == words


def test_timezone_and_first_run():
    rules = parse_rules(rules_text(timezone="Europe/Berlin", first_run="emit"), env=ENV)
    timing = describe_rules(rules)[-1]

    assert timing.key == "timing"
    assert timing.lines[0] == "Day counts are calendar days in Europe/Berlin"
    assert timing.lines[2] == ("The very first evaluation announces every customer's segment, so campaigns fire for "
                               "everyone (first_run: emit)")


def test_custom_rfm_groups_are_listed_and_the_usual_map_is_not():
    plain = parse_rules(rules_text(), env=ENV)
    custom = parse_rules(rules_text() + "rfm_groups:\n  - {name: Best, recency: [4, 5], frequency_monetary: [5, 5]}\n",
                         env=ENV)

    assert "rfm_groups" not in {section.key for section in describe_rules(plain)}
    groups = next(section for section in describe_rules(custom) if section.key == "rfm_groups")
    assert groups.lines == ("Best: RFM recency score 4 to 5 and frequency-monetary score 5",)


# --- what a candidate changes ----------------------------------------------------------------------------------------

def sections(**lines: tuple[str, ...]) -> tuple[Section, ...]:
    return tuple(Section(key, key.title(), value) for key, value in lines.items())


def test_the_same_rules_change_nothing():
    described = describe_rules(parse_rules(rules_text(), env=ENV))

    compared = compare(described, described)

    assert [section.key for section in compared] == [section.key for section in described]
    assert not any(section.changed for section in compared)


def test_a_new_threshold_pairs_the_segments_old_and_new_words():
    live = describe_rules(parse_rules(rules_text(), env=ENV))
    candidate = describe_rules(parse_rules(rules_text(vip="3000"), env=ENV))

    segments = compare(live, candidate)[0]

    assert segments.changes[0] == Change("VIP: lifetime spend over $5,000", "VIP: lifetime spend over $3,000")
    assert segments.changes[0].kind == "changed"
    assert [change.kind for change in segments.changes[1:]] == ["same"] * 4


def test_lines_added_and_removed_stand_where_they_are():
    live = sections(segments=("VIP: a", "Dormant: b", "Active: everyone else"))
    candidate = sections(segments=("VIP: a", "Gold: c", "Active: everyone else"))

    changes = compare(live, candidate)[0].changes

    assert [(c.live, c.candidate, c.kind) for c in changes] == [
        ("VIP: a", "VIP: a", "same"),
        ("Dormant: b", None, "removed"),
        (None, "Gold: c", "added"),
        ("Active: everyone else", "Active: everyone else", "same"),
    ]


def test_unlabelled_lines_that_differ_are_paired_as_changed():
    changes = compare(sections(timing=("Day counts are calendar days in UTC",)),
                      sections(timing=("Day counts are calendar days in Europe/Berlin",)))[0].changes

    assert changes == (Change("Day counts are calendar days in UTC",
                              "Day counts are calendar days in Europe/Berlin"),)


def test_a_section_only_one_side_has_is_all_added_or_removed():
    compared = compare(sections(segments=("A: x",)), sections(segments=("A: x",), rfm_groups=("Best: y",)))

    assert [(s.key, [c.kind for c in s.changes]) for s in compared] == [("segments", ["same"]),
                                                                       ("rfm_groups", ["added"])]
    assert compare(sections(segments=("A: x",), rfm_groups=("Best: y",)), sections(segments=("A: x",)))[1] \
        .changes == (Change("Best: y", None),)


def test_a_priority_change_shows_the_segment_moving():
    live = sections(segments=("VIP: a", "Dormant: b", "New: c"))
    candidate = sections(segments=("Dormant: b", "VIP: a", "New: c"))

    moved = [c for c in compare(live, candidate)[0].changes if c.kind != "same"]

    assert sorted(c.kind for c in moved) == ["added", "removed"]
    assert {c.live or c.candidate for c in moved} in ({"VIP: a"}, {"Dormant: b"})
