"""Evaluation runs: first run baseline/emit, transitions at their true moment, outbox events, due-only re-runs;
on every store backend."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import boto3
import pytest

from rules import Classifier, Rules
from tests.conftest import Backend
from tests.factories import T0, UTC, days_ago, make_rules, order
from worker.evaluate import (
    EvaluationRefused,
    RunResult,
    check_as_of,
    decide,
    dry_run,
    evaluate_customers,
    evaluate_due,
)
from worker.store.base import Store

DAY = timedelta(days=1)
BASELINE = make_rules()
EMIT = make_rules(first_run="emit")

# Four customers at T0: one of each segment.
SEED = [
    order("C-NEW", "N-1", days_ago(3), 5_000, email="nina@example.com", name="Nina"),
    order("C-ACT", "A-1", days_ago(200), 100_000, email="old@example.com", name="Arno"),
    order("C-ACT", "A-2", days_ago(10), 100_000, email="arno@example.com"),
    order("C-VIP", "V-1", days_ago(50), 600_000, name="Vera"),
    order("C-DOR", "D-1", days_ago(150), 150_000, email="dora@example.com", name="Dora"),
]
SEGMENTS = {"C-NEW": "New", "C-ACT": "Active", "C-VIP": "VIP", "C-DOR": "Dormant"}


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    opened = backend.open()
    opened.upsert_orders(SEED, T0)
    yield opened
    opened.close()


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def counts(result: RunResult) -> tuple[int, int, int, int, int]:
    return result.customers, result.transitions, result.events, result.skipped, result.errors


def moves(store: Store, contact_id: str) -> list[tuple[str | None, str, datetime]]:
    return [(t.from_segment, t.to_segment, t.occurred_at) for t in store.transitions_for(contact_id)]


def campaigns(store: Store) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in store.list_events(None, 1000):
        found.setdefault(event.contact_id, []).append(event.campaign)
    return found


def segments(store: Store) -> dict[str, str | None]:
    return {c.contact_id: c.segment for batch in store.iter_customers() for c in batch}


# --- the first run ------------------------------------------------------------------------------------------

def test_first_run_baseline_records_segments_silently(store):
    result = evaluate_due(store, BASELINE, T0)
    assert counts(result) == (4, 0, 0, 0, 0) and result.baseline
    assert segments(store) == SEGMENTS
    assert all(store.transitions_for(c) == [] for c in SEGMENTS)
    assert store.list_events(None, 100) == []


def test_first_run_emit_announces_every_customer(store):
    result = evaluate_due(store, EMIT, T0)
    assert counts(result) == (4, 4, 3, 0, 0) and not result.baseline
    assert segments(store) == SEGMENTS
    assert {c: [(f, t) for f, t, _ in moves(store, c)] for c in SEGMENTS} == {
        c: [(None, s)] for c, s in SEGMENTS.items()}
    assert campaigns(store) == {"C-NEW": ["welcome"], "C-VIP": ["vip"], "C-DOR": ["win-back"]}


def test_first_seen_customer_after_the_first_run_gets_a_welcome(store):
    evaluate_due(store, BASELINE, T0)
    ordered = T0 + timedelta(hours=1)
    store.upsert_orders([order("C-LATE", "L-1", ordered, 2_500, email="lee@example.com")], ordered)
    result = evaluate_due(store, BASELINE, T0 + timedelta(hours=2))
    assert counts(result) == (1, 1, 1, 0, 0) and not result.baseline
    assert moves(store, "C-LATE") == [(None, "New", ordered)]
    assert campaigns(store) == {"C-LATE": ["welcome"]}


def test_first_run_on_an_empty_store_is_the_baseline_and_later_customers_are_welcomed(backend):
    empty = backend.fresh()
    assert counts(evaluate_due(empty, BASELINE, T0)) == (0, 0, 0, 0, 0)
    empty.upsert_orders(SEED, T0)
    assert counts(evaluate_due(empty, BASELINE, T0 + DAY)) == (4, 4, 3, 0, 0)
    empty.close()


def test_rerun_at_the_same_moment_creates_nothing(store):
    evaluate_due(store, EMIT, T0)
    before = [(e.id, e.status) for e in store.list_events(None, 100)]
    transitions = {c: store.transitions_for(c) for c in SEGMENTS}
    assert counts(evaluate_due(store, EMIT, T0)) == (0, 0, 0, 0, 0)
    assert [(e.id, e.status) for e in store.list_events(None, 100)] == before
    assert {c: store.transitions_for(c) for c in SEGMENTS} == transitions


# --- moves at their true moment -----------------------------------------------------------------------------

def test_active_customer_seen_120_days_later_moves_to_dormant_at_midnight_of_day_91(store):
    evaluate_due(store, BASELINE, T0)
    later = T0 + 120 * DAY
    result = evaluate_due(store, BASELINE, later)
    became_dormant = midnight(days_ago(10).date() + 91 * DAY)
    assert moves(store, "C-ACT") == [("Active", "Dormant", became_dormant)]
    assert store.transitions_for("C-ACT")[0].detected_at == later
    assert store.transitions_for("C-ACT")[0].rules_version == BASELINE.rules_version
    assert counts(result) == (2, 2, 2, 0, 0)  # C-ACT and C-NEW were due; C-VIP and C-DOR cannot change


def test_win_back_event_body_has_the_design_shape(store):
    evaluate_due(store, BASELINE, T0)
    later = T0 + 120 * DAY
    evaluate_due(store, BASELINE, later)
    [event] = [e for e in store.list_events(None, 100) if e.contact_id == "C-ACT"]
    body = json.loads(event.body)
    assert body == {
        "id": event.id,
        "type": "segment.entered",
        "campaign": "win-back",
        "occurredAt": f"{days_ago(10).date() + 91 * DAY}T00:00:00.000Z",
        "detectedAt": "2026-06-21T12:00:00.000Z",
        "transition": {"from": "Active", "to": "Dormant"},
        "customer": {
            "contactID": "C-ACT",
            "email": "arno@example.com",
            "name": "Arno",
            "metrics": {
                "orderCount": 2,
                "totalSpend": "2000.00",
                "firstOrderDate": "2025-08-05T12:00:00.000Z",
                "lastOrderDate": "2026-02-11T12:00:00.000Z",
                "lastOrderReference": "A-2",
                "segment": "Dormant",
                "lastOrderDaysAgo": 130,
                "purchaseFrequency": "Occasional",
                "rfm": None,
                "predicted": None,
            },
            "experiments": {},
        },
        "rulesVersion": BASELINE.rules_version,
    }
    assert body["id"].startswith("evt_")
    assert (event.campaign, event.webhook, event.type, event.status) == ("win-back", "n8n", "segment.entered",
                                                                         "pending")
    assert event.occurred_at == midnight(days_ago(10).date() + 91 * DAY)


def test_new_customer_who_skipped_active_while_the_worker_was_off_moves_once(store):
    evaluate_due(store, BASELINE, T0)
    evaluate_due(store, BASELINE, T0 + 120 * DAY)
    assert moves(store, "C-NEW") == [("New", "Dormant", midnight(days_ago(3).date() + 91 * DAY))]
    assert campaigns(store)["C-NEW"] == ["win-back"]


def test_new_customer_becomes_active_at_midnight_of_day_31_without_an_event(store):
    evaluate_due(store, BASELINE, T0)
    result = evaluate_due(store, BASELINE, T0 + 28 * DAY)
    assert counts(result) == (1, 1, 0, 0, 0)
    assert moves(store, "C-NEW") == [("New", "Active", midnight(days_ago(3).date() + 31 * DAY))]


def test_rules_change_evaluates_everyone_and_records_the_moves(store):
    evaluate_due(store, BASELINE, T0)
    cheaper_vip = make_rules(vip="1000")
    result = evaluate_due(store, cheaper_vip, T0 + timedelta(hours=1))
    assert counts(result) == (4, 2, 2, 0, 0)
    assert [(f, t) for f, t, _ in moves(store, "C-ACT")] == [("Active", "VIP")]
    assert [(f, t) for f, t, _ in moves(store, "C-DOR")] == [("Dormant", "VIP")]
    assert store.transitions_for("C-DOR")[0].rules_version == cheaper_vip.rules_version != BASELINE.rules_version
    assert campaigns(store) == {"C-ACT": ["vip"], "C-DOR": ["vip"]}
    assert counts(evaluate_due(store, cheaper_vip, T0 + timedelta(hours=1))) == (0, 0, 0, 0, 0)


def test_later_run_evaluates_only_changed_and_due_customers(store):
    evaluate_due(store, BASELINE, T0)
    store.upsert_orders([order("C-VIP", "V-2", T0 + DAY, 1_000)], T0 + DAY)
    store.upsert_orders([order("C-DOR", "D-2", T0 + DAY, 1_000)], T0 + DAY)
    result = evaluate_due(store, BASELINE, T0 + DAY + timedelta(minutes=1))
    assert counts(result) == (2, 1, 0, 0, 0)
    assert [(f, t) for f, t, _ in moves(store, "C-DOR")] == [("Dormant", "Active")]
    assert moves(store, "C-DOR")[0][2] == T0 + DAY
    assert counts(evaluate_due(store, BASELINE, T0 + 2 * DAY)) == (0, 0, 0, 0, 0)


# --- a bad customer does not stop the run -------------------------------------------------------------------

def corrupt_spend(backend: Backend, contact_id: str) -> None:
    """Damage one customer's stored spend behind the store's back, as a bad migration or manual edit would."""
    if backend.name == "sqlite":
        with sqlite3.connect(Path(backend.url.removeprefix("sqlite:///"))) as db:
            db.execute("UPDATE customers SET total_cents = 'lots' WHERE contact_id = ?", (contact_id,))
        return
    from worker.store.dynamodb import DynamoConfig

    config = DynamoConfig.from_url(backend.url)
    boto3.client("dynamodb", region_name=config.region, endpoint_url=config.endpoint_url).update_item(
        TableName=config.table("customers"), Key={"contact_id": {"S": contact_id}},
        UpdateExpression="SET total_cents = :lots", ExpressionAttributeValues={":lots": {"S": "lots"}})


def test_customer_whose_classification_raises_is_counted_and_the_run_continues(store, backend):
    corrupt_spend(backend, "C-VIP")
    result = evaluate_due(store, EMIT, T0)
    assert counts(result) == (3, 3, 2, 0, 1)
    assert segments(store) == {**SEGMENTS, "C-VIP": None}
    assert [[c.contact_id for c in batch] for batch in store.customers_to_evaluate(T0, False, 10)] == [["C-VIP"]]


def test_customer_whose_classification_raises_in_an_api_evaluation_is_counted(store, backend):
    evaluate_due(store, BASELINE, T0)
    corrupt_spend(backend, "C-ACT")
    result = evaluate_customers(store, Classifier(BASELINE), ["C-ACT", "C-NEW"], T0 + DAY).run
    assert (result.customers, result.errors) == (1, 1)


class BrokenClassifier(Classifier):
    def classify(self, facts, as_of):
        raise ValueError("broken rules engine")


def test_decide_raises_what_the_classifier_raises(store):
    record = store.get_customer("C-NEW")
    with pytest.raises(ValueError, match="broken rules engine"):
        decide(record, BrokenClassifier(BASELINE), T0, announce=True)


# --- evaluating named customers (the API path) --------------------------------------------------------------

def test_customers_evaluated_before_the_first_run_are_not_announced_under_baseline(store):
    result = evaluate_customers(store, Classifier(BASELINE), ["C-NEW"], T0).run
    assert counts(result) == (1, 0, 0, 0, 0) and result.baseline
    assert counts(evaluate_due(store, BASELINE, T0)) == (4, 0, 0, 0, 0)


def test_customers_evaluated_after_the_first_run_are_announced(store):
    evaluate_due(store, BASELINE, T0)
    store.upsert_orders([order("C-API", "P-1", T0 + DAY)], T0 + DAY)
    evaluated = evaluate_customers(store, Classifier(BASELINE), ["C-API", "C-API"], T0 + DAY)
    assert counts(evaluated.run) == (1, 1, 1, 0, 0)
    assert campaigns(store) == {"C-API": ["welcome"]}
    [(record, current)] = evaluated.customers
    assert (record.contact_id, current.segment, current.last_order_days_ago) == ("C-API", "New", 0), \
        "each customer as read, with what the rules said of them: nothing to read or classify again"


def test_decide_reports_the_state_to_store(store):
    rules: Rules = BASELINE
    evaluation = decide(store.get_customer("C-ACT"), Classifier(rules), T0, announce=True)
    assert (evaluation.segment, evaluation.purchase_frequency, evaluation.seen_segment) == ("Active", "Occasional",
                                                                                             None)
    assert evaluation.next_check_at == midnight(days_ago(10).date() + 91 * DAY)
    assert evaluation.transition.from_segment is None and evaluation.transition.to_segment == "Active"
    assert evaluation.events == ()


def test_moves_happen_at_midnight_in_the_rules_timezone(backend):
    new_york = ZoneInfo("America/New_York")
    rules = make_rules(timezone="America/New_York")
    ny_store = backend.fresh()
    ordered = datetime(2026, 1, 10, 23, 30, tzinfo=new_york)  # already January 11 in UTC
    ny_store.upsert_orders([order("C-NY", "NY-1", ordered)], ordered)
    evaluate_due(ny_store, rules, ordered + timedelta(hours=1))
    assert ny_store.get_customer("C-NY").next_check_at == datetime(2026, 2, 10, 5, 0, tzinfo=UTC)  # Feb 10, 00:00 EST
    evaluate_due(ny_store, rules, datetime(2026, 6, 1, tzinfo=UTC))
    assert moves(ny_store, "C-NY") == [("New", "Dormant", datetime(2026, 4, 11, 4, 0, tzinfo=UTC))]  # 00:00 EDT
    ny_store.close()


def test_customer_whose_orders_are_all_cancelled_moves_without_a_campaign(store):
    evaluate_due(store, BASELINE, T0)
    store.upsert_orders([order("C-ACT", "A-1", days_ago(200), 100_000, status="cancelled"),
                         order("C-ACT", "A-2", days_ago(10), 100_000, status="cancelled")], T0)
    result = evaluate_due(store, BASELINE, T0 + timedelta(hours=1))
    assert moves(store, "C-ACT")[-1][:2] == ("Active", "New")
    assert result.events == 0 and campaigns(store) == {}


# --- corrections are dated when they are seen ----------------------------------------------------------------

def history_ends_in_stored_segment(store: Store, contact_id: str) -> bool:
    history = sorted(store.transitions_for(contact_id), key=lambda t: (t.occurred_at, t.detected_at))
    return history[-1].to_segment == store.get_customer(contact_id).segment


def test_a_cancelled_vip_order_moves_the_customer_back_dated_when_it_was_seen(store):
    evaluate_due(store, EMIT, T0)
    big = order("C-ACT", "A-BIG", T0 + timedelta(hours=1), 450_000)
    store.upsert_orders([big], T0 + timedelta(hours=1))
    evaluate_due(store, EMIT, T0 + timedelta(hours=2))
    store.upsert_orders([order("C-ACT", "A-BIG", big.order_at, 450_000, status="cancelled")], T0 + timedelta(hours=3))
    evaluate_due(store, EMIT, T0 + timedelta(hours=4))

    *_, up, back = moves(store, "C-ACT")
    assert up == ("Active", "VIP", big.order_at)
    assert back == ("VIP", "Active", T0 + timedelta(hours=4)), "not the old last order of 10 days ago"
    assert history_ends_in_stored_segment(store, "C-ACT")


def test_a_late_order_dated_after_the_last_move_keeps_its_own_time(store):
    evaluate_due(store, EMIT, T0)
    late = order("C-DOR", "D-LATE", T0 - timedelta(hours=3), 10_000)  # placed before the run, imported after it
    store.upsert_orders([late], T0 + timedelta(hours=1))
    evaluate_due(store, EMIT, T0 + timedelta(hours=2))
    assert moves(store, "C-DOR")[-1] == ("Dormant", "Active", late.order_at)


def test_a_rules_change_that_moves_customers_back_is_dated_when_it_was_seen(store):
    evaluate_due(store, EMIT, T0)
    stricter = make_rules(first_run="emit", vip="10000")
    evaluate_due(store, stricter, T0 + DAY)
    assert moves(store, "C-VIP")[-1] == ("VIP", "Active", T0 + DAY)
    assert history_ends_in_stored_segment(store, "C-VIP")


def test_a_status_the_rules_now_exclude_is_counted_out_on_the_next_run(store):
    evaluate_due(store, EMIT, T0)
    store.upsert_orders([order("C-ACT", "A-3", days_ago(2), 450_000, status="returned")], T0)
    evaluate_due(store, EMIT, T0 + timedelta(hours=1))
    assert store.get_customer("C-ACT").segment == "VIP"
    returns_excluded = make_rules(first_run="emit").model_copy(
        update={"orders": make_rules().orders.model_copy(update={"exclude_statuses": ("cancelled", "returned")})})
    evaluate_due(store, returns_excluded, T0 + timedelta(hours=2))
    assert store.get_customer("C-ACT").segment == "Active"
    assert moves(store, "C-ACT")[-1] == ("VIP", "Active", T0 + timedelta(hours=2))


# --- time only moves forward; a dry run writes nothing ---------------------------------------------------------

def test_an_evaluation_ahead_of_the_clock_or_before_the_last_run_is_refused(store):
    evaluate_due(store, EMIT, T0)
    check_as_of(store, T0 + timedelta(seconds=30), wall_clock=T0)  # within a minute of skew: fine
    check_as_of(store, T0 + DAY, wall_clock=T0 + 2 * DAY)  # a later past moment (a backfill): fine
    with pytest.raises(EvaluationRefused, match="later than the clock"):
        check_as_of(store, T0 + 200 * DAY, wall_clock=T0)
    with pytest.raises(EvaluationRefused, match="earlier than this store's last evaluation run"):
        check_as_of(store, T0 - DAY, wall_clock=T0)


def test_a_dry_run_reports_what_the_run_would_do_and_stores_nothing(store):
    evaluate_due(store, EMIT, T0)
    store.upsert_orders([order("C-NEW", "N-BIG", T0 + timedelta(hours=1), 600_000)], T0 + timedelta(hours=1))
    later = T0 + 100 * DAY
    before = (store.list_events(None, 1000), [moves(store, c) for c in SEGMENTS], store.get_meta("last_evaluation"))

    plan = dry_run(store, EMIT, later)

    assert (store.list_events(None, 1000), [moves(store, c) for c in SEGMENTS],
            store.get_meta("last_evaluation")) == before
    assert store.get_customer("C-NEW").segment == "New"
    result = evaluate_due(store, EMIT, later)
    assert plan.customers == result.customers and sum(plan.moves.values()) == result.transitions
    assert sum(plan.campaigns.values()) == result.events
    assert plan.moves[("New", "VIP")] == 1 and plan.samples[("New", "VIP")] == ["C-NEW"]
    assert plan.moves[("Active", "Dormant")] == 1 and plan.campaigns["win-back"] == 1
