"""Classification: the original system's segments and frequencies, day counting, next re-check and entered-at."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from rules import Classification, Classifier, CustomerFacts, days_between
from tests.factories import T0, UTC, days_ago, facts, make_rules

DEFAULT = Classifier(make_rules())
NEW_YORK = ZoneInfo("America/New_York")
NY = Classifier(make_rules(timezone="America/New_York"))
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def ny(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=NEW_YORK)


# --- the original system's segments -------------------------------------------------------------------------

SEGMENT_CASES = [
    # (case, orders as (days ago, cents), segment, purchaseFrequency, lastOrderDaysAgo)
    ("vip_high_spend", [(200, 900_000), (20, 400_000)], "VIP", "Occasional", 20),
    ("spend_5000_00_is_not_vip", [(60, 500_000)], "Active", "One-time", 60),
    ("spend_5000_01_is_vip", [(60, 500_001)], "VIP", "One-time", 60),
    ("new_first_order_today", [(0, 5_000)], "New", "One-time", 0),
    ("new_first_order_30_days_ago", [(30, 5_000)], "New", "One-time", 30),
    ("first_order_31_days_ago_is_active", [(31, 5_000)], "Active", "One-time", 31),
    ("active_regular_orders", [(d, 10_000) for d in range(98, 0, -14)], "Active", "Monthly", 14),
    ("active_recent_order", [(60, 10_000), (1, 10_000)], "Active", "Quarterly", 1),
    ("not_dormant_at_90_days", [(90, 10_000)], "Active", "One-time", 90),
    ("dormant_at_91_days", [(91, 10_000)], "Dormant", "One-time", 91),
    ("dormant_at_92_days", [(92, 10_000)], "Dormant", "One-time", 92),
    ("vip_wins_over_dormant", [(300, 300_000), (200, 300_000)], "VIP", "Occasional", 200),
    ("vip_wins_over_new", [(2, 600_000)], "VIP", "One-time", 2),
    ("new_with_two_recent_orders", [(10, 100), (5, 100)], "New", "Weekly", 5),
]


@pytest.mark.parametrize(("orders", "segment", "frequency", "last_days"),
                         [c[1:] for c in SEGMENT_CASES], ids=[c[0] for c in SEGMENT_CASES])
def test_original_segments(orders, segment, frequency, last_days):
    result = DEFAULT.classify(facts(*[(days_ago(d), cents) for d, cents in orders]), T0)
    assert (result.segment, result.purchase_frequency, result.last_order_days_ago) == (segment, frequency, last_days)


def test_dormant_starts_on_day_91():
    customer = facts((days_ago(91), 10_000))
    assert DEFAULT.classify(customer, utc_midnight(T0.date()) - MS).segment == "Active"
    assert DEFAULT.classify(customer, utc_midnight(T0.date())).segment == "Dormant"


def test_customer_without_orders_is_new_with_no_frequency_and_no_day_count():
    assert DEFAULT.classify(facts(), T0) == Classification("New", "None", None, None)


# --- purchase frequency ----------------------------------------------------------------------------------------

FREQUENCY_CASES = [
    # (case, order count, span between first and last order, frequency)
    ("no_orders", 0, None, "None"),
    ("one_order", 1, timedelta(0), "One-time"),
    ("avg_exactly_7_days_is_weekly", 2, 7 * DAY, "Weekly"),
    ("avg_just_above_7_days_is_monthly", 2, 7 * DAY + MS, "Monthly"),
    ("avg_exactly_7_days_over_three_orders_is_weekly", 3, 14 * DAY, "Weekly"),
    ("avg_a_hair_above_7_days_over_three_orders_is_monthly", 3, 14 * DAY + MS, "Monthly"),
    ("avg_10_days_is_monthly", 4, 30 * DAY, "Monthly"),
    ("avg_exactly_30_days_is_monthly", 2, 30 * DAY, "Monthly"),
    ("avg_just_above_30_days_is_quarterly", 2, 30 * DAY + MS, "Quarterly"),
    ("avg_exactly_90_days_is_quarterly", 2, 90 * DAY, "Quarterly"),
    ("avg_just_above_90_days_is_occasional", 2, 90 * DAY + MS, "Occasional"),
    ("avg_below_a_day_is_weekly", 5, timedelta(hours=3), "Weekly"),
]


@pytest.mark.parametrize(("count", "span", "frequency"), [c[1:] for c in FREQUENCY_CASES],
                         ids=[c[0] for c in FREQUENCY_CASES])
def test_purchase_frequency(count, span, frequency):
    last = days_ago(1)
    customer = (CustomerFacts(0, 0, None, None) if span is None
                else CustomerFacts(count, 1_000 * count, last - span, last))
    assert DEFAULT.classify(customer, T0).purchase_frequency == frequency


# --- days are calendar days in the rules' timezone ----------------------------------------------------------------

def test_order_at_2330_and_check_at_0030_next_local_day_is_one_day_in_new_york():
    ordered, checked = ny(2026, 3, 1, 23, 30), ny(2026, 3, 2, 0, 30)
    customer = facts((ordered, 1_000))
    assert NY.classify(customer, checked).last_order_days_ago == 1
    assert days_between(ordered, checked, NEW_YORK) == 1


def test_same_instants_are_zero_days_apart_under_utc():
    ordered, checked = ny(2026, 3, 1, 23, 30), ny(2026, 3, 2, 0, 30)  # 04:30Z and 05:30Z on March 2
    assert DEFAULT.classify(facts((ordered, 1_000)), checked).last_order_days_ago == 0


def test_dormant_follows_the_local_calendar_not_utc():
    ordered = ny(2026, 1, 5, 23, 30)  # already January 6 in UTC
    checked = ny(2026, 4, 6, 0, 30)  # 91 local days later, 90 UTC days later
    customer = facts((ordered, 1_000))
    assert NY.classify(customer, checked).segment == "Dormant"
    assert DEFAULT.classify(customer, checked).segment == "Active"


@pytest.mark.parametrize("clock", [time(0, 0), time(0, 0, 0, 1), time(6, 15), time(12), time(23, 59, 59, 999999)])
def test_same_answer_at_any_hour_of_the_same_local_day(clock):
    customer = facts((ny(2025, 11, 20, 23, 45), 250_000), (ny(2026, 1, 3, 0, 5), 1_000))
    noon = NY.classify(customer, ny(2026, 4, 3, 12))
    assert NY.classify(customer, datetime.combine(date(2026, 4, 3), clock, tzinfo=NEW_YORK)) == noon
    assert noon.last_order_days_ago == 90


# --- next re-check ------------------------------------------------------------------------------------------

def test_next_check_is_local_midnight_when_last_order_days_ago_becomes_91():
    last = days_ago(10)
    customer = facts((days_ago(60), 10_000), (last, 10_000))
    assert DEFAULT.classify(customer, T0).segment == "Active"
    due = DEFAULT.next_check_at(customer, T0)
    assert due == utc_midnight(last.date() + 91 * DAY)
    assert DEFAULT.classify(customer, due).segment == "Dormant"
    assert DEFAULT.classify(customer, due - MS).segment == "Active"


def test_next_check_is_local_midnight_when_first_order_days_ago_becomes_31():
    first = days_ago(5)
    customer = facts((first, 10_000))
    due = DEFAULT.next_check_at(customer, T0)
    assert due == utc_midnight(first.date() + 31 * DAY)
    assert DEFAULT.classify(customer, due).segment == "Active"


def test_next_check_after_new_turns_active_is_day_91():
    customer = facts((days_ago(31), 10_000))
    assert DEFAULT.next_check_at(customer, T0) == utc_midnight(days_ago(31).date() + 91 * DAY)


@pytest.mark.parametrize(("case", "customer"), [
    ("vip_recent", facts((days_ago(3), 600_000))),
    ("vip_inactive", facts((days_ago(400), 600_000))),
    ("already_dormant", facts((days_ago(91), 10_000))),
    ("long_dormant", facts((days_ago(500), 10_000), (days_ago(200), 10_000))),
    ("no_orders", facts()),
])
def test_no_next_check_when_time_alone_changes_nothing(case, customer):
    assert DEFAULT.next_check_at(customer, T0) is None


@pytest.mark.parametrize("as_of", [
    utc_midnight(days_ago(40).date() + 90 * DAY),  # exactly the midnight on which day 90 starts
    utc_midnight(days_ago(40).date() + 91 * DAY) - MS,  # the last instant before Dormant
    utc_midnight(days_ago(40).date() + 31 * DAY),  # exactly when New turned Active
    T0,
])
def test_next_check_is_never_in_the_past(as_of):
    customer = facts((days_ago(40), 10_000))
    due = DEFAULT.next_check_at(customer, as_of)
    assert due is not None and due > as_of
    assert due == utc_midnight(days_ago(40).date() + 91 * DAY)


def test_next_check_in_new_york_is_new_york_midnight():
    customer = facts((ny(2026, 2, 1, 23, 30), 10_000))  # February 2 in UTC
    due = NY.next_check_at(customer, ny(2026, 2, 10, 9))
    assert due == ny(2026, 3, 4, 0, 0)  # February 1 + 31 local days
    assert due.astimezone(UTC) == datetime(2026, 3, 4, 5, 0, tzinfo=UTC)


def test_next_check_in_new_york_crosses_daylight_saving_at_local_midnight():
    customer = facts((ny(2026, 1, 10, 23, 30), 10_000))
    due = NY.next_check_at(customer, ny(2026, 3, 1, 9))
    assert due == ny(2026, 4, 11, 0, 0)  # January 10 + 91 local days, now on summer time
    assert due.astimezone(UTC) == datetime(2026, 4, 11, 4, 0, tzinfo=UTC)


# --- entered_at: the true moment of the current segment -----------------------------------------------------

def test_one_time_buyer_seen_120_days_later_entered_dormant_at_midnight_of_day_91():
    ordered = days_ago(120)
    customer = facts((ordered, 10_000))
    assert DEFAULT.classify(customer, T0).segment == "Dormant"
    assert DEFAULT.entered_at(customer, T0) == utc_midnight(ordered.date() + 91 * DAY)


def test_one_time_buyer_in_new_york_entered_dormant_at_new_york_midnight():
    customer = facts((ny(2025, 10, 1, 23, 30), 10_000))
    assert NY.entered_at(customer, ny(2026, 2, 21, 12)) == ny(2025, 12, 31, 0, 0)


def test_customer_that_became_vip_by_an_order_entered_at_that_order():
    big_order = days_ago(4) + timedelta(hours=3, minutes=17)
    customer = facts((days_ago(200), 100_000), (big_order, 450_000))
    assert DEFAULT.classify(customer, T0).segment == "VIP"
    assert DEFAULT.entered_at(customer, T0) == big_order


def test_new_customer_entered_new_at_the_order():
    ordered = days_ago(3)
    assert DEFAULT.entered_at(facts((ordered, 1_000)), T0) == ordered


def test_new_customer_seen_45_days_later_entered_active_at_midnight_of_day_31():
    ordered = days_ago(45)
    assert DEFAULT.entered_at(facts((ordered, 1_000)), T0) == utc_midnight(ordered.date() + 31 * DAY)


# --- custom rules classify as written -----------------------------------------------------------------------

CUSTOM = Classifier(make_rules(
    segments="""\
  - {name: Champion, when: {orderCount: {gte: 10}, avgDaysBetweenOrders: {lt: 14}}}
  - {name: Lapsing, when: {lastOrderDaysAgo: {gte: 45}}}
  - {name: Triple, when: {orderCount: {eq: 3}}}
  - {name: Pennies, when: {totalSpend: {lte: 0.3}}}
  - {name: New, when: {firstOrderDaysAgo: {lte: 7}}}
  - {name: Regular}
