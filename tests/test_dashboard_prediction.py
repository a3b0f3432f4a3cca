"""The churn and value model on the dashboard, through Flask's test client: the overview's churn bands and predicted
value per segment (or why there are none and what to do), a customer's predicted figures, and old or partial stored
summaries shown as far as they go.

The model is the CDNOW one saved straight into the store with a summary written here, so the page shows exactly
the figures the test chose, and a customer's figures are the classifier's."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from rules import Classifier
from tests.conftest import NOW, RULES_YAML
from tests.factories import order
from worker.api.dashboard.views import ChurnRow, percent
from worker.prediction import FAILED, FITTED, NOT_ELIGIBLE, UNEVALUATED, SavedModel, load_model, settings_digest
from worker.store.base import PREDICTION_MODEL_KEY

PARAMS = {"bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
          "gammaGamma": {"p": 6.25, "q": 3.74, "v": 15.44}}
FITTED_AT = NOW - timedelta(hours=3)
SUMMARY = {
    "bands": {"medium": "0.5", "high": "0.8"},
    "horizonDays": 90,
    "segments": {  # in no particular order: the page follows the rules' (VIP, Dormant, New, Active)
        "Active": {"customers": 5, "churnRiskBands": {"Low": 1, "Medium": 1, "High": 3},
                   "predictedClv12m": "1000.00", "expectedOrders": 2.0},
        "Retired": {"customers": 2, "churnRiskBands": {"Low": 0, "Medium": 0, "High": 2},
                    "predictedClv12m": "0.00", "expectedOrders": 0.1},
        "VIP": {"customers": 10, "churnRiskBands": {"Low": 6, "Medium": 3, "High": 1},
                "predictedClv12m": "9000.00", "expectedOrders": 12.5},
        "Dormant": {"customers": 4, "churnRiskBands": {"Low": 0, "Medium": 1, "High": 3},
                    "predictedClv12m": "0.00", "expectedOrders": 0.4},
    },
}
REPORT = {"customers": 21, "repeatCustomers": 12, "asOf": "2026-02-21T09:00:00.000Z"}
DISABLED_RULES = RULES_YAML + "prediction: {enabled: false}\n"


def save_model(store, rules, status: str = FITTED, reason: str | None = None, summary: dict | None = None,
               params: dict | None = PARAMS) -> None:
    checked_at = NOW - timedelta(minutes=10) if status == FAILED else FITTED_AT
    fitted_at = FITTED_AT if params else None
    saved = SavedModel(status, checked_at, reason, settings_digest(rules.prediction), fitted_at, params,
                       REPORT if params else {}, SUMMARY if summary is None else summary)
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps(saved.as_json()))


def ingest(store, contact_id: str, days_ago: tuple[int, ...], cents: int = 12_000, status: str | None = None):
    store.upsert_orders([order(contact_id, f"{contact_id}-{n}", NOW - timedelta(days=days), cents, status=status)
                         for n, days in enumerate(days_ago)], NOW)


def text(html: str) -> str:
    """Tags (and the bars' titles) dropped, whitespace folded: what a person reads."""
    return " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", "", html, flags=re.S)).split())


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section class="card" id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"no #{section_id} card"
    return match.group(1)


def churn_rows(html: str) -> dict[str, dict[str, str]]:
    """The churn table's body rows, in page order: segment -> {cell class: text}."""
    rows = {}
    for segment, inner in re.findall(r'<tr data-segment="([^"]+)">(.*?)</tr>', section(html, "prediction"), re.S):
        cells = re.findall(r'<td class="([^"]+)">(.*?)</td>', inner, re.S)
        rows[segment] = {css.split()[-1]: text(content) for css, content in cells}
    return rows


def predicted(html: str, metric: str) -> str:
    match = re.search(rf'<div data-predicted="{metric}"><dt>[^<]*</dt><dd>(.*?)</dd>', html, re.S)
    assert match, f"no predicted {metric}"
    return text(match.group(1))


def classification(store, rules, contact_id: str) -> Any:
    return Classifier(rules, None, load_model(store, rules)).classify(store.get_customer(contact_id).facts, NOW)


# --- the overview: no model -----------------------------------------------------------------------------------

def test_without_a_model_the_overview_says_why_and_how_to_fit_one(reader):
    card = text(section(reader.get("/").text, "prediction"))

    assert "No churn predictions yet: the model has not been fitted." in card
    assert "The scheduler fits it once a day; python -m worker model fit fits it now." in card


