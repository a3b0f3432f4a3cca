"""Properties of the rules engine for any valid rules and any customer (hypothesis): classification is total,
the first segment whose conditions hold is the one chosen, and the next re-check time is never in the past and
never skips a change (nothing changes on any day before it, and the moment just before it looks like now)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import Classifier, CustomerFacts, Rules
from rules.metrics import local_date, local_midnight
from rules.rfm import RfmCutoffs, rfm_score
from rules.schema import NO_ORDERS_FREQUENCY, ONE_ORDER_FREQUENCY

UTC = timezone.utc
MICROSECOND = timedelta(microseconds=1)
# Zones with the awkward cases: DST at midnight (Havana, Santiago), half-hour offsets and DST (Lord Howe,
# Chatham), no DST, and the far side of the date line.
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Havana", "America/Santiago", "Australia/Lord_Howe",
         "Pacific/Chatham", "Asia/Kathmandu", "Pacific/Kiritimati"]
DAY_METRICS = ("lastOrderDaysAgo", "firstOrderDaysAgo")
OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
       "eq": lambda a, b: a == b}
HORIZON_DAYS = 500  # past every day threshold the strategies make (400) plus the spread of first/last orders
EXAMPLES = 150


def thresholds(metric: str) -> st.SearchStrategy[str]:
    if metric in DAY_METRICS or metric == "avgDaysBetweenOrders":
        whole = st.integers(0, 400).map(str)
        return st.one_of(whole, st.builds(lambda d, f: f"{d}.{f}", st.integers(0, 400), st.integers(0, 9)))
    if metric == "totalSpend":
        return st.builds(lambda d, c: f"{d}.{c:02d}", st.integers(0, 20_000), st.integers(0, 99))
    if metric == "orderCount":
        return st.integers(0, 30).map(str)
    return st.integers(0, 5).map(str)  # RFM scores


METRICS = ("totalSpend", "orderCount", "lastOrderDaysAgo", "firstOrderDaysAgo", "avgDaysBetweenOrders",
           "rfmRecency", "rfmFrequency", "rfmMonetary")


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, dict[str, str]]:
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=3, unique=True))
    return {m: {op: Decimal(draw(thresholds(m))) for op in draw(st.lists(st.sampled_from(sorted(OPS)), min_size=1,
                                                                   max_size=2, unique=True))} for m in metrics}


@st.composite
def rules(draw: st.DrawFn) -> Rules:
    whens = draw(st.lists(conditions(), min_size=0, max_size=5))
    segments = [{"name": f"S{n}", "when": when} for n, when in enumerate(whens)] + [{"name": "Rest"}]
    names = [s["name"] for s in segments]
    milestones = draw(st.lists(st.tuples(st.sampled_from(DAY_METRICS), st.integers(0, 400),
                                         st.sampled_from([None, *names])), max_size=3))
    campaigns = {f"m{n}": {"on": {"reached": {metric: days}}, "webhook": "hook", **({"segment": seg} if seg else {})}
                 for n, (metric, days, seg) in enumerate(milestones)}
    document: dict[str, Any] = {
        "timezone": draw(st.sampled_from(ZONES)),
        "segments": segments,
        "no_orders_segment": draw(st.sampled_from(names)),
        "purchase_frequency": [{"name": "Weekly", "max_avg_days": 7}, {"name": "Monthly", "max_avg_days": 30},
                               {"name": "Occasional"}],
        "campaigns": campaigns,
        "webhooks": {"hook": {"url": "https://n8n.example.com/hook", "secret": "s"}},
    }
    return Rules.model_validate(document)


moments = st.datetimes(min_value=datetime(2018, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@st.composite
def customers(draw: st.DrawFn) -> CustomerFacts:
    count = draw(st.integers(0, 40))
    if count == 0:
        return CustomerFacts(0, 0, None, None)
    first = draw(moments)
    last = first if count == 1 else first + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=900)))
    return CustomerFacts(count, draw(st.integers(0, 2_000_000_000)), first, last)


def ascending(size: int, top: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(0, top), min_size=size, max_size=size).map(lambda v: tuple(sorted(v)))


cutoffs = st.one_of(st.none(), st.builds(RfmCutoffs, ascending(4, 600), ascending(4, 40), ascending(4, 2_000_000)))


def metric_values(facts: CustomerFacts, as_of: datetime, rules: Rules, rfm: RfmCutoffs | None) -> dict[str, Any]:
    """The metrics worked out afresh, from DESIGN.md's definitions, to judge the classifier by."""
    tz = rules.tz
    last_days = (as_of.astimezone(tz).date() - facts.last_order_at.astimezone(tz).date()).days
    first_days = (as_of.astimezone(tz).date() - facts.first_order_at.astimezone(tz).date()).days
    avg = None
    if facts.order_count > 1:
        span_ms = (facts.last_order_at - facts.first_order_at) // timedelta(milliseconds=1)
        avg = Fraction(span_ms, 86_400_000 * (facts.order_count - 1))
    values = {"totalSpend": Fraction(facts.total_cents, 100), "orderCount": facts.order_count,
              "lastOrderDaysAgo": last_days, "firstOrderDaysAgo": first_days, "avgDaysBetweenOrders": avg,
              "rfmRecency": None, "rfmFrequency": None, "rfmMonetary": None}
    if rfm is not None:
        score = rfm_score(last_days, facts.order_count, facts.total_cents, rfm)
        values.update(rfmRecency=score.recency, rfmFrequency=score.frequency, rfmMonetary=score.monetary)
    return values


