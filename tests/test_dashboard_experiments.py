"""The experiments page through Flask's test client, signed in with a read key: one threshold experiment per arm
(every customer drawn into it against the first arm, with the verdict; who entered the segment, what they ordered in
their window, with 95 % intervals and a chart), before its first run, before its windows close, after its winner
ended it; an unknown experiment; and the experiments on the campaigns list.

The data: customers whose one order puts their lifetime spend at $4,000, $7,000 or $12,000 are evaluated a day after
the experiment started, so each enters VIP if its arm's threshold (low 3000, control 5000, high 10000) is below its
spend; some order again within their 30-day window, some only after it. For the whole arms, as in
tests/test_experiments.py: customers from before the start, of whom every VIP orders again with probability 0.8."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest

from rules import parse_rules
from rules.holdouts import experiment_arm
from tests.conftest import READ_KEY
from tests.dashboard_helpers import sign_in
from tests.factories import ENV, T0, order
from tests.factories import rules_text as seed_rules
from worker.evaluate import evaluate_due
from worker.experiments import experiment_report

NAME = "vip-threshold"
ARMS = """\
  vip-threshold:
    segment: VIP
    arms:
      control: {value: 5000, share: 34}
      low: {value: 3000, share: 33}
      high: {value: 10000, share: 33}
"""
DORMANT = """\
  dormant-days:
    segment: Dormant
    arms:
      short: {value: 60, share: 50}
      long: {value: 120, share: 50}
"""
RUNNING = seed_rules() + "experiments:\n" + ARMS
ENDED_BY_LOW = RUNNING + "    winner: low\n"
THRESHOLDS = {"control": 5000, "low": 3000, "high": 10000}
TIERS = (4_000, 7_000, 12_000)  # lifetime spend in dollars: over low's threshold only, also control's, every arm's

STARTED = T0 - timedelta(days=70)  # the first evaluation run under the experiment
ENTERED = STARTED + timedelta(days=1)  # the run that moves the customers into VIP
CLOSED = ENTERED + timedelta(days=40)  # every 30-day window has closed


@pytest.fixture
def rules_text() -> str:
    return RUNNING


def reordered(n: int) -> list[tuple[int, int]]:
    """Customer n's orders after entering, as (days after entering, dollars): the first two within the window, the
    last (day 35) after it."""
    orders = []
    if n % 4 == 0:
        orders.append((10, 80))
    if n % 10 == 0:
        orders.append((20, 20))
    if n % 7 == 0:
        orders.append((35, 500))
    return orders


def run_experiment(store, rules, customers: int, after: bool = True) -> None:
    """The experiment starts on an empty store, `customers` order (customer n at TIERS[n % 3]) and are evaluated
    into their arms' segments, then (with `after`) order again and are evaluated once more."""
    evaluate_due(store, rules, STARTED)
    store.upsert_orders([order(f"C{n}", f"O{n}", ENTERED - timedelta(hours=1), TIERS[n % 3] * 100)
                         for n in range(customers)], ENTERED)
    evaluate_due(store, rules, ENTERED)
    if not after:
        return
    later = ENTERED + timedelta(days=36)
    store.upsert_orders([order(f"C{n}", f"R{n}-{days}", ENTERED + timedelta(days=days), dollars * 100)
                         for n in range(customers) for days, dollars in reordered(n)], later)
    evaluate_due(store, rules, later)


def arm_of(rules, n: int) -> str:
    return experiment_arm(rules.holdout_salt, NAME, f"C{n}", rules.experiments[NAME].shares)


def entrants(rules, customers: int, arm: str) -> list[int]:
    return [n for n in range(customers) if arm_of(rules, n) == arm and TIERS[n % 3] > THRESHOLDS[arm]]


def read_at(client, clock, moment):
    """The client signed in with a read key at `moment` (a session ends 12 hours after signing in)."""
    clock.now = moment
    assert sign_in(client, READ_KEY).status_code == 302
    return client