def test_a_model_not_eligible_yet_shows_the_reason(reader, store, rules):
    reason = "predictions need at least 500 customers with an order (there are 21)"
    save_model(store, rules, NOT_ELIGIBLE, reason, summary={}, params=None)

    card = text(section(reader.get("/").text, "prediction"))

    assert f"No churn predictions yet: {reason}. The scheduler tries again once a day" in card
    assert "<table" not in section(reader.get("/").text, "prediction")


def test_a_failed_first_fit_shows_the_reason_and_no_table(reader, store, rules):
    save_model(store, rules, FAILED, "the purchase model did not converge (too many iterations)", summary={},
               params=None)

    html = reader.get("/").text

    assert "No churn predictions yet: the purchase model did not converge (too many iterations)." in text(
        section(html, "prediction"))
    assert "<table" not in section(html, "prediction")


@pytest.mark.parametrize("rules_text", [DISABLED_RULES])
def test_with_predictions_disabled_both_pages_say_so(reader, store, rules):
    save_model(store, rules)  # a model fitted before they were turned off is not shown
    ingest(store, "C-1", (60, 30, 5))

    for path in ("/", "/customers/C-1"):
        html = reader.get(path).text
        assert 'id="no-prediction">No churn predictions: <code>prediction.enabled</code> is false in rules.yaml' \
               in html, path
        assert "<table class=\"churn\"" not in html and 'data-predicted="churnRisk"' not in html, path


# --- the overview: a fitted model -----------------------------------------------------------------------------

def test_the_overview_shows_churn_bands_and_predicted_value_per_segment_in_the_rules_order(reader, store, rules):
    save_model(store, rules)

    rows = churn_rows(reader.get("/").text)

    assert list(rows) == ["VIP", "Dormant", "Active", "Retired"], "the rules' order, then segments no longer in them"
    assert rows["VIP"] == {"customers": "10", "band-low-count": "6", "band-medium-count": "3",
                           "band-high-count": "1", "mix": "", "value": "$9,000.00", "value-share": "90.0%"}
    assert rows["Active"]["value"] == "$1,000.00" and rows["Active"]["value-share"] == "10.0%"
    assert rows["Retired"]["value-share"] == "0.0%"


def test_each_row_has_a_bar_of_its_bands_with_the_counts_in_words(reader, store, rules):
    save_model(store, rules)

    html = section(reader.get("/").text, "prediction")

    vip = re.search(r'<tr data-segment="VIP">(.*?)</tr>', html, re.S).group(1)
    assert 'aria-label="Low 6 (60%), Medium 3 (30%), High 1 (10%)"' in vip
    assert re.findall(r'<rect class="band-(\w+)" x="([\d.]+)" y="0" width="([\d.]+)"', vip) == [
        ("low", "0.0", "60.0"), ("medium", "60.0", "30.0"), ("high", "90.0", "10.0")]
    for header in ("Segment", "Customers", "Low", "Medium", "High", "Predicted 12-month value", "Share of value"):
        assert re.search(rf'<th scope="col"[^>]*>{header}</th>', html), header


def test_the_total_row_adds_up_the_segments(reader, store, rules):
    save_model(store, rules)

    html = section(reader.get("/").text, "prediction")

    total = re.search(r'<tfoot>\s*<tr data-total="All segments">(.*?)</tr>', html, re.S).group(1)
    assert text(total) == "All segments 21 7 5 9 $10,000.00 100.0%"


def test_the_fit_line_says_when_on_how_many_what_churn_risk_means_and_the_band_cuts(reader, store, rules):
    save_model(store, rules)

    line = text(re.search(r'<p class="muted" id="prediction-fit">(.*?)</p>', reader.get("/").text, re.S).group(1))

    assert line.startswith("Fitted 2026-02-21 09:00 UTC (3 h 0 min ago) on 21 customers with orders.")
    assert "Churn risk is the chance of no order in the next 90 days: Low below 50%, Medium from 50%, " \
           "High from 80%." in line
    assert "Figures are as of the fit; the scheduler fits the model again once a day." in line


def test_the_band_cuts_are_the_ones_the_summary_was_counted_with(reader, store, rules):
    save_model(store, rules, summary={**SUMMARY, "bands": {"medium": "0.6", "high": "0.85"}, "horizonDays": 120})

    line = text(section(reader.get("/").text, "prediction"))

    assert "no order in the next 120 days: Low below 60%, Medium from 60%, High from 85%." in line


