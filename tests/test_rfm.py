"""RFM: quintile boundaries on a hand-checked base, scores, group boundaries, conditions, API exposure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules import CustomerFacts, parse_rules
from rules.classify import Classifier
from rules.rfm import RfmCutoffs, compute_cutoffs, quintile_cutoffs, rfm_group, rfm_score, score_high, score_recent
from tests.conftest import NOW, RULES_YAML
from worker.evaluate import evaluate_due
from worker.rfm_boundaries import evaluation_version, load_cutoffs, recompute_rfm, refresh_rfm
from worker.store.base import SHARDS


def test_quintile_cutoffs_of_ten_values_split_them_in_pairs():
    assert quintile_cutoffs([10, 1, 9, 2, 8, 3, 7, 4, 6, 5]) == (2, 4, 6, 8)


def test_quintile_cutoffs_of_an_empty_base_are_empty_and_score_one():
    assert quintile_cutoffs([]) == ()
    assert score_high(100, ()) == 1 and score_recent(3, ()) == 1


@pytest.mark.parametrize(("value", "score"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 4), (9, 5), (100, 5)])
def test_more_is_better_for_frequency_and_monetary(value, score):
    assert score_high(value, (2, 4, 6, 8)) == score


@pytest.mark.parametrize(("days", "score"), [(0, 5), (2, 5), (3, 4), (6, 3), (8, 2), (9, 1), (400, 1)])
def test_fewer_days_is_better_for_recency(days, score):
    assert score_recent(days, (2, 4, 6, 8)) == score


def test_ties_score_equally_whatever_their_order():
    values = [5, 5, 5, 5, 5, 1, 9, 5, 5, 5]
    cutoffs = quintile_cutoffs(values)
    assert cutoffs == quintile_cutoffs(sorted(values, reverse=True))
    assert len({score_high(v, cutoffs) for v in values if v == 5}) == 1


@pytest.mark.parametrize(("r", "f", "m", "group"), [
    (5, 5, 5, "Champions"), (5, 4, 3, "Champions"), (5, 3, 2, "Potential loyalist"), (5, 1, 1, "New"),
    (4, 1, 1, "Promising"), (4, 5, 4, "Loyal"), (3, 4, 4, "Loyal"), (3, 3, 3, "Needs attention"),
    (3, 2, 1, "About to sleep"), (2, 5, 5, "Cannot lose"), (1, 5, 5, "Cannot lose"), (2, 3, 4, "At risk"),
    (1, 1, 1, "Lost"), (1, 2, 2, "Hibernating"), (2, 1, 1, "Hibernating"),
])
def test_group_boundaries(r, f, m, group):
    assert rfm_group(r, f, m) == group


def test_every_score_combination_has_a_group():
    groups = {rfm_group(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    assert "Other" not in groups and len(groups) == 11


def test_groups_can_be_configured_in_rules(env):
    text = RULES_YAML + "rfm_groups:\n  - {name: Best, recency: [4, 5], frequency_monetary: [4, 5]}\n" \
                        "  - {name: Rest, recency: [1, 5], frequency_monetary: [1, 5]}\n"
    rules = parse_rules(text, env=env)
    cutoffs = compute_cutoffs([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [100, 200, 300, 400, 500])
    facts = CustomerFacts(5, 500, NOW - timedelta(days=30), NOW - timedelta(days=1))
    assert Classifier(rules, cutoffs).classify(facts, NOW).rfm.group == "Best"


def test_rfm_score_of_a_customer():
    cutoffs = RfmCutoffs((10, 30, 60, 120), (1, 2, 4, 8), (10_000, 50_000, 100_000, 500_000))
    assert tuple(rfm_score(5, 9, 600_000, cutoffs)) == (5, 5, 5, "Champions")
    assert tuple(rfm_score(200, 3, 20_000, cutoffs)) == (1, 3, 2, "At risk")  # FM 2.5 rounds up to 3
    assert tuple(rfm_score(200, 2, 20_000, cutoffs)) == (1, 2, 2, "Hibernating")


def test_rfm_metrics_can_drive_a_segment(env):
    slipping = "  - {name: Slipping, when: {rfmRecency: {lte: 2}, rfmMonetary: {gte: 4}}}\n"
    text = RULES_YAML.replace("  - {name: VIP,", slipping + "  - {name: VIP,")
    rules = parse_rules(text, env=env)
    cutoffs = RfmCutoffs((10, 30, 60, 120), (1, 2, 4, 8), (10_000, 50_000, 100_000, 500_000))
    big_but_quiet = CustomerFacts(6, 200_000, NOW - timedelta(days=300), NOW - timedelta(days=80))
    assert Classifier(rules, cutoffs).classify(big_but_quiet, NOW).segment == "Slipping"
    assert Classifier(rules).classify(big_but_quiet, NOW).segment == "Active"  # no boundaries yet: never holds
    # the recency score steps after day 60 and day 120, so a re-check is due at those midnights
    fresh = CustomerFacts(6, 200_000, NOW - timedelta(days=300), NOW - timedelta(days=10))
    next_check = Classifier(rules, cutoffs).next_check_at(fresh, NOW)
    assert (next_check.date() - (NOW - timedelta(days=10)).date()).days == 61


def test_recompute_stores_boundaries_and_api_shows_scores(store, rules, post_orders, client, read_headers):
    for n in range(10):
        orders = [{"contactID": f"C-{n}", "orderReference": f"C-{n}-{k}", "total": f"{(n + 1) * 100}.00",
                   "orderDate": (NOW - timedelta(days=n * 10 + k)).strftime("%Y-%m-%dT%H:%M:%SZ")}
                  for k in range(n + 1)]
        assert post_orders(orders).status_code == 200
    cutoffs = recompute_rfm(store, rules, NOW)
    assert load_cutoffs(store) == cutoffs
    assert cutoffs.frequency == (2, 4, 6, 8)
    best = client.get("/api/customers/C-0", headers=read_headers).get_json()["data"]["metrics"]["rfm"]
    assert best == {"recency": 5, "frequency": 1, "monetary": 1, "group": "New"}
    top = client.get("/api/customers/C-9", headers=read_headers).get_json()["data"]["metrics"]["rfm"]
    assert (top["frequency"], top["monetary"]) == (5, 5)


def test_refresh_recomputes_only_once_a_day(store, rules):
    assert refresh_rfm(store, rules, NOW) is True
    assert refresh_rfm(store, rules, NOW + timedelta(hours=23)) is False
    assert refresh_rfm(store, rules, NOW + timedelta(hours=24)) is True


def test_new_boundaries_re_evaluate_everyone_only_when_rules_use_rfm(store, rules, env):
    cutoffs = RfmCutoffs((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    assert evaluation_version(rules, cutoffs) == rules.rules_version
    rfm_rules = parse_rules(RULES_YAML.replace("{gt: 5000}", "{gt: 5000}, rfmFrequency: {gte: 1}"), env=env)
    assert evaluation_version(rfm_rules, cutoffs) != evaluation_version(rfm_rules, RfmCutoffs((9,) * 4, (1,) * 4,
                                                                                               (1,) * 4))
    evaluate_due(store, rfm_rules, NOW)
    assert {store.shard_state(shard).version for shard in range(SHARDS)} == {rfm_rules.rules_version}
