"""Campaign holdouts and outcomes through the product: the deterministic draw, held-out events that are recorded and
never sent, outcomes exact to the day, and the report's verdicts on generated data (sent customers reorder with
probability 0.30, held-out ones 0.20; and with no difference), through the store, the API and the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from rules import Classifier, parse_rules
from rules.holdouts import bucket, draws_held_out
from tests.factories import ENV, T0, order
from tests.factories import rules_text as seed_rules
from tests.outbox_helpers import make_rules
from tests.receiver import Receiver
from worker.delivery import Senders, deliver_due
from worker.evaluate import decide, evaluate_due
from worker.outcomes import NO_EFFECT, NO_HOLDOUT, TOO_FEW, UPLIFT, campaign_report, report_json
from worker.store.base import HELD_OUT

WIN_BACK = "  win-back: {on: {entered: Dormant}, webhook: n8n, holdout_percent: 10, outcome_days: 30}\n"
# Each customer's only order, 100 days before T0: Dormant since the midnight starting day 91 after it.
ORDERED = T0 - timedelta(days=100)
DORMANT_AT = T0.replace(hour=0) - timedelta(days=9)


@pytest.fixture
def rules():
    return parse_rules(seed_rules(first_run="emit", campaigns=WIN_BACK), env=ENV)


def dormant_base(store, rules, customers: int) -> dict[str, bool]:
    """`customers` customers who all enter Dormant at DORMANT_AT: contact id -> held out."""
    store.upsert_orders([order(f"C-{n}", f"O-{n}", ORDERED) for n in range(customers)], T0)
    evaluate_due(store, rules, T0)
    events = store.list_events(None, customers + 1)
    assert len(events) == customers and {e.occurred_at for e in events} == {DORMANT_AT}
    return {e.contact_id: e.status == HELD_OUT for e in events}


def reorders(store, groups: dict[str, bool], sent: float, held: float, seed: int = 1) -> None:
    """Each customer orders once within the window with probability `sent` or `held` (by its group)."""
    rng = random.Random(seed)
    store.upsert_orders([order(c, f"R-{c}", DORMANT_AT + timedelta(days=rng.randint(1, 29), hours=3), 5_000)
                         for c, held_out in groups.items() if rng.random() < (held if held_out else sent)],
                        T0 + timedelta(days=21))


# the draw ---------------------------------------------------------------------------------------------------------

def test_the_holdout_share_is_within_one_and_a_half_points_of_ten_percent_over_20000_customers():
    held = sum(draws_held_out("salt", "win-back", f"C-{n}", Decimal(10)) for n in range(20_000))
    assert 0.085 <= held / 20_000 <= 0.115


def test_the_draw_is_the_same_in_another_process():
    ids = [f"C-{n}" for n in range(200)]
    code = ("import json, sys; from rules.holdouts import bucket; "
            "print(json.dumps([bucket('s', 'vip', c) for c in json.loads(sys.argv[1])]))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == [bucket("s", "vip", c) for c in ids]


def test_campaigns_draw_independently():
    first = [draws_held_out("s", "a", f"C-{n}", Decimal(50)) for n in range(2000)]
    second = [draws_held_out("s", "b", f"C-{n}", Decimal(50)) for n in range(2000)]
    assert 0.4 < sum(a == b for a, b in zip(first, second, strict=True)) / 2000 < 0.6


def test_changing_the_percentage_never_moves_a_customer_already_drawn(store, rules):
    groups = dormant_base(store, rules, 400)
    wider = parse_rules(seed_rules(first_run="emit", campaigns=WIN_BACK.replace("holdout_percent: 10",
                                                                                 "holdout_percent: 50")), env=ENV)
    moved = [c for c, held in groups.items() if not held and draws_held_out(wider.holdout_salt, "win-back", c,
                                                                             Decimal(50))]
    assert moved, "some sent customers would be held out if drawn again at 50 %"
    record = store.get_customer(moved[0])
    assert record.holdouts == {"win-back": False}
    # the customer ordered and left Dormant, and enters it again under the wider holdout
    back = replace(record, segment="Active", segment_since=None, evaluated_at=T0 - timedelta(days=30))
    again = decide(back, Classifier(wider), T0 + timedelta(days=1), announce=True)
    assert [e.held_out for e in again.events] == [False], "drawn sent at 10 %, still sent at 50 %"
    assert again.holdouts is None, "nothing new was drawn"


def test_a_campaign_without_holdout_holds_nobody_out(store):
    plain = parse_rules(seed_rules(first_run="emit", campaigns=WIN_BACK.replace("holdout_percent: 10, ", "")),
                        env=ENV)
    groups = dormant_base(store, plain, 200)
    assert not any(groups.values()) and store.get_customer("C-1").holdouts == {}


# held-out events are never sent -------------------------------------------------------------------------------------

def test_a_held_out_event_is_recorded_and_never_sent(store):
    with Receiver(ENV["WEBHOOK_SECRET"]) as receiver:
        rules = make_rules(receiver.url, campaigns=WIN_BACK)
        store.upsert_orders([order(f"C-{n}", f"O-{n}", ORDERED) for n in range(300)], T0)
        evaluate_due(store, rules, T0)
        held = {e.id for e in store.list_events(HELD_OUT, 1000)}
        assert 10 <= len(held) <= 60
        senders = Senders()
        try:
            while deliver_due(store, rules, senders, T0 + timedelta(seconds=1), "test").attempted:
                pass
        finally:
            senders.close()
        delivered = set(receiver.delivered_ids())
        assert len(delivered) == 300 - len(held) and not delivered & held
        assert {e.status for e in store.list_events(HELD_OUT, 1000)} == {HELD_OUT}


def test_replaying_a_held_out_event_is_refused_everywhere(store, rules, client, admin_headers, runner):
    groups = dormant_base(store, rules, 100)
    held = next(e for e in store.list_events(HELD_OUT, 100))
    assert any(groups.values())
    answer = client.post(f"/api/events/{held.id}/replay", headers=admin_headers)
    assert answer.status_code == 409 and "control group" in answer.get_json()["error"]
    result = runner.invoke("events", "replay", held.id)
    assert result.exit_code == 1 and "control group" in result.output
    assert store.get_event(held.id).status == HELD_OUT


# outcomes, exact ----------------------------------------------------------------------------------------------------

def test_an_order_on_day_30_counts_and_one_on_day_31_does_not_nor_a_cancelled_one(store, rules):
    dormant_base(store, rules, 3)
    at = lambda days, hour=23: DORMANT_AT.replace(hour=hour) + timedelta(days=days)  # noqa: E731
    store.upsert_orders([order("C-0", "A", at(30), 1_000), order("C-1", "B", at(31, 0), 2_000),
                         order("C-2", "C", at(5), 3_000, status="cancelled"), order("C-2", "D", at(-1), 4_000)], T0)
    outcomes = {e.contact_id: (e.outcome_orders, e.outcome_cents) for e in store.list_events(None, 10)}
    assert outcomes == {"C-0": (1, 1_000), "C-1": (0, 0), "C-2": (0, 0)}
    store.upsert_orders([order("C-0", "A", at(30), 1_000, status="refunded")], T0)  # corrected later
    assert {e.contact_id: e.outcome_orders for e in store.list_events(None, 10)}["C-0"] == 0


# the report ---------------------------------------------------------------------------------------------------------

def test_the_report_finds_the_uplift_of_a_campaign_that_works(store, rules):
    groups = dormant_base(store, rules, 5000)
    reorders(store, groups, sent=0.30, held=0.20)
    report = campaign_report(store, rules, "win-back", T0 + timedelta(days=40))
    total = report.total
    assert total.comparison.verdict == UPLIFT
    low, high = total.comparison.absolute_interval
    assert 0 < low < 0.10 < high
    assert total.sent.customers + total.held_out.customers == 5000 and total.open_sent == 0
    assert abs(total.sent.conversion - 0.30) < 0.03 and abs(total.held_out.conversion - 0.20) < 0.05
    assert total.sent.cents == 5_000 * total.sent.orders  # exact money


def test_the_report_says_no_measurable_effect_when_there_is_none(store, rules):
    groups = dormant_base(store, rules, 5000)
    reorders(store, groups, sent=0.25, held=0.25, seed=3)
    comparison = campaign_report(store, rules, "win-back", T0 + timedelta(days=40)).total.comparison
    assert comparison.verdict == NO_EFFECT
    low, high = comparison.absolute_interval
    assert low < 0 < high and comparison.more_needed is not None


def test_open_windows_are_counted_apart_and_a_young_campaign_has_too_few(store, rules):
    groups = dormant_base(store, rules, 120)
    report = campaign_report(store, rules, "win-back", T0)  # every window still open
    assert report.total.open_sent + report.total.open_held_out == 120
    assert report.total.comparison.verdict == NO_HOLDOUT  # nobody held out has a closed window yet
    later = campaign_report(store, rules, "win-back", T0 + timedelta(days=40)).total
    assert later.comparison.verdict == TOO_FEW and sum(groups.values()) < 30
    sent_more, held_more = later.comparison.more_needed
    assert held_more > 0 and sent_more > 0 and "more held out are needed" in later.comparison.explanation


def test_the_report_is_split_by_month(store, rules):
    groups = dormant_base(store, rules, 200)
    reorders(store, groups, 0.3, 0.2)
    report = campaign_report(store, rules, "win-back", T0 + timedelta(days=40))
    assert [m.label for m in report.months] == [DORMANT_AT.strftime("%Y-%m")]
    assert report.months[0].sent == report.total.sent


# API and CLI --------------------------------------------------------------------------------------------------------

@pytest.fixture
def rules_text():  # the app's and the CLI's rules file (conftest's fixture): the win-back campaign with its holdout
    return seed_rules(first_run="emit", campaigns=WIN_BACK)


def test_the_api_lists_campaigns_and_reports_outcomes(store, rules, client, clock, read_headers):
    groups = dormant_base(store, rules, 2000)
    reorders(store, groups, 0.30, 0.20)
    listed = client.get("/api/campaigns", headers=read_headers).get_json()
    assert listed["data"] == [{"name": "win-back", "description": "win-back: when a customer enters Dormant → "
                               "webhook n8n; holds out 10 % as a control group, outcomes over 30 days",
                               "webhook": "n8n", "trigger": {"entered": "Dormant"}, "segment": None,
                               "holdoutPercent": 10.0, "outcomeDays": 30}]
    clock.now = T0 + timedelta(days=40)
    report = client.get("/api/campaigns/win-back/outcomes", headers=read_headers).get_json()["data"]
    assert report["total"]["verdict"] == UPLIFT and report["outcomeDays"] == 30
    assert report["total"]["sent"]["customers"] + report["total"]["heldOut"]["customers"] == 2000
    assert report == report_json(campaign_report(store, rules, "win-back", clock.now), "USD")
    assert client.get("/api/campaigns/nope/outcomes", headers=read_headers).status_code == 404
    assert client.get("/api/campaigns/win-back/outcomes?effect=2", headers=read_headers).status_code == 400
    assert client.get("/api/campaigns", headers={}).status_code == 401


def test_the_cli_prints_the_report(store, rules, runner):
    groups = dormant_base(store, rules, 2000)
    reorders(store, groups, 0.30, 0.20)
    result = runner.invoke("campaigns", "report", "win-back", "--as-of", (T0 + timedelta(days=40)).isoformat())
    assert result.exit_code == 0, result.output
    assert "win-back" in result.output and "uplift" in result.output and "held out" in result.output
    as_json = json.loads(runner.invoke("campaigns", "report", "--json", "--as-of",
                                       (T0 + timedelta(days=40)).isoformat()).output)
    assert [r["campaign"] for r in as_json] == ["win-back"]