""",
    campaigns="  hello: {on: {entered: Regular}, webhook: n8n}\n",
))


def every(days: int, count: int, last: int, cents: int = 10_000) -> list[tuple[datetime, int]]:
    """`count` orders `days` apart, the last one `last` days ago."""
    return [(days_ago(last + days * n), cents) for n in range(count)]


CUSTOM_CASES = [
    ("ten_orders_every_10_days_is_champion", every(10, 10, 1), "Champion"),
    ("avg_exactly_14_is_not_below_14", every(14, 10, 1), "Regular"),
    ("nine_orders_is_not_ten", every(10, 9, 1), "Regular"),
    ("champion_wins_over_lapsing", every(10, 10, 60), "Champion"),
    ("last_order_45_days_ago_is_lapsing", every(30, 2, 45), "Lapsing"),
    ("last_order_44_days_ago_is_not", every(30, 2, 44), "Regular"),
    ("exactly_three_orders", every(10, 3, 5), "Triple"),
    ("four_orders_is_not_three", every(10, 4, 5), "Regular"),
    ("ten_plus_twenty_cents_is_at_most_thirty", [(days_ago(20), 10), (days_ago(10), 20)], "Pennies"),
    ("thirty_one_cents_is_not", [(days_ago(20), 11), (days_ago(10), 20)], "Regular"),
    ("first_order_7_days_ago_is_new", every(1, 1, 7), "New"),
    ("first_order_8_days_ago_is_not", every(1, 1, 8), "Regular"),
]


@pytest.mark.parametrize(("orders", "segment"), [c[1:] for c in CUSTOM_CASES], ids=[c[0] for c in CUSTOM_CASES])
def test_custom_rules_classify_as_written(orders, segment):
    assert CUSTOM.classify(facts(*orders), T0).segment == segment


def test_custom_gte_threshold_is_rechecked_on_the_day_it_flips():
    last = days_ago(20)
    customer = facts((days_ago(50), 10_000), (last, 10_000))
    assert CUSTOM.next_check_at(customer, T0) == utc_midnight(last.date() + 45 * DAY)


# --- money is exact -----------------------------------------------------------------------------------------

def test_ten_plus_twenty_cents_is_exactly_thirty_cents():
    customer = facts((days_ago(5), 10), (days_ago(4), 20))
    assert customer.total_spend == Decimal("0.30")


@pytest.mark.parametrize(("cents", "segment"), [
    ([499_990, 10], "Active"),  # 4999.90 + 0.10 = 5000.00
    ([499_990, 11], "VIP"),  # 4999.90 + 0.11 = 5000.01
    ([10, 20] + [50_000] * 9 + [49_970], "Active"),  # 0.10 + 0.20 + 9 x 500.00 + 499.70 = 5000.00
])
def test_vip_threshold_compares_exact_cents(cents, segment):
    orders = [(days_ago(60 - i), c) for i, c in enumerate(cents)]
    assert DEFAULT.classify(facts(*orders), T0).segment == segment