def test_a_failed_refit_keeps_the_last_figures_with_a_muted_note(reader, store, rules):
    save_model(store, rules, FAILED, "the purchase model did not converge (too many iterations)")

    html = reader.get("/").text

    note = re.search(r'<p class="muted" id="prediction-failure">(.*?)</p>', html, re.S)
    assert note, "a muted note under the fit line"
    assert text(note.group(1)) == ("The last refit failed (2026-02-21 11:50 UTC): the purchase model did not "
                                   "converge (too many iterations). These figures are the last good fit's, still in "
                                   "use.")
    assert churn_rows(html)["VIP"]["value"] == "$9,000.00"


def test_a_fitted_model_shows_no_failure_note(reader, store, rules):
    save_model(store, rules)

    assert 'id="prediction-failure"' not in reader.get("/").text


def test_customers_not_evaluated_at_the_fit_come_last_and_are_named_for_people(reader, store, rules):
    segments = {**SUMMARY["segments"], UNEVALUATED: {"customers": 3, "churnRiskBands": {"Low": 3, "Medium": 0,
                                                                                         "High": 0},
                                                     "predictedClv12m": "150.00"}}
    save_model(store, rules, summary={**SUMMARY, "segments": segments})

    html = reader.get("/").text

    assert list(churn_rows(html))[-1] == UNEVALUATED
    assert '<span class="muted">Not evaluated yet</span>' in html


# --- old or partial stored summaries --------------------------------------------------------------------------

@pytest.mark.parametrize("summary", [
    {},
    {"segments": {}},
    {"segments": []},
    {"segments": {"VIP": {}}},
    {"segments": {"VIP": "junk", "New": None}},
    {"bands": "junk", "horizonDays": "ninety", "segments": {"VIP": {"customers": 3}}},
    {"bands": {"medium": "NaN", "high": None}, "segments": {"VIP": {"churnRiskBands": {"Low": 2, "High": "x"}}}},
    {"segments": {"VIP": {"customers": 1e400, "predictedClv12m": "lots", "churnRiskBands": [1, 2, 3]}}},
    {"segments": {"VIP": {"predictedClv12m": "Infinity"}, "New": {"predictedClv12m": -5}}},
    {"segments": {"VIP": {"customers": -1, "churnRiskBands": {"Low": 1, "Medium": -1, "High": 0}}}},
])
def test_a_partial_summary_shows_what_is_there_and_never_fails(reader, store, rules, summary):
    save_model(store, rules, summary=summary)

    response = reader.get("/")

    assert response.status_code == 200
    assert "Fitted 2026-02-21 09:00 UTC" in response.text


def test_missing_figures_show_as_dashes_beside_the_ones_that_are_there(reader, store, rules):
    save_model(store, rules, summary={"segments": {
        "VIP": {"customers": 3},
        "New": {"churnRiskBands": {"Low": 2, "Medium": 1, "High": 0}, "predictedClv12m": "80.50"},
    }})

    html = reader.get("/").text
    rows = churn_rows(html)

    assert rows["VIP"] == {"customers": "3", "band-low-count": "—", "band-medium-count": "—", "band-high-count": "—",
                           "mix": "—", "value": "—", "value-share": "—"}
    assert rows["New"]["customers"] == "3", "counted from its bands"
    assert rows["New"]["value"] == "$80.50" and rows["New"]["value-share"] == "100.0%"
    assert "no order in the next 90 days: Low below 50%, Medium from 50%, High from 80%." in text(html), \
        "the rules' settings where the summary lacks them"


def test_a_stored_reason_that_is_not_text_still_renders(reader, store):
    for status, params in (("failed", PARAMS), ("failed", None), ("not_eligible", None)):
        store.set_meta(PREDICTION_MODEL_KEY, json.dumps({"status": status, "fittedAt": "2026-02-21T09:00:00.000Z",
                                                         "reason": 42, "params": params, "summary": SUMMARY}))
        assert "42" in text(section(reader.get("/").text, "prediction")), (status, params)


def test_a_stored_model_without_report_or_summary_still_renders(reader, store):
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps({"status": "fitted", "fittedAt": "2026-02-21T09:00:00.000Z",
                                                     "params": PARAMS}))

    html = reader.get("/").text

    card = text(section(html, "prediction"))
    assert card.count("Fitted 2026-02-21 09:00 UTC (3 h 0 min ago).") == 1, "no customer count where none was saved"
    assert "This fit saved no figures per segment; the next fit adds them." in card


def test_a_segment_name_from_the_store_is_escaped(reader, store, rules):
    save_model(store, rules, summary={"segments": {"<b>Bold</b>": {"customers": 1}}})

    html = reader.get("/").text

    assert "<b>Bold</b>" not in html
    assert "&lt;b&gt;Bold&lt;/b&gt;" in html