def holds(when: dict, values: dict[str, Any]) -> bool:
    return all(values[metric] is not None and OPS[op](values[metric], Fraction(str(threshold)))
               for metric, tests in when.items() for op, threshold in tests.items())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), customers(), moments, cutoffs)
def test_classification_is_total(rules: Rules, facts: CustomerFacts, as_of: datetime, rfm: RfmCutoffs | None):
    classifier = Classifier(rules, rfm)

    result = classifier.classify(facts, as_of)
    classifier.next_check_at(facts, as_of)
    classifier.entered_at(facts, as_of)

    assert result.segment in [s.name for s in rules.segments]
    assert result.purchase_frequency in [b.name for b in rules.purchase_frequency] + [ONE_ORDER_FREQUENCY,
                                                                                       NO_ORDERS_FREQUENCY]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), customers(), moments, cutoffs)
def test_the_first_segment_whose_conditions_hold_is_chosen(rules: Rules, facts: CustomerFacts, as_of: datetime,
                                                           rfm: RfmCutoffs | None):
    segment = Classifier(rules, rfm).classify(facts, as_of).segment

    if facts.order_count == 0:
        assert segment == rules.no_orders_segment
        return
    values = metric_values(facts, as_of, rules, rfm)
    names = [s.name for s in rules.segments]
    chosen = names.index(segment)
    assert holds(rules.segments[chosen].when, values), "the chosen segment's conditions hold"
    for earlier in rules.segments[:chosen]:
        assert not holds(earlier.when, values), f"{earlier.name} comes first and its conditions hold too"


def midnights_between(start: datetime, end: datetime, rules: Rules) -> list[datetime]:
    """Every local midnight strictly after `start` and before `end`."""
    day: date = local_date(start, rules.tz) + timedelta(days=1)
    found = []
    while (midnight := local_midnight(day, rules.tz)) < end:
        if midnight > start:
            found.append(midnight)
        day += timedelta(days=1)
    return found


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), customers(), moments, cutoffs)
def test_the_next_check_is_in_the_future_and_skips_no_change(rules: Rules, facts: CustomerFacts, as_of: datetime,
                                                             rfm: RfmCutoffs | None):
    classifier = Classifier(rules, rfm)
    now = classifier.classify(facts, as_of).segment

    next_check = classifier.next_check_at(facts, as_of)

    if next_check is not None:
        assert next_check > as_of
        assert classifier.classify(facts, next_check - MICROSECOND).segment == now
    end = next_check if next_check is not None else as_of + timedelta(days=HORIZON_DAYS)
    if facts.last_order_at is not None:
        end = min(end, max(as_of, facts.last_order_at) + timedelta(days=HORIZON_DAYS))
    for midnight in midnights_between(as_of, end, rules):
        assert classifier.classify(facts, midnight).segment == now, f"the segment changed at {midnight}, " \
                                                                     f"before the next check {next_check}"
