"""The model's figures in rules.yaml: segment conditions on churnRisk, a band trigger that fires once per rise
(`on: {reached: {churnRiskBand: High}}`), re-checks planned for the day the risk reaches a threshold, the re-check
before sending, and the settings refused with a reason.

The model is the CDNOW one saved straight into the store, so each figure below is the model's and not a fit's."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pytest

from rules import Announced, Classifier, RulesError, parse_rules, undone_because
from rules.metrics import local_midnight
from rules.predict import BgNbdParams, probability_no_purchase
from tests.factories import ENV, T0, UTC, ingest, order, rules_text
from worker.delivery import Recheck
from worker.evaluate import evaluate_due
from worker.prediction import FITTED, SavedModel, load_model, settings_digest
from worker.store.base import PREDICTION_MODEL_KEY

PARAMS = {"bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
          "gammaGamma": {"p": 6.25, "q": 3.74, "v": 15.44}}
BGNBD = BgNbdParams(**PARAMS["bgnbd"])

SEGMENTS = """\
  - {name: VIP, when: {totalSpend: {gt: 500}}}
  - {name: Slipping, when: {churnRisk: {gte: 0.9}}}
  - {name: New, when: {orderCount: {lt: 1}}}
  - {name: Active}
"""
CAMPAIGNS = """\
  vip-slipping: {on: {reached: {churnRiskBand: High}}, segment: VIP, webhook: n8n}
  slipping:     {on: {entered: Slipping}, webhook: n8n}
