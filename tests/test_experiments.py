"""Threshold experiments (the roadmap's A/B test of the VIP threshold): the rules that describe one and the mistakes
they refuse, the deterministic arm of each customer (in another process, on both backends), segments computed under
the customer's arm, the start and the end of an experiment through normal transitions, the report per arm exact to
the day, the rules preview per arm, and the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from rules import Classifier, RulesError, parse_rules
from rules.holdouts import experiment_arm
from rules.preview import preview
from tests.factories import ENV, T0, facts, order
from tests.factories import rules_text as seed_rules
from worker.evaluate import evaluate_due
from worker.experiments import experiment_report, report_json, spans
from worker.serialize import customer_json

DAY = timedelta(days=1)
EXPERIMENT = """\
experiments:
  vip-threshold:
    segment: VIP
    arms:
      control: {value: 5000, share: 34}
      low: {value: 3000, share: 33}
      high: {value: 10000, share: 33}
"""
SHARES = (("control", Decimal(34)), ("low", Decimal(33)), ("high", Decimal(33)))
SALT = "segment-worker"  # the rules' default holdout_salt


def experiment_rules(block: str = EXPERIMENT, **parts: str):
    return parse_rules(seed_rules(**parts) + block, env=ENV)


def arm_of(contact_id: str) -> str:
    return experiment_arm(SALT, "vip-threshold", contact_id, SHARES)


def ids_in(arm: str, count: int, prefix: str = "C") -> list[str]:
    """The first `count` contact ids PREFIX-n that the draw puts in `arm`."""
    found, n = [], 0
    while len(found) < count:
        if arm_of(f"{prefix}-{n}") == arm:
            found.append(f"{prefix}-{n}")
        n += 1
    return found


# the rules --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("block", "said"), [
    (EXPERIMENT.replace("share: 34", "share: 30"), "the arms' shares must add up to 100, they add up to 96"),
    (EXPERIMENT.replace("segment: VIP", "segment: Gold"), "segment names unknown segment 'Gold'"),
    (EXPERIMENT.replace("segment: VIP", "segment: Active"), "segment 'Active' has no condition for the arms"),
    (EXPERIMENT + "    winner: medium\n", "winner 'medium' is not one of the arms (control, low, high)"),
    (EXPERIMENT.replace("value: 3000", "value: -3"), "thresholds cannot be negative"),
    (EXPERIMENT + "    metric: orderCount\n", "segment 'VIP' has no condition on 'orderCount' (it has totalSpend)"),
    (EXPERIMENT.replace("vip-threshold", "vip"), "'vip' is also a campaign's name"),
    (EXPERIMENT + EXPERIMENT.replace("experiments:\n", "").replace("vip-threshold", "vip-again"),
     "experiment 'vip-threshold' already changes totalSpend of segment 'VIP'"),
    ("experiments:\n  x: {segment: VIP, arms: {only: {value: 1, share: 100}}}\n", "give 2 to 10 arms, got 1"),
    (EXPERIMENT.replace("share: 34", "share: 33.999"), "rules.yaml:26 experiments.vip-threshold.arms.control.share: "
                                                       "use at most 2 decimal places, got 33.999"),
])
def test_a_mistaken_experiment_is_refused_naming_the_experiment_and_what_is_wrong(block, said):
    with pytest.raises(RulesError) as refused:
        experiment_rules(block)
    assert said in str(refused.value)
    assert "experiments" in str(refused.value)


def test_a_segment_with_several_conditions_needs_the_metric_named():
    segments = ("  - {name: VIP, when: {totalSpend: {gt: 5000}, orderCount: {gte: 3}}}\n"
                "  - {name: Dormant, when: {lastOrderDaysAgo: {gt: 90}}}\n"
                "  - {name: New, when: {firstOrderDaysAgo: {lte: 30}}}\n  - {name: Active}\n")
    with pytest.raises(RulesError, match="say which one the arms change with `metric`"):
        experiment_rules(segments=segments)
    named = experiment_rules(EXPERIMENT + "    metric: orderCount\n".replace("orderCount", "totalSpend"),
                             segments=segments)
    assert named.experiment_conditions["vip-threshold"] == (0, "totalSpend", "gt")


def test_an_experiment_is_part_of_the_rules_version_and_its_absence_changes_nothing():
    plain = parse_rules(seed_rules(), env=ENV)
    assert experiment_rules().rules_version != plain.rules_version
    assert parse_rules(seed_rules() + "experiments: {}\n", env=ENV).rules_version == plain.rules_version


# the draw ---------------------------------------------------------------------------------------------------------

def test_arms_get_their_shares_within_one_and_a_half_points_over_20000_customers():
    drawn = Counter(arm_of(f"C-{n}") for n in range(20_000))
    for arm, share in SHARES:
        assert abs(drawn[arm] / 20_000 * 100 - float(share)) <= 1.5, drawn


def test_the_arm_is_the_same_in_another_process_and_independent_of_the_holdout_draws():
    ids = [f"C-{n}" for n in range(300)]
    code = ("import json, sys; from decimal import Decimal; from rules.holdouts import experiment_arm; "
            "shares = (('control', Decimal(34)), ('low', Decimal(33)), ('high', Decimal(33))); "
            "print(json.dumps([experiment_arm('segment-worker', 'vip-threshold', c, shares) "
            "for c in json.loads(sys.argv[1])]))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == [arm_of(c) for c in ids]
    # a campaign of the same name would not draw the same customers: the experiment has its own namespace
    from rules.holdouts import bucket
    assert [bucket(SALT, "vip-threshold", c) for c in ids] != \
        [bucket(SALT, "experiment\x1fvip-threshold", c) for c in ids]


# classification -----------------------------------------------------------------------------------------------------

def test_each_customer_is_classified_under_its_arm_and_shows_it():
    rules = experiment_rules()
    classifier = Classifier(rules)
    spend_4000 = facts((T0 - 40 * DAY, 200_000), (T0 - 5 * DAY, 200_000))
    spend_6000 = facts((T0 - 40 * DAY, 300_000), (T0 - 5 * DAY, 300_000))
    for arm, vip_at_4000, vip_at_6000 in (("control", False, True), ("low", True, True), ("high", False, False)):
        contact_id = ids_in(arm, 1)[0]
        at_4000 = classifier.classify(_as(spend_4000, contact_id), T0)
        at_6000 = classifier.classify_many([_as(spend_6000, contact_id)], T0)[0]
        assert (at_4000.segment == "VIP", at_6000.segment == "VIP") == (vip_at_4000, vip_at_6000), arm
        assert at_4000.experiments == (("vip-threshold", arm),)
    # facts without a contact id are classified as the segments are written, in no experiment
    assert classifier.classify(spend_6000, T0).segment == "VIP"
    assert classifier.classify(spend_6000, T0).experiments == ()
    mixed = classifier.classify_many([spend_4000, _as(spend_4000, ids_in("low", 1)[0])], T0)
    assert [(c.segment, c.experiments) for c in mixed] == [("Active", ()), ("VIP", (("vip-threshold", "low"),))]


def test_a_winner_puts_everyone_at_its_value_and_in_no_experiment():
    rules = experiment_rules(EXPERIMENT + "    winner: low\n")
    classifier = Classifier(rules)
    spend_4000 = facts((T0 - 40 * DAY, 200_000), (T0 - 5 * DAY, 200_000))
    for arm in ("control", "low", "high"):
        classified = classifier.classify(_as(spend_4000, ids_in(arm, 1)[0]), T0)
        assert (classified.segment, classified.experiments) == ("VIP", ())
    assert rules.running_experiments == ()


def test_an_experiment_on_a_day_threshold_plans_each_arms_own_re_check():
    block = ("experiments:\n  dormant-days:\n    segment: Dormant\n    arms:\n"
             "      early: {value: 60, share: 50}\n      late: {value: 120, share: 50}\n")
    classifier = Classifier(experiment_rules(block))
    halves = (("early", Decimal(50)), ("late", Decimal(50)))
    ids = {arm: next(f"C-{n}" for n in range(100) if experiment_arm(SALT, "dormant-days", f"C-{n}", halves) == arm)
           for arm in ("early", "late")}
    one_order = facts((T0 - 40 * DAY, 10_000))  # Active: New ended on day 31
    # Dormant from the midnight starting day 61 (early) or day 121 (late) after the order
    ordered_day = (T0 - 40 * DAY).replace(hour=0)
    assert classifier.next_check_at(_as(one_order, ids["early"]), T0) == ordered_day + 61 * DAY
    assert classifier.next_check_at(_as(one_order, ids["late"]), T0) == ordered_day + 121 * DAY


def _as(customer, contact_id):
    from dataclasses import replace
    return replace(customer, contact_id=contact_id)


# through evaluation and the report ----------------------------------------------------------------------------------

def test_the_report_counts_entrants_after_the_start_and_their_orders_through_day_30_exactly(store):
    before = parse_rules(seed_rules(), env=ENV)
    rules = experiment_rules()
    (already,) = ids_in("low", 1, "OLD")
    store.upsert_orders([order(already, "OLD-1", T0 - 20 * DAY, 400_000)], T0 - 20 * DAY)
    evaluate_due(store, before, T0 - 10 * DAY)  # Active at 4,000 without the experiment
    evaluate_due(store, rules, T0)  # the experiment starts: the low arm's 4,000 spender becomes VIP, not an entrant
    assert spans(store)["vip-threshold"].started_at == T0
    assert store.get_customer(already).segment == "VIP"

    (low,) = ids_in("low", 1)
    control_4000, control_6000 = ids_in("control", 2)
    (high,) = ids_in("high", 1)
    entered = T0 + DAY  # 2026-02-22 12:00 UTC
    store.upsert_orders([order(low, "L-1", entered, 400_000), order(control_4000, "C4-1", entered, 400_000),
                         order(control_6000, "C6-1", entered, 600_000), order(high, "H-1", entered, 600_000)],
                        entered)
    evaluate_due(store, rules, entered + timedelta(hours=1))
    assert {c: store.get_customer(c).segment for c in (low, control_4000, control_6000, high)} == {
        low: "VIP", control_4000: "New", control_6000: "VIP", high: "New"}
    # the low entrant orders on day 30 after entering (counts), on day 31 (does not) and once cancelled (does not)
    store.upsert_orders([order(low, "L-30", entered + 30 * DAY + timedelta(hours=11), 12_345),
                         order(low, "L-31", entered + 31 * DAY, 50_000),
                         order(low, "L-X", entered + 2 * DAY, 70_000, status="cancelled")], entered + 31 * DAY)

    report = experiment_report(store, rules, "vip-threshold", entered + 31 * DAY)
    arms = {a.arm: a for a in report.arms}
    assert (arms["low"].entered, arms["low"].measured, arms["low"].orders, arms["low"].cents) == (1, 1, 1, 12_345)
    assert (arms["control"].entered, arms["control"].orders, arms["high"].entered) == (1, 0, 0)
    assert report.status == "running"
    shown = report_json(report, rules)
    assert shown["arms"][1]["spendPerCustomer"]["value"] == "123.45" and shown["arms"][1]["value"] == "3000.00"
    # a day earlier the low entrant's window was still open
    earlier = experiment_report(store, rules, "vip-threshold", entered + 29 * DAY)
    assert {a.arm: (a.entered, a.still_open, a.measured) for a in earlier.arms}["low"] == (1, 1, 0)


def generated_experiment(store, rules, customers: int, reorder: dict[str, float], seed: int = 7) -> None:
    """`customers` customers whose first order (3,000 to 12,000) comes a day after the experiment starts, so that
    each arm's threshold decides who enters VIP; each entrant then orders again within 30 days with its arm's
    probability in `reorder`."""
    import random
    rng = random.Random(seed)
    evaluate_due(store, rules, T0)
    first = T0 + DAY
    store.upsert_orders([order(f"G-{n}", f"G-{n}-1", first, rng.randint(300_000, 1_200_000))
                         for n in range(customers)], first)
    evaluate_due(store, rules, first + timedelta(hours=1))
    vips = [r.contact_id for batch in store.iter_customers() for r in batch if r.segment == "VIP"]
    store.upsert_orders([order(c, f"{c}-2", first + rng.randint(1, 29) * DAY, rng.randint(10_000, 50_000))
                         for c in vips if rng.random() < reorder[arm_of(c)]], first + 30 * DAY)


def test_on_generated_data_the_intervals_hold_the_true_rates_and_separate_arms_that_differ(store):
    rules = experiment_rules()
    generated_experiment(store, rules, 3000, {"low": 0.20, "control": 0.30, "high": 0.45})
    arms = {a.arm: a for a in experiment_report(store, rules, "vip-threshold", T0 + 40 * DAY).arms}
    for arm, rate in (("low", 0.20), ("control", 0.30), ("high", 0.45)):
        assert arms[arm].conversion.low < rate < arms[arm].conversion.high, (arm, arms[arm].conversion)
        assert arms[arm].measured == arms[arm].entered > 30 and arms[arm].note == ""
    assert arms["low"].entered > arms["control"].entered > arms["high"].entered  # lower thresholds admit more
    assert arms["low"].conversion.high < arms["high"].conversion.low


def test_on_generated_data_without_a_difference_the_intervals_overlap(store):
    rules = experiment_rules()
    # a 95 % interval misses the true rate 1 time in 20 by design: the seed is fixed, so the test is deterministic
    generated_experiment(store, rules, 3000, dict.fromkeys(("low", "control", "high"), 0.30), seed=8)
    arms = experiment_report(store, rules, "vip-threshold", T0 + 40 * DAY).arms
    assert all(a.conversion.low < 0.30 < a.conversion.high for a in arms)
    assert max(a.conversion.low for a in arms) < min(a.conversion.high for a in arms)


def test_the_whole_arms_compare_every_customer_drawn_and_find_the_threshold_that_earns_more(store):
    """Customers from before the start; while it runs, each VIP orders again (500.00) with probability 0.8 and nobody
    else orders: the low threshold makes more VIPs, so its arm earns more per customer, the high one less."""
    import random
    rng = random.Random(3)
    rules = experiment_rules()
    store.upsert_orders([order(f"W-{n}", f"W-{n}-1", T0 - 40 * DAY, rng.randint(300_000, 1_200_000))
                         for n in range(1500)], T0)
    evaluate_due(store, rules, T0)
    vips = [r.contact_id for batch in store.iter_customers() for r in batch if r.segment == "VIP"]
    again = [c for c in vips if rng.random() < 0.8]
    store.upsert_orders([order(c, f"{c}-2", T0 + 5 * DAY, 50_000) for c in again], T0 + 5 * DAY)

    report = experiment_report(store, rules, "vip-threshold", T0 + 10 * DAY)
    whole = {t.arm: t for t in report.whole}
    drawn = Counter(arm_of(f"W-{n}") for n in range(1500))
    assert {arm: t.customers for arm, t in whole.items()} == dict(drawn)
    reordered = Counter(arm_of(c) for c in again)
    assert {arm: (t.buyers, t.orders, t.cents) for arm, t in whole.items()} == {
        arm: (reordered[arm], reordered[arm], reordered[arm] * 50_000) for arm in drawn}
    assert whole["control"].versus is None
    assert whole["low"].versus.verdict == "more revenue per customer"
    assert whole["high"].versus.verdict == "less revenue per customer"
    low = whole["low"].versus.difference
    assert low.low < low.value < low.high and low.low > 0
    shown = report_json(report, rules)["wholeArms"]
    assert shown[1]["versusFirstArm"]["difference"]["value"].startswith("+")


def test_without_a_difference_the_whole_arms_find_none(store):
    import random
    rng = random.Random(5)
    rules = experiment_rules()
    store.upsert_orders([order(f"W-{n}", f"W-{n}-1", T0 - 40 * DAY, 100_000) for n in range(1500)], T0)
    evaluate_due(store, rules, T0)
    store.upsert_orders([order(f"W-{n}", f"W-{n}-2", T0 + 5 * DAY, 50_000) for n in range(1500)
                         if rng.random() < 0.3], T0 + 5 * DAY)
    whole = experiment_report(store, rules, "vip-threshold", T0 + 10 * DAY).whole
    assert [t.versus.verdict for t in whole[1:]] == ["no measurable difference"] * 2


def test_a_winner_ends_the_experiment_and_moves_everyone_through_normal_transitions(store):
    rules = experiment_rules()
    evaluate_due(store, rules, T0)
    control = ids_in("control", 1)[0]
    store.upsert_orders([order(control, "C-1", T0 + DAY, 400_000)], T0 + DAY)
    evaluate_due(store, rules, T0 + 2 * DAY)
    assert store.get_customer(control).segment == "New"

    ended = experiment_rules(EXPERIMENT + "    winner: low\n", first_run="emit")
    evaluate_due(store, ended, T0 + 3 * DAY)
    assert store.get_customer(control).segment == "VIP"
    moves = [(t.from_segment, t.to_segment) for t in store.transitions_for(control)]
    assert moves[-1] == ("New", "VIP")
    vip_events = [e for e in store.events_for(control) if e.campaign == "vip"]
    assert len(vip_events) == 1  # the VIP campaign welcomes the customer the winner made VIP
    span = spans(store)["vip-threshold"]
    assert (span.ended_at, span.winner) == (T0 + 3 * DAY, "low")
    report = experiment_report(store, ended, "vip-threshold", T0 + 40 * DAY)
    assert report.status == "ended"
    # the winner's moves came after the end: they are not the experiment's entrants
    assert sum(a.entered for a in report.arms) == 0


def test_removing_the_experiment_puts_everyone_back_at_the_written_threshold_through_normal_transitions(store):
    low, control = ids_in("low", 1)[0], ids_in("control", 1)[0]
    store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, 400_000) for c in (low, control)], T0)
    evaluate_due(store, experiment_rules(), T0)
    assert (store.get_customer(low).segment, store.get_customer(control).segment) == ("VIP", "Active")

    evaluate_due(store, parse_rules(seed_rules(), env=ENV), T0 + DAY)
    assert (store.get_customer(low).segment, store.get_customer(control).segment) == ("Active", "Active")
    assert [(t.from_segment, t.to_segment) for t in store.transitions_for(low)][-1] == ("VIP", "Active")


def test_changing_the_arms_starts_measuring_again(store):
    evaluate_due(store, experiment_rules(), T0)
    changed = experiment_rules(EXPERIMENT.replace("value: 3000", "value: 2500"))
    assert experiment_report(store, changed, "vip-threshold", T0 + DAY).status == "not started"
    evaluate_due(store, changed, T0 + DAY)
    span = spans(store)["vip-threshold"]
    assert (span.started_at, span.restarted) == (T0 + DAY, True)


def test_the_rules_preview_shows_each_arms_moves(store):
    current = parse_rules(seed_rules(), env=ENV)
    candidate = experiment_rules()
    customers = {arm: ids_in(arm, 2) for arm in ("control", "low", "high")}
    spends = (400_000, 600_000)
    store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, spend) for ids in customers.values()
                         for c, spend in zip(ids, spends, strict=True)], T0)
    records = [r for batch in store.iter_customers() for r in batch]
    result = preview([(r.contact_id, r.facts) for r in records], current, candidate, T0)
    assert result.arm_moves[("vip-threshold", "low")] == Counter({("Active", "VIP"): 1})
    assert result.arm_moves[("vip-threshold", "high")] == Counter({("VIP", "Active"): 1})
    assert result.arm_moves[("vip-threshold", "control")] == Counter()
    assert result.arm_customers[("vip-threshold", "control")] == 2


def test_customers_show_the_same_arm_and_segment_on_both_backends(backend):
    rules = experiment_rules()
    store = backend.open()
    try:
        ids = [f"C-{n}" for n in range(30)]
        store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, 400_000) for c in ids], T0)
        evaluate_due(store, rules, T0)
        classifier = Classifier(rules)
        for record in store.customers_by_id(ids):
            shown = customer_json(record, classifier.classify(record.facts, T0))
            assert shown["experiments"] == {"vip-threshold": arm_of(record.contact_id)}
            assert record.segment == ("VIP" if arm_of(record.contact_id) == "low" else "Active")
    finally:
        store.close()


# API and CLI --------------------------------------------------------------------------------------------------------

@pytest.fixture
def rules_text():  # the app's and the CLI's rules file (conftest's fixture)
    return seed_rules() + EXPERIMENT


def test_the_api_shows_arms_splits_segments_and_reports(store, rules, client, clock, read_headers):
    ids = [f"C-{n}" for n in range(60)]
    store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, 400_000) for c in ids], T0)
    evaluate_due(store, rules, T0)

    one = client.get(f"/api/customers/{ids[0]}", headers=read_headers).get_json()["data"]
    assert one["experiments"] == {"vip-threshold": arm_of(ids[0])}
    split = client.get("/api/segments?experiment=vip-threshold", headers=read_headers).get_json()
    by_arm = {a["arm"]: {row["segment"]: row["customers"] for row in a["data"]} for a in split["arms"]}
    drawn = Counter(arm_of(c) for c in ids)
    assert by_arm["low"]["VIP"] == drawn["low"] and by_arm["control"]["VIP"] == 0
    assert by_arm["control"]["Active"] == drawn["control"] and split["customers"] == 60
    assert client.get("/api/segments?experiment=nope", headers=read_headers).status_code == 400

    listed = client.get("/api/campaigns", headers=read_headers).get_json()["experiments"]
    assert [(e["name"], e["status"], e["startedAt"]) for e in listed] == [
        ("vip-threshold", "running", "2026-02-21T12:00:00.000Z")]
    clock.now = T0 + 40 * DAY
    report = client.get("/api/experiments/vip-threshold/outcomes", headers=read_headers).get_json()["data"]
    assert [a["arm"] for a in report["arms"]] == ["control", "low", "high"]
    assert report == report_json(experiment_report(store, rules, "vip-threshold", clock.now), rules)
    assert client.get("/api/experiments/nope/outcomes", headers=read_headers).status_code == 404
    assert client.get("/api/experiments", headers={}).status_code == 401


def test_the_experiment_answers_match_the_documented_schemas(store, rules, client, clock, read_headers,
                                                            admin_headers):
    from tests.test_api_openapi import ResponseChecker
    check = ResponseChecker(client.get("/api/openapi.json", headers=read_headers).get_json())
    low = ids_in("low", 40)
    store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, 400_000) for c in low], T0)
    evaluate_due(store, rules, T0)
    clock.now = T0 + 40 * DAY
    check("GET", "/api/customers/{contactID}", client.get(f"/api/customers/{low[0]}", headers=read_headers))
    check("GET", "/api/segments", client.get("/api/segments?experiment=vip-threshold", headers=read_headers))
    check("GET", "/api/segments", client.get("/api/segments?experiment=nope", headers=read_headers))
    check("GET", "/api/campaigns", client.get("/api/campaigns", headers=read_headers))
    check("GET", "/api/experiments", client.get("/api/experiments", headers=read_headers))
    check("GET", "/api/experiments/{experiment}/outcomes",
          client.get("/api/experiments/vip-threshold/outcomes", headers=read_headers))
    candidate = seed_rules() + EXPERIMENT.replace("3000", "4500")
    check("POST", "/api/rules/preview", client.post("/api/rules/preview", data=candidate, headers=admin_headers))
    assert {status for _, _, status in check.seen} == {"200", "400"}


def test_the_cli_reports_an_experiment_and_previews_its_arms(store, rules, runner, tmp_path):
    store.upsert_orders([order(c, f"O-{c}", T0 - 40 * DAY, 400_000) for c in ids_in("low", 3)], T0)
    result = runner.invoke("rules", "preview", _write(tmp_path, seed_rules() + EXPERIMENT.replace("3000", "4500")),
                           "--as-of", T0.isoformat())
    assert result.exit_code == 0, result.output
    assert "experiment vip-threshold, per arm:" in result.output
    assert "low (4500): 3 customers, 3 would move: VIP -> Active 3" in result.output
    evaluate_due(store, rules, T0)
    report = runner.invoke("campaigns", "report", "vip-threshold", "--as-of", (T0 + DAY).isoformat())
    assert report.exit_code == 0, report.output
    assert "experiment vip-threshold: VIP at totalSpend gt" in report.output and "running since 2026-02-21" in \
        report.output
    as_json = json.loads(runner.invoke("campaigns", "report", "vip-threshold", "--json", "--as-of",
                                       (T0 + DAY).isoformat()).output)
    assert as_json["name"] == "vip-threshold" and len(as_json["arms"]) == 3
    assert runner.invoke("campaigns", "report", "nope").exit_code == 2


def _write(directory, text):
    path = directory / "candidate.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_rules_page_describes_each_arm_in_words_and_an_ended_experiment_by_its_winner():
    from rules.describe import describe_rules
    running = {s.key: s.lines for s in describe_rules(experiment_rules())}["experiments"]
    assert running == ("vip-threshold: VIP at lifetime spend over $5,000 (control, 34 %), lifetime spend over $3,000 "
                       "(low, 33 %), lifetime spend over $10,000 (high, 33 %)",)
    ended = {s.key: s.lines for s in describe_rules(experiment_rules(EXPERIMENT + "    winner: low\n"))}
    assert ended["experiments"] == ("vip-threshold: ended, winner low: everyone is VIP at lifetime spend over $3,000",)
    assert "experiments" not in {s.key for s in describe_rules(parse_rules(seed_rules(), env=ENV))}
