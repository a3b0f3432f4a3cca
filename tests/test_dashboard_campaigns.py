"""The campaigns pages through Flask's test client, signed in with a read key: every campaign's measured outcome
(a campaign that works, one without a holdout, a young one), one campaign by month with its SVG chart and the same
figures in words, an unknown campaign, and a campaign name that needs escaping.

The data is generated as in tests/test_outcomes.py: customers whose only order was 100 days before an evaluation enter
Dormant at a midnight nine days before it, in two months, and reorder within their window with probability 0.30 when
sent and 0.20 when held out."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from html import unescape

import pytest
from markupsafe import escape

from rules.describe import describe_campaign
from tests.conftest import READ_KEY
from tests.dashboard_helpers import sign_in
from tests.factories import T0, order
from tests.factories import rules_text as seed_rules
from worker.api.dashboard.charts import conversion_chart, uplift_chart
from worker.api.dashboard.formats import points, share, signed_share
from worker.evaluate import evaluate_due
from worker.outcomes import Comparison, Group, Period, campaign_report
from worker.store.base import HELD_OUT
from worker.subscriptions import new_subscription

WIN_BACK = "  win-back: {on: {entered: Dormant}, webhook: n8n, holdout_percent: 10, outcome_days: 30}\n"
WELCOME = "  welcome: {on: {entered: New}, webhook: n8n}\n"
NO_HOLDOUT = "  win-back: {on: {entered: Dormant}, webhook: n8n}\n"
ODD_NAME = '<b>x</b>&"'
ODD = "  '<b>x</b>&\"': {on: {entered: Dormant}, webhook: n8n, holdout_percent: 10}\n"
# Two evaluations 35 days apart: their customers enter Dormant on 2026-01-08 and on 2026-02-12.
EVALUATED = (T0 - timedelta(days=35), T0)
MONTHS = ["2026-01", "2026-02"]
CLOSED = T0 + timedelta(days=40)  # every window of both months has closed


@pytest.fixture
def rules_text() -> str:
    return seed_rules(first_run="emit", campaigns=WIN_BACK + WELCOME)


def enter_dormant(store, rules, per_month: int) -> None:
    """`per_month` customers enter Dormant in each of MONTHS (and trigger the rules' campaigns on Dormant)."""
    for month, evaluated in enumerate(EVALUATED):
        store.upsert_orders([order(f"C{month}-{n}", f"O{month}-{n}", evaluated - timedelta(days=100))
                             for n in range(per_month)], evaluated)
        evaluate_due(store, rules, evaluated)


def reorder(store, campaign: str, sent: float, held: float, seed: int = 1) -> None:
    """Each customer who triggered `campaign` orders once in its window with probability `sent` or `held`."""
    rng = random.Random(seed)
    events = [e for e in store.list_events(None, 100_000) if e.campaign == campaign]
    store.upsert_orders([order(e.contact_id, f"R-{e.contact_id}", e.occurred_at + timedelta(days=rng.randint(1, 29),
                                                                                             hours=3), 5_000)
                         for e in events if rng.random() < (held if e.status == HELD_OUT else sent)],
                        T0 + timedelta(days=21))


def read_at(client, clock, moment):
    """The client signed in with a read key at `moment` (a session ends 12 hours after signing in, so a test that
    moves the clock weeks on signs in then)."""
    clock.now = moment
    assert sign_in(client, READ_KEY).status_code == 302
    return client


def card(html: str, name: str) -> str:
    match = re.search(rf'<section class="card campaign" data-campaign="{re.escape(str(escape(name)))}">(.*?)</section>',
                      html, re.S)
    assert match, f"no card for campaign {name!r}"
    return match.group(1)


def text(html: str) -> str:
    """What a person reads: the charts dropped, inline tags removed, others read as a space, whitespace folded."""
    inline = re.sub(r"</?(?:a|code|span|strong)\b[^>]*>", "", re.sub(r"<svg.*?</svg>", "", html, flags=re.S))
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def cells(row_html: str) -> dict[str, str]:
    """A table row's cells: the last class of each -> what it reads."""
    found = re.findall(r'<td class="([^"]+)">(.*?)</td>', row_html, re.S)
    return {css.split()[-1]: text(inner) for css, inner in found}


def row(html: str, attribute: str, value: str) -> str:
    match = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', html, re.S)
    assert match, f"no row {attribute}={value!r}"
    return match.group(1)


def dollars(cents: float) -> str:
    return f"${round(cents) / 100:,.2f}"


# the list ---------------------------------------------------------------------------------------------------------

def test_a_campaign_that_works_shows_its_uplift_with_the_interval_and_both_groups(client, store, rules, clock):
    enter_dormant(store, rules, 1500)
    reorder(store, "win-back", sent=0.30, held=0.20)

    html = read_at(client, clock, CLOSED).get("/campaigns").text
    report = campaign_report(store, rules, "win-back", CLOSED).total
    shown = card(html, "win-back")

    assert report.comparison.verdict == "uplift"
    assert describe_campaign("win-back", rules.campaigns["win-back"], "USD") in text(shown)
    assert "10 % of the customers who trigger it" in text(shown) and "30 days" in text(shown)
    assert re.search(r'<span class="badge verdict-uplift">uplift</span>', shown)
    assert "Sent customers ordered more: " + points(report.comparison.absolute) in text(shown)
    sent, held = cells(row(shown, "data-group", "sent")), cells(row(shown, "data-group", "held-out"))
    assert int(sent["customers"].replace(",", "")) + int(held["customers"].replace(",", "")) == 3000
    assert sent["conversion"] == share(report.sent.conversion) and re.fullmatch(r"(29|30|31)\.\d %", sent["conversion"])
    assert held["conversion"] == share(report.held_out.conversion) and held["conversion"].endswith(" %")
    assert sent["per-customer"] == dollars(report.sent.revenue_per_customer_cents)
    assert held["per-customer"] == dollars(report.held_out.revenue_per_customer_cents)
    assert sent["still-open"] == held["still-open"] == "0"
    low, high = report.comparison.absolute_interval
    assert f"{points(report.comparison.absolute)} points 95 % interval {points(low)} to {points(high)}" in text(shown)
    r_low, r_high = report.comparison.relative_interval
    assert (f"Relative uplift {signed_share(report.comparison.relative)} 95 % interval {signed_share(r_low)} to "
            f"{signed_share(r_high)}") in text(shown)
    assert 'href="/campaigns/win-back"' in shown


def test_a_campaign_without_holdout_says_how_to_set_one_up_instead_of_a_table(reader):
    shown = card(reader.get("/campaigns").text, "welcome")

    assert 'data-setup="holdout"' in shown and "<table class=\"outcomes\"" not in shown
    assert "No control group" in text(shown) and "holdout_percent: 10" in text(shown)
    assert "nobody (holdout_percent is 0)" in text(shown)


def test_a_campaign_says_where_it_is_sent_the_n8n_subscriptions_included(reader, store, clock):
    store.add_subscription(new_subscription("https://n8n.example.com/webhook/x", ["welcome"],
                                            'n8n workflow "Welcome", node "Segment Worker Trigger"', clock()))
    page = reader.get("/campaigns").text

    welcome, win_back = unescape(text(card(page, "welcome"))), text(card(page, "win-back"))
    assert 'subscription: n8n workflow "Welcome", node "Segment Worker Trigger"' in welcome
    assert "Sent to webhook" in welcome and "subscription" not in win_back


@pytest.mark.parametrize("rules_text", [seed_rules(first_run="emit", campaigns=NO_HOLDOUT)], ids=["no holdout"])
def test_a_campaign_without_holdout_still_says_how_its_sent_customers_ordered(client, store, rules, clock):
    enter_dormant(store, rules, 50)
    reorder(store, "win-back", sent=0.30, held=0.0)
    report = campaign_report(store, rules, "win-back", CLOSED).total

    reader = read_at(client, clock, CLOSED)
    shown = card(reader.get("/campaigns").text, "win-back")

    assert 'data-setup="holdout"' in shown and "verdict" not in shown
    assert (f"Sent so far: 100 customers whose 30-day window has closed, {share(report.sent.conversion)} of them "
            "ordered in it") in text(shown)
    detail = reader.get("/campaigns/win-back").text
    assert len(re.findall(r'<rect class="bar [^"]*" data-group="sent"', detail)) == 2
    assert 'data-group="held out"' not in detail and 'id="uplift-chart"' not in detail


def test_a_holdout_set_back_to_0_still_compares_the_customers_drawn_while_it_was_set(client, store, rules, clock,
                                                                                    rules_file):
    enter_dormant(store, rules, 200)
    rules_file.write_text(seed_rules(first_run="emit", campaigns=NO_HOLDOUT + WELCOME))

    shown = card(read_at(client, clock, CLOSED).get("/campaigns").text, "win-back")

    assert "nobody (holdout_percent is 0)" in text(shown) and 'data-setup="holdout"' not in shown
    assert 'data-note="holdout-removed"' in shown and "data-verdict=" in shown


def test_a_young_campaign_counts_open_windows_then_says_too_few_customers_yet(reader, store, rules, clock):
    store.upsert_orders([order(f"C-{n}", f"O-{n}", T0 - timedelta(days=100)) for n in range(150)], T0)
    evaluate_due(store, rules, T0)
    report = campaign_report(store, rules, "win-back", T0).total

    young = card(reader.get("/campaigns").text, "win-back")
    assert 'data-verdict="no holdout group"' in young
    assert (f"No held-out customer's 30-day window has closed yet ({report.open_held_out} still open)"
            in text(young).replace("&#39;", "'"))
    assert cells(row(young, "data-group", "sent"))["still-open"] == str(report.open_sent)

    later = card(read_at(reader, clock, CLOSED).get("/campaigns").text, "win-back")
    more_sent, more_held = campaign_report(store, rules, "win-back", CLOSED).total.comparison.more_needed
    assert '<span class="badge verdict-waiting">too few customers yet</span>' in later
    assert f"about {more_sent:,} more sent and {more_held:,} more held out are needed" in text(later)


def test_no_effect_says_how_many_more_customers_it_takes(client, store, rules, clock):
    enter_dormant(store, rules, 1500)
    reorder(store, "win-back", sent=0.25, held=0.25, seed=3)
    reader = read_at(client, clock, CLOSED)
    comparison = campaign_report(store, rules, "win-back", CLOSED).total.comparison
    assert comparison.verdict == "no measurable effect"

    shown = card(reader.get("/campaigns").text, "win-back")

    assert '<span class="badge verdict-none">no measurable effect</span>' in shown
    assert (f"About {comparison.more_needed[0]:,} more sent and {comparison.more_needed[1]:,} more held-out customers "
            "with closed windows are needed to detect an uplift of 5 points.") in text(shown)


# one campaign -------------------------------------------------------------------------------------------------------

def test_the_detail_page_has_a_bar_per_month_per_group_and_the_same_figures_in_words(client, store, rules, clock):
    enter_dormant(store, rules, 400)
    reorder(store, "win-back", sent=0.30, held=0.20)
    report = campaign_report(store, rules, "win-back", CLOSED)
    assert [m.label for m in report.months] == MONTHS

    html = read_at(client, clock, CLOSED).get("/campaigns/win-back").text
    chart = re.search(r'<svg class="campaign-chart" id="conversion-chart".*?</svg>', html, re.S).group(0)

    assert 'role="img"' in chart and '<title id="conversion-chart-title">' in chart
    assert ('<desc id="conversion-chart-desc">Conversion of sent and held-out customers per month, 2026-01 to '
            "2026-02") in chart
    for month, period in zip(MONTHS, report.months, strict=True):
        group = re.search(rf'<g class="month" data-month="{month}">(.*?)</g>', chart, re.S).group(1)
        bars = re.findall(r'<rect class="bar (group-sent|group-held)" data-group="([^"]+)"', group)
        assert bars == [("group-sent", "sent"), ("group-held", "held out")], month
        assert (f"<title>{month}: sent {share(period.sent.conversion)} ordered ({period.sent.converted} of "
                f"{period.sent.customers}), held out {share(period.held_out.conversion)} ordered "
                f"({period.held_out.converted} of {period.held_out.customers})</title>") in group
        figures = cells(row(html, "data-month", month))
        assert figures["sent-customers"] == f"{period.sent.customers:,}"
        assert figures["sent-conversion"] == share(period.sent.conversion)
        assert figures["held-conversion"] == share(period.held_out.conversion)
        assert figures["sent-per-customer"] == dollars(period.sent.revenue_per_customer_cents)
        assert figures["uplift"].startswith(points(period.comparison.absolute))
        assert figures["still-open"] == "0 / 0"
    assert re.findall(r'<text class="tick" [^>]*>(\w{3} \d{4})</text>', chart) == ["Jan 2026", "Feb 2026"]
    assert "Ordered within the window" in chart and "Month the customers triggered the campaign (UTC)" in chart
    whiskers = re.findall(r'<g class="whisker" data-month="([^"]+)">', html)
    assert whiskers == MONTHS
    assert " style=" not in html and "<script" not in html  # the Content-Security-Policy allows neither inline
    assert 'aria-current="page">Campaigns</a>' in html


@pytest.mark.parametrize("rules_text", [seed_rules(first_run="emit", campaigns=WIN_BACK) + "currency: EUR\n"],
                         ids=["euro"])
def test_money_is_in_the_rules_currency(client, store, rules, clock):
    enter_dormant(store, rules, 100)
    reorder(store, "win-back", sent=0.5, held=0.5)
    per = campaign_report(store, rules, "win-back", CLOSED).total.sent.revenue_per_customer_cents

    shown = card(read_at(client, clock, CLOSED).get("/campaigns").text, "win-back")

    assert cells(row(shown, "data-group", "sent"))["per-customer"] == f"€{round(per) / 100:,.2f}"


def test_an_unknown_campaign_is_a_404_page(reader):
    response = reader.get("/campaigns/nope")

    assert response.status_code == 404
    assert "No campaign is named &#39;nope&#39;" in response.text and "win-back, welcome" in response.text


@pytest.mark.parametrize("rules_text", [seed_rules(first_run="emit", campaigns=ODD)], ids=["odd name"])
def test_a_campaign_name_is_escaped_everywhere(client, store, rules, clock):
    enter_dormant(store, rules, 100)
    reader = read_at(client, clock, CLOSED)

    listed = reader.get("/campaigns").text
    detail = reader.get("/campaigns/%3Cb%3Ex%3C/b%3E&%22")
    missing = reader.get("/campaigns/%3Cscript%3Ealert(1)%3C/script%3E")

    assert detail.status_code == 200 and missing.status_code == 404
    for html in (listed, detail.text, missing.text):
        assert "<b>x</b>" not in html and "<script>alert" not in html
    assert "&lt;b&gt;x&lt;/b&gt;&amp;&#34;" in listed and 'href="/campaigns/%3Cb%3Ex%3C/b%3E&amp;%22"' in listed
    assert "<h1>&lt;b&gt;x&lt;/b&gt;&amp;&#34;</h1>" in detail.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in missing.text


def test_the_pages_need_a_session(client):
    assert client.get("/campaigns").status_code == 302
    assert client.get("/campaigns/win-back").status_code == 302


# the chart's geometry and the figures' words --------------------------------------------------------------------------

def period(label: str, sent: tuple[int, int] | None, held: tuple[int, int] | None) -> Period:
    group = lambda counts: Group() if counts is None else Group(counts[0], counts[1])  # noqa: E731
    return Period(label, group(sent), group(held), 0, 0, Comparison("too few customers yet"))


def test_a_long_campaign_labels_every_few_months_and_keeps_values_in_titles():
    months = [period(f"{2024 + m // 12}-{m % 12 + 1:02d}", (100, 30), (10, 2)) for m in range(24)]

    chart = conversion_chart(months)

    assert len(chart.months) == 24 and all(len(m.bars) == 2 for m in chart.months)
    labels = [m.label for m in chart.months if m.label]
    assert labels[0] == "Jan 2024" and 4 <= len(labels) < 24
    assert not chart.show_values  # bars this narrow carry no text; their titles and the table do
    assert chart.y_ticks[-1][1] == "30 %"  # the first multiple of 10 % above the highest (30 %)


def test_a_month_without_a_closed_window_has_no_bar_and_no_window_at_all_has_no_chart():
    chart = conversion_chart([period("2026-01", (40, 10), None), period("2026-02", (40, 12), (5, 1))])

    assert chart.months[0].bars[1].conversion is None and chart.months[0].bars[1].height == 0
    assert chart.months[0].title == "2026-01: sent 25.0 % ordered (10 of 40), held out no closed window yet"
    assert conversion_chart([period("2026-01", None, None)]) is None
    assert uplift_chart([period("2026-01", None, None)]) is None


@pytest.mark.parametrize(("value", "as_share"), [(0.296, "29.6 %"), (0.2, "20.0 %"), (0.0, "0.0 %"), (None, "—")])
def test_a_share_reads_as_a_percentage(value, as_share):
    assert share(value) == as_share


@pytest.mark.parametrize(("difference", "as_points", "as_relative"), [
    (0.087, "+8.7", "+9 %"), (-0.087, "-8.7", "-9 %"), (-0.0004, "0.0", "0 %"), (0.4217, "+42.2", "+42 %"),
    (None, "—", "—"),
])
def test_a_difference_reads_in_signed_points_and_a_relative_one_in_whole_percent(difference, as_points, as_relative):
    assert (points(difference), signed_share(difference)) == (as_points, as_relative)