"""


@pytest.fixture
def rules():
    return parse_rules(rules_text(segments=SEGMENTS, campaigns=CAMPAIGNS, first_run="emit"), env=ENV)


def save_model(store, rules, fitted_at: datetime = T0 - timedelta(days=1)) -> None:
    saved = SavedModel(FITTED, fitted_at, None, settings_digest(rules.prediction), fitted_at, PARAMS)
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps(saved.as_json()))


def risk(x: int, first: date, last: date, today: date) -> float:
    """The churn risk as the API rounds it, computed straight from the model."""
    return round(float(probability_no_purchase(BGNBD, 90 / 7, x, (last - first).days / 7,
                                               (today - first).days / 7)), 4)


def first_day_at_or_above(cut: float, x: int, first: date, last: date, start: date) -> date:
    day = start
    while risk(x, first, last, day) < cut:
        day += timedelta(days=1)
    return day


# a VIP: three orders a fortnight apart, the last 10 days before T0 --------------------------------------------------

VIP_FIRST, VIP_LAST = (T0 - timedelta(days=38)).date(), (T0 - timedelta(days=10)).date()


@pytest.fixture
def vip(store, rules):
    ingest(store, [order("V", f"V-{n}", T0 - timedelta(days=days), 30_000) for n, days in enumerate((38, 24, 10))])
    save_model(store, rules)
    return store


def test_a_condition_on_churn_risk_needs_a_model(store, rules):
    ingest(store, [order("N", "N-1", T0 - timedelta(days=400))])
    evaluate_due(store, rules, T0)
    assert store.get_customer("N").segment == "Active"  # no model: churnRisk is null, the condition cannot hold
    save_model(store, rules)
    evaluate_due(store, rules, T0 + timedelta(minutes=1))  # a new model: the rules read it, so everyone again
    assert store.get_customer("N").segment == "Slipping"
    assert [e.campaign for e in store.events_for("N")] == ["slipping"]


def test_the_band_trigger_fires_once_on_the_day_the_risk_reaches_high(vip, rules):
    first_run = T0
    evaluate_due(vip, rules, first_run)
    assert risk(2, VIP_FIRST, VIP_LAST, T0.date()) < 0.8  # not High yet
    crossing = first_day_at_or_above(0.8, 2, VIP_FIRST, VIP_LAST, T0.date())
    assert risk(2, VIP_FIRST, VIP_LAST, crossing - timedelta(days=1)) < 0.8 <= risk(2, VIP_FIRST, VIP_LAST, crossing)
    midnight = local_midnight(crossing, UTC)
    assert vip.get_customer("V").next_check_at == midnight  # the re-check is planned for that very midnight

    evaluate_due(vip, rules, midnight - timedelta(seconds=1))
    assert vip.events_for("V") == []
    evaluate_due(vip, rules, midnight)
    events = vip.events_for("V")
    assert [(e.campaign, e.type, e.occurred_at) for e in events] == [("vip-slipping", "milestone.reached", midnight)]
    body = json.loads(events[0].body)
    assert body["milestone"] == {"metric": "churnRiskBand", "band": "High"}
    assert body["customer"]["metrics"]["predicted"]["churnRiskBand"] == "High"

    evaluate_due(vip, rules, midnight + timedelta(days=3))
    save_model(vip, rules, fitted_at=midnight + timedelta(days=3, hours=1))  # a refit: everyone is looked at again
    evaluate_due(vip, rules, midnight + timedelta(days=3, hours=2))
    assert len(vip.events_for("V")) == 1  # once per rise, however often the customer is evaluated


def test_a_band_already_reached_when_the_trigger_is_added_does_not_fire(vip, rules):
    late = local_midnight(first_day_at_or_above(0.8, 2, VIP_FIRST, VIP_LAST, T0.date()), UTC) + timedelta(days=5)
    plain = parse_rules(rules_text(segments=SEGMENTS, campaigns="  slipping: {on: {entered: Slipping}, "
                                   "webhook: n8n}\n", first_run="emit"), env=ENV)
    evaluate_due(vip, plain, late)
    evaluate_due(vip, rules, late + timedelta(hours=1))  # the trigger appears after the customer was High
    assert vip.events_for("V") == []


def test_a_new_order_lowers_the_risk_and_the_pending_event_is_not_sent(vip, rules):
    midnight = local_midnight(first_day_at_or_above(0.8, 2, VIP_FIRST, VIP_LAST, T0.date()), UTC)
    evaluate_due(vip, rules, T0)
    evaluate_due(vip, rules, midnight)
    [event] = vip.events_for("V")
    ingest(vip, [order("V", "V-9", midnight + timedelta(hours=1), 30_000)], midnight + timedelta(hours=1))
    [undone] = Recheck(vip, rules, midnight + timedelta(hours=2)).undone([event])
    assert "the churn risk is now" in undone.reason and "below High" in undone.reason


def test_the_recheck_keeps_an_event_whose_band_still_holds(vip, rules):
    midnight = local_midnight(first_day_at_or_above(0.8, 2, VIP_FIRST, VIP_LAST, T0.date()), UTC)
    evaluate_due(vip, rules, T0)
    evaluate_due(vip, rules, midnight)
    assert Recheck(vip, rules, midnight + timedelta(hours=2)).undone(vip.events_for("V")) == []


def test_the_recheck_holds_back_a_band_event_when_no_model_can_confirm_it(vip, rules):
    midnight = local_midnight(first_day_at_or_above(0.8, 2, VIP_FIRST, VIP_LAST, T0.date()), UTC)
    evaluate_due(vip, rules, T0)
    evaluate_due(vip, rules, midnight)
    vip.set_meta(PREDICTION_MODEL_KEY, json.dumps({"status": "not_eligible", "checkedAt": None, "reason": "x",
                                                   "settings": ""}))
    [undone] = Recheck(vip, rules, midnight + timedelta(hours=2)).undone(vip.events_for("V"))
    assert "no churn prediction can be made now" in undone.reason


def test_re_checks_are_planned_where_the_risk_reaches_a_condition(store, rules):
    first = (T0 - timedelta(days=5)).date()
    ingest(store, [order("N", "N-1", T0 - timedelta(days=5))])
    save_model(store, rules)
    evaluate_due(store, rules, T0)
    # the band trigger's cut point (0.8) comes first, then the condition's (0.9): one re-check at each
    high = local_midnight(first_day_at_or_above(0.8, 0, first, first, T0.date()), UTC)
    slipping = local_midnight(first_day_at_or_above(0.9, 0, first, first, T0.date()), UTC)
    assert T0 < high < slipping
    record = store.get_customer("N")
    assert record.segment == "Active" and record.next_check_at == high
    evaluate_due(store, rules, high)
    record = store.get_customer("N")
    assert record.segment == "Active" and record.next_check_at == slipping
    evaluate_due(store, rules, slipping - timedelta(seconds=1))
    assert store.get_customer("N").segment == "Active"
    evaluate_due(store, rules, slipping)
    assert store.get_customer("N").segment == "Slipping"


def test_undone_because_reads_a_band_event_back(rules, store):
    save_model(store, rules)
    classifier = Classifier(rules, None, load_model(store, rules))
    announced = Announced.from_body({"type": "milestone.reached", "campaign": "vip-slipping",
                                     "transition": {"from": "VIP", "to": "VIP"},
                                     "milestone": {"metric": "churnRiskBand", "band": "High"}})
    assert announced.milestone == ("churnRiskBand", "High")
    from tests.factories import facts
    recent = facts((T0 - timedelta(days=2), 30_000), (T0 - timedelta(days=1), 30_000))
    from dataclasses import replace
    recent = replace(recent, purchase_days=2, first_day_cents=30_000)
    current = classifier.classify(recent, T0)
    assert current.predicted is not None and current.predicted.band != "High"
    assert "below High" in undone_because(rules, announced, recent, current)


# the settings ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    ("campaigns:\n  low: {on: {reached: {churnRiskBand: Low}}, webhook: n8n}\n", "takes Medium or High"),
    ("campaigns:\n  odd: {on: {reached: {churnRiskBand: Severe}}, webhook: n8n}\n", "takes Medium or High"),
    ("campaigns:\n  odd: {on: {reached: {churnRisk: 0.5}}, webhook: n8n}\n", "reached works on"),
    ("prediction: {churn_bands: {medium: 0.9, high: 0.8}}\n", "must be below high"),
    ("prediction: {horizon_days: 3}\n", "horizon_days"),
    ("prediction: {churn_bands: {high: 1.5}}\n", "high"),
])
def test_prediction_settings_that_cannot_work_are_refused(extra, message):
    text = rules_text(campaigns="").replace("campaigns:\n", "") + extra
    with pytest.raises(RulesError) as refused:
        parse_rules(text, env=ENV)
    assert message in str(refused.value)


def test_a_churn_risk_threshold_above_one_is_refused():
    with pytest.raises(RulesError, match="too large for churnRisk"):
        parse_rules(rules_text(segments="  - {name: A, when: {churnRisk: {gt: 1.5}}}\n  - {name: New}\n"), env=ENV)


def test_predicted_value_thresholds_are_money_compared_in_cents(store, rules):
    money = parse_rules(rules_text(segments="  - {name: Valuable, when: {predictedClv12m: {gte: 0.01}}}\n"
                                   "  - {name: New, when: {orderCount: {lt: 1}}}\n  - {name: Other}\n",
                                   campaigns="").replace("campaigns:\n", ""), env=ENV)
    ingest(store, [order("R", f"R-{n}", T0 - timedelta(days=d), 5_000) for n, d in enumerate((30, 20, 10))])
    save_model(store, money)
    classifier = Classifier(money, None, load_model(store, money))
    current = classifier.classify(store.get_customer("R").facts, T0)
    assert current.predicted.clv_cents > 1 and current.segment == "Valuable"


def test_rules_that_read_predictions_change_the_rules_version_with_the_prediction_settings():
    base = rules_text(segments=SEGMENTS, campaigns=CAMPAIGNS)
    plain = rules_text()
    assert parse_rules(base, env=ENV).rules_version != \
        parse_rules(base + "prediction: {horizon_days: 60}\n", env=ENV).rules_version
    assert parse_rules(plain, env=ENV).rules_version == \
        parse_rules(plain + "prediction: {horizon_days: 60}\n", env=ENV).rules_version


def test_disabled_predictions_score_nobody(store):
    off = parse_rules(rules_text() + "prediction: {enabled: false}\n", env=ENV)
    ingest(store, [order("R", "R-1", T0 - timedelta(days=3))])
    save_model(store, off)
    assert load_model(store, off) is None
    assert Classifier(off, None, None).classify(store.get_customer("R").facts, T0).predicted is None
    assert np.isfinite(risk(0, T0.date(), T0.date(), T0.date()))


def test_rules_preview_moves_customers_on_a_churn_condition_with_the_stored_model(store, rules):
    from worker.rules_preview import preview_store

    plain = parse_rules(rules_text(first_run="emit"), env=ENV)
    ingest(store, [order("OLD", "OLD-1", T0 - timedelta(days=300)), order("NEW", "NEW-1", T0 - timedelta(days=2))])
    save_model(store, rules)
    result = preview_store(store, plain, rules, T0)
    assert risk(0, (T0 - timedelta(days=300)).date(), (T0 - timedelta(days=300)).date(), T0.date()) >= 0.9
    assert risk(0, (T0 - timedelta(days=2)).date(), (T0 - timedelta(days=2)).date(), T0.date()) < 0.9
    assert result.samples[("Dormant", "Slipping")] == ["OLD"]
    assert result.moves[("New", "Active")] == 1 and result.campaigns["slipping"] == 1
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps({"status": "not_eligible", "checkedAt": None, "reason": "x",
                                                     "settings": ""}))
    assert ("Dormant", "Slipping") not in preview_store(store, plain, rules, T0).moves  # no model: never holds


def test_a_band_reached_on_the_day_of_the_order_is_no_rise_and_fires_nothing(store):
    bands = parse_rules(rules_text(segments=SEGMENTS, campaigns="  medium: {on: {reached: {churnRiskBand: Medium}}, "
                                   "webhook: n8n}\n  high: {on: {reached: {churnRiskBand: High}}, webhook: n8n}\n",
                                   first_run="emit"), env=ENV)
    day = (T0 - timedelta(days=1)).date()
    assert 0.5 <= risk(0, day, day, day) < 0.8  # a first order: Medium on its own day
    ingest(store, [order("ONE", "ONE-1", T0 - timedelta(days=1))])
    save_model(store, bands)
    evaluate_due(store, bands, T0)
    high = local_midnight(first_day_at_or_above(0.8, 0, day, day, T0.date()), UTC)
    evaluate_due(store, bands, high - timedelta(hours=1))
    assert store.events_for("ONE") == []
    evaluate_due(store, bands, high)
    assert [(e.campaign, e.occurred_at) for e in store.events_for("ONE")] == [("high", high)]


def test_a_sample_event_exists_for_a_band_trigger_and_carries_the_sample_models_figures(rules):
    from worker.sample_events import sample_event

    sample = sample_event(rules, "vip-slipping")
    body = json.loads(sample.body)
    predicted = body["customer"]["metrics"]["predicted"]
    assert body["test"] is True and body["milestone"] == {"metric": "churnRiskBand", "band": "High"}
    assert body["customer"]["metrics"]["segment"] == "VIP" and predicted["churnRiskBand"] == "High"
    assert sample.move == "milestone.reached: churnRiskBand High in VIP"