def text(html: str) -> str:
    """What a person reads: the charts dropped, inline tags removed, others read as a space, whitespace folded."""
    inline = re.sub(r"</?(?:a|code|span|strong)\b[^>]*>", "", re.sub(r"<svg.*?</svg>", "", html, flags=re.S))
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def cells(html: str, arm: str, row: str = "data-arm") -> dict[str, str]:
    """An arm's row of the entrants' table (of the whole arms' with row="data-whole-arm"): the class of each cell ->
    what it reads."""
    match = re.search(rf'<tr {row}="{re.escape(arm)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for arm {arm!r}"
    return {css.split()[-1]: text(inner) for css, inner in re.findall(r'<td class="([^"]+)">(.*?)</td>', match.group(1),
                                                                       re.S)}


def fact(html: str, key: str) -> str:
    match = re.search(rf'<tr data-fact="{key}">(.*?)</tr>', html, re.S)
    assert match, f"no fact {key!r}"
    return text(match.group(1))


def with_interval(figure, shown) -> str:
    return f"{shown(figure.value)} ({shown(figure.low)} to {shown(figure.high)})"


def percent(x: float) -> str:
    return f"{x * 100:.1f} %"


def dollars(x: float) -> str:
    return f"${x:,.2f}"


def signed_dollars(x: float) -> str:
    return ("+" if x > 0 else "-") + dollars(abs(x))


def run_whole_arms(store, rules, customers: int = 1500) -> list[str]:
    """Customers from before the start (lifetime spend $3,000 to $12,000) are evaluated as the experiment starts at
    T0; five days later each VIP orders $500 again with probability 0.8, nobody else orders: the low threshold makes
    more VIPs, so its arm earns more per customer, the high one less. Returns who ordered again."""
    import random
    rng = random.Random(3)
    store.upsert_orders([order(f"W-{n}", f"W-{n}-1", T0 - timedelta(days=40), rng.randint(300_000, 1_200_000))
                         for n in range(customers)], T0)
    evaluate_due(store, rules, T0)
    vips = [r.contact_id for batch in store.iter_customers() for r in batch if r.segment == "VIP"]
    again = [c for c in vips if rng.random() < 0.8]
    store.upsert_orders([order(c, f"{c}-2", T0 + timedelta(days=5), 50_000) for c in again], T0 + timedelta(days=5))
    return again


def drawn_arm(rules, contact_id: str) -> str:
    return experiment_arm(rules.holdout_salt, NAME, contact_id, rules.experiments[NAME].shares)


# the page -----------------------------------------------------------------------------------------------------------

def test_the_whole_arms_compare_every_customer_drawn_and_name_the_threshold_that_earns_more(client, store, rules,
                                                                                             clock):
    again = run_whole_arms(store, rules)
    seen = T0 + timedelta(days=10)

    html = read_at(client, clock, seen).get(f"/experiments/{NAME}").text
    whole = {t.arm: t for t in experiment_report(store, rules, NAME, seen).whole}

    drawn = Counter(drawn_arm(rules, f"W-{n}") for n in range(1500))
    bought = Counter(drawn_arm(rules, c) for c in again)
    for arm in THRESHOLDS:
        shown = cells(html, arm, row="data-whole-arm")
        assert shown["customers"] == f"{drawn[arm]:,}" and drawn[arm] > 400
        assert shown["buyers"] == f"{bought[arm]} {with_interval(whole[arm].conversion, percent)}"
        assert shown["revenue"] == dollars(bought[arm] * 500)
        assert shown["revenue-per-customer"] == with_interval(whole[arm].spend_per_customer, dollars)
        assert shown["revenue-per-customer"].startswith(dollars(bought[arm] * 500 / drawn[arm]) + " (")
    assert cells(html, "control", row="data-whole-arm")["difference"] == "—"
    assert "the first arm: the others are compared with it" in cells(html, "control", row="data-whole-arm")["verdict"]
    low, high = cells(html, "low", row="data-whole-arm"), cells(html, "high", row="data-whole-arm")
    assert low["verdict"] == "more revenue per customer" and high["verdict"] == "less revenue per customer"
    assert '<span class="badge verdict-uplift">more revenue per customer</span>' in html
    assert '<span class="badge verdict-negative">less revenue per customer</span>' in html
    assert low["difference"] == with_interval(whole["low"].versus.difference, signed_dollars)
    assert low["difference"].startswith("+$") and high["difference"].startswith("-$")
    page = text(html)
    assert "Which threshold earns more: every customer of each arm" in page
    assert "compared with control, the first arm listed" in page
    assert "whether or not the arm's threshold moved them" in page and "fair comparison of the thresholds" in page
    assert html.index('id="whole-table"') < html.index('id="arm-table"')  # above the entrants' table
    assert 'aria-current="page">Campaigns</a>' in html


def test_before_the_experiment_starts_there_is_no_whole_arm_table(reader):
    html = reader.get(f"/experiments/{NAME}").text

    assert fact(html, "status") == "Status not started yet: it starts at the next evaluation run."
    assert 'id="whole-table"' not in html and "data-whole-arm" not in html
    assert "Nothing to compare yet: the experiment has not started." in text(html)


def test_each_arm_shows_its_entrants_and_what_they_ordered_in_the_window(client, store, rules, clock):
    customers = 450
    run_experiment(store, rules, customers)

    html = read_at(client, clock, CLOSED).get(f"/experiments/{NAME}").text
    report = {a.arm: a for a in experiment_report(store, rules, NAME, CLOSED).arms}

    assert fact(html, "segment") == "Segment VIP"
    assert "VIP when totalSpend gt the arm's value" in fact(html, "condition")
    assert fact(html, "status") == f"Status running since {STARTED.strftime('%Y-%m-%d %H:%M')} UTC."
    assert fact(html, "window").startswith("Outcome window 30 days")
    for arm, value in THRESHOLDS.items():
        who = entrants(rules, customers, arm)
        within = [(n, [d for days, d in reordered(n) if days <= 30]) for n in who]
        shown = cells(html, arm)
        assert shown["condition"] == f"totalSpend gt {value} lifetime spend over ${value:,}"
        assert shown["share"] == ("34 %" if arm == "control" else "33 %")
        assert shown["entered"] == shown["measured"] == str(len(who)) and len(who) >= 30
        assert shown["still-open"] == "0"
        assert shown["conversion"].startswith(percent(sum(1 for _, d in within if d) / len(who)) + " (")
        assert shown["orders-per-customer"].startswith(f"{sum(len(d) for _, d in within) / len(who):.2f} (")
        assert shown["spend-per-customer"].startswith(dollars(sum(sum(d) for _, d in within) / len(who)) + " (")
        assert shown["conversion"] == with_interval(report[arm].conversion, percent)
        assert shown["spend-per-customer"] == with_interval(report[arm].spend_per_customer, dollars)
        assert f'data-note="{arm}"' not in html  # every arm has 30 closed windows
    # a lower threshold lets in customers a higher one keeps out: every low arm customer entered, a third of high's
    assert len(entrants(rules, customers, "low")) == sum(1 for n in range(customers) if arm_of(rules, n) == "low")
    assert {TIERS[n % 3] for n in entrants(rules, customers, "high")} == {12_000}
    assert "different customers" in text(html) and "at least 30 closed windows" in text(html)


def test_the_chart_draws_each_arms_spend_per_customer_with_its_interval(client, store, rules, clock):
    run_experiment(store, rules, 450)

    html = read_at(client, clock, CLOSED).get(f"/experiments/{NAME}").text
    report = {a.arm: a for a in experiment_report(store, rules, NAME, CLOSED).arms}

    svg = re.search(r'<svg class="campaign-chart" id="spend-chart".*?</svg>', html, re.S).group(0)
    bars = dict(re.findall(r'<g class="whisker" data-arm="(\w+)">.*?<rect [^>]*height="([\d.]+)"', svg, re.S))
    assert set(bars) == set(THRESHOLDS)
    by_spend = sorted(report, key=lambda arm: report[arm].spend_per_customer.value)
    assert sorted(bars, key=lambda arm: float(bars[arm])) == by_spend  # taller bar, more spend
    assert svg.count('class="interval"') == 3 * 3  # a whisker (line and two caps) per arm
    spend = report["low"].spend_per_customer
    assert (f"<title>low: {dollars(spend.value)} ({dollars(spend.low)} to {dollars(spend.high)}) per customer, "
            f"{report['low'].measured} closed windows</title>") in svg
    assert " style=" not in html and "<script" not in html  # the Content-Security-Policy allows neither inline


def test_before_the_windows_close_the_entrants_are_still_open_and_too_few(client, store, rules, clock):
    run_experiment(store, rules, 60, after=False)

    html = read_at(client, clock, ENTERED + timedelta(days=5)).get(f"/experiments/{NAME}").text

    for arm in THRESHOLDS:
        shown = cells(html, arm)
        assert shown["entered"] == shown["still-open"] == str(len(entrants(rules, 60, arm))) != "0"
        assert shown["measured"] == "0" and shown["conversion"] == shown["spend-per-customer"] == "—"
        assert (f"{arm}: too few customers yet: 0 closed windows, at least 30 are needed for the intervals to mean "
                "much.") in text(html)
    assert 'id="spend-chart"' not in html
    assert "No outcome window has closed yet" in text(html)


@pytest.mark.parametrize("rules_text", [RUNNING + DORMANT], ids=["two experiments"])
def test_an_experiment_before_its_first_run_says_not_started(reader):
    html = reader.get("/experiments/dormant-days").text

    assert fact(html, "status") == "Status not started yet: it starts at the next evaluation run."
    assert "Dormant when lastOrderDaysAgo gt the arm's value" in fact(html, "condition")
    assert cells(html, "short")["condition"] == "lastOrderDaysAgo gt 60 no order for more than 60 days"
    assert cells(html, "long")["condition"] == "lastOrderDaysAgo gt 120 no order for more than 120 days"
    assert cells(html, "long")["entered"] == "0" and cells(html, "long")["share"] == "50 %"
    assert "No outcome window has closed yet" not in text(html)  # nothing is running to wait for


@pytest.mark.parametrize("rules_text", [ENDED_BY_LOW], ids=["winner low"])
def test_an_ended_experiment_names_its_winner_and_keeps_the_entrants_of_its_run(client, store, rules, clock):
    running = parse_rules(RUNNING, env=ENV)
    run_experiment(store, running, 90, after=False)
    ended = ENTERED + timedelta(days=2)
    evaluate_due(store, rules, ended)  # the winner ends it: everyone is classified at 3000 from this run on

    html = read_at(client, clock, CLOSED).get(f"/experiments/{NAME}").text

    assert fact(html, "status") == (f"Status ended {ended.strftime('%Y-%m-%d %H:%M')} UTC with winner low: everyone "
                                    "is classified at 3000 (lifetime spend over $3,000).")
    assert '<span class="badge verdict-uplift">winner</span>' in re.search(r'<tr data-arm="low">.*?</tr>', html,
                                                                          re.S).group(0)
    for arm in THRESHOLDS:
        assert cells(html, arm)["entered"] == str(len(entrants(running, 90, arm)))


def test_an_unknown_experiment_is_a_404_page_naming_the_experiments(reader):
    response = reader.get("/experiments/nope")

    assert response.status_code == 404
    assert "No experiment is named &#39;nope&#39;" in response.text and "(experiments: vip-threshold)" in response.text


def test_the_page_needs_a_session(client):
    assert client.get(f"/experiments/{NAME}").status_code == 302


# the campaigns list -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rules_text", [RUNNING + DORMANT], ids=["two experiments"])
def test_the_campaigns_list_links_each_experiment_with_its_status(client, store, rules, clock):
    evaluate_due(store, rules, STARTED)
    listed = read_at(client, clock, CLOSED).get("/campaigns").text

    section = re.search(r'<section class="card" id="experiments">(.*?)</section>', listed, re.S).group(1)
    assert '<a href="/experiments/vip-threshold">vip-threshold</a>' in section
    assert '<a href="/experiments/dormant-days">dormant-days</a>' in section
    assert (f"vip-threshold VIP when totalSpend gt 5000 / 3000 / 10000 running since "
            f"{STARTED.strftime('%Y-%m-%d %H:%M')} UTC.") in text(section)
    assert "dormant-days Dormant when lastOrderDaysAgo gt 60 / 120 running since" in text(section)


@pytest.mark.parametrize("rules_text", [RUNNING + DORMANT], ids=["two experiments"])
def test_the_campaigns_list_says_an_experiment_has_not_started(reader):
    section = re.search(r'<section class="card" id="experiments">(.*?)</section>', reader.get("/campaigns").text,
                        re.S).group(1)

    assert "dormant-days Dormant when lastOrderDaysAgo gt 60 / 120 not started yet" in text(section)


@pytest.mark.parametrize("rules_text", [seed_rules()], ids=["no experiments"])
def test_the_campaigns_list_has_no_experiments_section_without_experiments(reader):
    assert 'id="experiments"' not in reader.get("/campaigns").text