# --- a customer's page ----------------------------------------------------------------------------------------

def test_the_customer_page_shows_the_classifiers_predicted_figures(reader, store, rules, read_headers):
    ingest(store, "C-1", (60, 30, 5))
    save_model(store, rules)
    expected = classification(store, rules, "C-1").predicted

    html = reader.get("/customers/C-1").text

    assert predicted(html, "churnRisk") == f"{percent(expected.churn_risk)} {expected.band}"
    assert predicted(html, "pAlive") == percent(expected.p_alive)
    assert predicted(html, "expectedOrders90d") == f"{expected.expected_orders_90d:.2f}"
    api = reader.get("/api/customers/C-1", headers=read_headers).get_json()["data"]["metrics"]["predicted"]
    assert predicted(html, "predictedClv12m") == f"${float(api['predictedClv12m']):,.2f}"
    assert api["churnRisk"] == expected.churn_risk and api["churnRiskBand"] == expected.band
    assert '<span id="model-fitted">2026-02-21 09:00 UTC</span>' in html
    assert "the chance of no order in the next 90 days" in text(section(html, "predicted"))


def test_the_band_badge_is_coloured_by_band_and_names_it(reader, store, rules):
    ingest(store, "C-GONE", (400, 380, 360))  # a year of silence: a high churn risk
    ingest(store, "C-KEEN", (30, 20, 10, 3))
    save_model(store, rules)

    for contact_id in ("C-GONE", "C-KEEN"):
        band = classification(store, rules, contact_id).predicted.band
        html = reader.get(f"/customers/{contact_id}").text
        assert f'<span class="badge badge-{band.lower()}">{band}</span>' in html, contact_id
    assert classification(store, rules, "C-GONE").predicted.band == "High"


def test_a_customer_with_no_counted_order_has_no_prediction_and_says_why(reader, store, rules):
    ingest(store, "C-REFUNDED", (20,), status="refunded")
    save_model(store, rules)

    html = reader.get("/customers/C-REFUNDED").text

    assert text(section(html, "predicted")).endswith("No prediction: this customer has no counted order.")
    assert 'data-predicted="churnRisk"' not in html


def test_a_customer_page_without_a_model_says_why_and_how_to_fit_one(reader, store):
    ingest(store, "C-1", (60, 30, 5))

    card = text(section(reader.get("/customers/C-1").text, "predicted"))

    assert "No churn predictions yet: the model has not been fitted. The scheduler fits it once a day; " \
           "python -m worker model fit fits it now." in card


def test_the_predicted_card_sits_beside_the_rfm_card(reader, store, rules):
    ingest(store, "C-1", (60, 30, 5))
    save_model(store, rules)

    html = reader.get("/customers/C-1").text

    assert re.search(r'<div class="pair cards">\s*<section class="card" id="rfm">.*?</section>\s*'
                     r'<section class="card" id="predicted">.*?</section>\s*</div>', html, re.S)


def test_the_churn_table_sits_in_a_scrolling_box(reader, store, rules):
    save_model(store, rules)

    html = reader.get("/").text

    assert '<div class="scroll">\n  <table class="churn">' in html


def test_the_stylesheet_colours_the_bands(client):
    css = client.get("/static/dashboard.css").text

    for band in ("low", "medium", "high"):
        assert f".band-{band} {{" in css and f".badge-{band} {{" in css, band


# --- the pieces -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fraction", "shown"), [
    (0.8123, "81.23%"), (0.5, "50%"), (0.07, "7%"), (0.0001, "0.01%"), (0.0, "0%"), (1.0, "100%"),
])
def test_percent_shows_the_four_places_the_model_keeps(fraction, shown):
    assert percent(fraction) == shown


@pytest.mark.parametrize(("bands", "widths"), [
    ({"Low": 6, "Medium": 3, "High": 1}, [60.0, 30.0, 10.0]),
    ({"Low": 1, "Medium": 1, "High": 1}, [33.33, 33.34, 33.33]),
    ({"Low": 0, "Medium": 0, "High": 4}, [100.0]),
    ({"Low": None, "Medium": 2, "High": 0}, [100.0]),
    ({"Low": 0, "Medium": 0, "High": 0}, []),
])
def test_a_bar_fills_its_width_with_the_bands_it_has(bands, widths):
    blocks = ChurnRow("VIP", "seg-0", None, bands, None, None).blocks

    assert [block.width for block in blocks] == widths
    assert all(b.x == round(sum(widths[:i]), 2) for i, b in enumerate(blocks))
