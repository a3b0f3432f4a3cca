"""The churn and value model through the product: CDNOW's orders stored, the scheduler fits the papers'
parameters from the aggregates kept at ingest, and every customer's figures read back through the API, the CSV
export and the CLI; a backtest with `model fit --as-of`; the eligibility gate said on /healthz and by the CLI.

CDNOW comes as the transaction files the lifetimes package ships (a dev dependency only)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import lifetimes
import numpy as np
import pytest

from rules.predict import BgNbdParams, GammaGammaParams, ModelInputs, predict, probability_no_purchase
from worker.prediction import NOT_ELIGIBLE, saved_model
from worker.scheduler import Jobs
from worker.store.base import PREDICTION_MODEL_KEY, Order

SAMPLE = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"
AS_OF = datetime(1997, 9, 30, 23, 59, tzinfo=timezone.utc)  # the end of calibration weeks 1-39
PAPER_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PAPER_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}


@cache
def sample_orders() -> tuple[Order, ...]:
    """Every transaction of the CDNOW sample as an order at noon UTC (customer 00004 -> C00004)."""
    orders = []
    for line, row in enumerate(SAMPLE.read_text().split("\n")):
        fields = row.split()
        if not fields:
            continue
        day = date(int(fields[2][:4]), int(fields[2][4:6]), int(fields[2][6:]))
        orders.append(Order(f"C{fields[0]}", f"CD-{line}", datetime(day.year, day.month, day.day, 12,
                                                                     tzinfo=timezone.utc),
                            round(float(fields[4]) * 100)))
    return tuple(orders)


def store_orders(store, until: datetime | None = None) -> None:
    orders = [o for o in sample_orders() if until is None or o.order_at <= until]
    for start in range(0, len(orders), 2000):
        store.upsert_orders(orders[start:start + 2000], datetime(1998, 7, 1, tzinfo=timezone.utc))


@pytest.fixture
def fitted(store, rules_source):
    """The calibration orders stored and one scheduler run at the end of calibration, which fits the model."""
    store_orders(store, AS_OF)
    Jobs(store, rules_source, clock=lambda: AS_OF).evaluate_once()
    return saved_model(store)


def test_the_scheduler_fits_the_papers_parameters_from_the_stored_aggregates(fitted):
    assert fitted.status == "fitted"
    for name, value in PAPER_BGNBD.items():
        assert fitted.params["bgnbd"][name] == pytest.approx(value, rel=0.005)
    for name, value in PAPER_GAMMA_GAMMA.items():
        assert fitted.params["gammaGamma"][name] == pytest.approx(value, rel=0.01)
    report = fitted.report
    assert report["bgnbd"]["logLikelihood"] == pytest.approx(-9582.4, abs=0.1)
    assert (report["customers"], report["repeatCustomers"]) == (2357, 946)
    assert report["window"] == {"firstOrderDay": "1997-01-01", "lastOrderDay": "1997-09-30"}
    assert report["bgnbd"]["converged"] and report["bgnbd"]["iterations"] > 0 and report["seconds"] >= 0
    assert fitted.fitted_at == AS_OF


def test_the_summary_counts_every_customer_by_segment_and_band(fitted):
    segments = fitted.summary["segments"]
    assert "(not evaluated yet)" not in segments  # summarised again once the first run gave segments
    assert sum(row["customers"] for row in segments.values()) == 2357
    for row in segments.values():
        assert sum(row["churnRiskBands"].values()) == row["customers"]
    # nearly all of those silent for more than 90 days are expected not to order in the next 90
    dormant = segments["Dormant"]["churnRiskBands"]
    assert dormant["High"] > 0.9 * sum(dormant.values())


def papers_customer_figures(params: dict) -> dict:
    """Customer 00004 of the sample computed straight from the model: orders on 1997-01-01 ($29.33), 01-18
    ($29.73) and 08-02 ($14.96), scored at the end of September."""
    bgnbd, gamma_gamma = BgNbdParams(**params["bgnbd"]), GammaGammaParams(**params["gammaGamma"])
    first, last, today = date(1997, 1, 1), date(1997, 8, 2), date(1997, 9, 30)
    inputs = ModelInputs(x=[2.0], t_x=[(last - first).days / 7], T=[(today - first).days / 7],
                         mean_repeat_value=[(29.73 + 14.96) / 2])
    figures = predict(bgnbd, gamma_gamma, inputs, horizon_days=90)
    risk = probability_no_purchase(bgnbd, 90 / 7, inputs.x, inputs.t_x, inputs.T)
    assert risk[0] == pytest.approx(figures.churn_risk[0])
    return {"churnRisk": round(float(risk[0]), 4), "pAlive": round(float(figures.p_alive[0]), 4),
            "expectedOrders90d": round(float(figures.expected_orders[0]), 3),
            "predictedClv12m": f"{figures.predicted_value[0]:.2f}"}


def test_the_api_shows_the_models_figures_for_a_customer(fitted, client, clock, read_headers):
    clock.now = AS_OF
    body = client.get("/api/customers/C00004", headers=read_headers).get_json()["data"]
    predicted = body["metrics"]["predicted"]
    expected = papers_customer_figures(fitted.params)
    assert {k: predicted[k] for k in expected} == expected
    assert predicted["churnRiskBand"] == "Medium"  # 0.68: between the default cut points 0.5 and 0.8
    assert predicted["modelFittedAt"] == "1997-09-30T23:59:00.000Z"


def test_churn_risk_rises_as_time_passes_without_an_order(fitted, client, read_headers):
    risks = [client.get(f"/api/customers/C00004?asOf={day}", headers=read_headers).get_json()
             ["data"]["metrics"]["predicted"]["churnRisk"] for day in ("1997-10-01", "1997-11-01", "1998-01-01")]
    assert risks == sorted(risks) and risks[0] < risks[-1]


def test_the_list_and_the_export_carry_the_same_figures(fitted, client, clock, read_headers):
    clock.now = AS_OF
    listed = {c["contactID"]: c["metrics"]["predicted"] for c in client.get(
        "/api/customers?limit=500", headers=read_headers).get_json()["data"]}
    rows = list(csv.DictReader(io.StringIO(client.get("/api/customers.csv", headers=read_headers)
                                           .get_data(as_text=True))))
    assert len(rows) == 2357
    row = next(r for r in rows if r["contactID"] == "C00004")
    shown = listed["C00004"]
    assert (float(row["churnRisk"]), row["churnRiskBand"], float(row["pAlive"]), float(row["expectedOrders90d"]),
            row["predictedClv12m"], row["modelFittedAt"]) == \
        (shown["churnRisk"], shown["churnRiskBand"], shown["pAlive"], shown["expectedOrders90d"],
         shown["predictedClv12m"], shown["modelFittedAt"])
    assert all(r["churnRiskBand"] in ("Low", "Medium", "High") for r in rows)


def test_healthz_says_the_model_is_fitted(fitted, client):
    assert client.get("/healthz").get_json()["prediction"] == {
        "status": "fitted", "fittedAt": "1997-09-30T23:59:00.000Z", "reason": None}


def test_model_show_prints_a_readable_report(fitted, runner):
    result = runner.invoke("model", "show")
    assert result.exit_code == 0, result.output
    assert "fitted 1997-09-30T23:59:00.000Z on 2,357 customers" in result.output
    assert "r 0.2426, alpha 4.4136, a 0.7929, b 2.4259" in result.output
    assert "next 90 days" in result.output and "Dormant" in result.output
    shown = json.loads(runner.invoke("model", "show", "--json").output)
    assert shown["params"] == fitted.params


def test_model_fit_as_of_backtests_on_the_orders_of_that_moment_and_saves_nothing(store, runner):
    store_orders(store)  # every order, the holdout weeks 40-78 included
    result = runner.invoke("model", "fit", "--as-of", "1997-09-30T23:59:00Z", "--json")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.output)
    assert fit["saved"] is False and fit["report"]["customers"] == 2357
    for name, value in PAPER_BGNBD.items():
        assert fit["params"]["bgnbd"][name] == pytest.approx(value, rel=0.005)
    assert store.get_meta(PREDICTION_MODEL_KEY) is None
    assert "has not been fitted yet" in runner.invoke("model", "show").output


def test_model_fit_saves_the_model_for_every_process(store, runner):
    store_orders(store)
    result = runner.invoke("model", "fit")
    assert result.exit_code == 0, result.output
    assert "saved: every process scores with it" in result.output
    saved = saved_model(store)
    assert saved.status == "fitted" and saved.report["window"]["lastOrderDay"] == "1998-06-30"


def test_below_the_gate_there_are_no_predictions_and_everyone_says_why(store, rules_source, client, runner,
                                                                        read_headers, clock):
    clock.now = datetime(1997, 1, 3, tzinfo=timezone.utc)
    store_orders(store, clock.now)  # two days of orders: too few customers, too young a history
    Jobs(store, rules_source, clock=clock).evaluate_once()
    saved = saved_model(store)
    assert saved.status == NOT_ELIGIBLE and saved.params is None
    assert saved.reason == ("predictions need at least 500 customers with an order (there are 40); predictions "
                            "need at least 180 days of order history (there are 2); predictions need at least 50 "
                            "customers who ordered on 3 or more days (there are 0)")
    customer = client.get("/api/customers/C00004", headers=read_headers).get_json()["data"]  # ordered 1997-01-01
    assert customer["metrics"]["orderCount"] == 1 and customer["metrics"]["predicted"] is None
    health = client.get("/healthz").get_json()
    assert health["status"] == "ok"  # no prediction is not a health problem
    assert health["prediction"]["status"] == NOT_ELIGIBLE and "180 days" in health["prediction"]["reason"]
    assert "No churn predictions: " in runner.invoke("model", "show").output
    failed = runner.invoke("model", "fit")
    assert failed.exit_code == 1 and "at least 500 customers with an order" in failed.output


def test_a_refit_happens_when_it_is_due_and_not_before(store, rules_source):
    store_orders(store, AS_OF)
    moments = iter([AS_OF, AS_OF + timedelta(hours=23), AS_OF + timedelta(hours=24)])
    now = {"at": AS_OF}
    jobs = Jobs(store, rules_source, clock=lambda: now["at"])
    fitted_at = []
    for moment in moments:
        now["at"] = moment
        jobs.evaluate_once()
        fitted_at.append(saved_model(store).fitted_at)
    assert fitted_at == [AS_OF, AS_OF, AS_OF + timedelta(hours=24)]  # refit_every_hours: 24 by default


def test_scores_of_a_batch_equal_scores_one_at_a_time(fitted, store, rules):
    from rules import Classifier
    from worker.prediction import load_model

    classifier = Classifier(rules, None, load_model(store, rules))
    records = [r for batch in store.iter_customers(500) for r in batch][:300]
    together = classifier.classify_many([r.facts for r in records], AS_OF)
    alone = [classifier.classify(r.facts, AS_OF) for r in records]
    assert [c.predicted for c in together] == [c.predicted for c in alone]
    assert np.mean([c.predicted.churn_risk for c in together]) > 0



SMALL_GATE = "prediction: {min_customers_with_orders: 20, min_history_days: 30, min_customers_with_3_orders: 5}\n"


def simulated_orders(customers: int, seed: int) -> tuple[list[Order], dict[str, list[int]]]:
    """Customers drawn from the BG/NBD process with the CDNOW parameters (bench.predict), as orders on distinct
    days: the first at the customer's age, the last at its recency, the others between."""
    from bench.predict import CDNOW_BGNBD, simulate_customers

    rng = np.random.default_rng(seed)
    sim = simulate_customers(CDNOW_BGNBD, rng.uniform(10, 40, customers), 1.0, rng)
    orders, days_ago = [], {}
    for n, (x, t_x, age) in enumerate(zip(sim.x, sim.t_x, sim.T, strict=True)):
        first, last = round(age * 7), round((age - t_x) * 7)
        between = sorted({int(d) for d in rng.integers(last + 1, first, int(x) - 1)}) if first - last > 1 else []
        days = sorted({first, last, *between}, reverse=True)[: int(x) + 1]
        days_ago[f"C-{n}"] = days
        orders += [Order(f"C-{n}", f"C-{n}-{k}", AS_OF - timedelta(days=d, hours=3), int(rng.integers(1_000, 9_000)))
                   for k, d in enumerate(days)]
    return orders, days_ago


def test_both_backends_fit_the_same_model_from_their_aggregates(backend):
    """A small base (the gate lowered to fit it) through each store: the parameters are the ones a fit on arrays
    built straight from the orders gives, so both backends keep the aggregates the model needs."""
    from rules import parse_rules
    from rules.predict import fit_bgnbd, inputs_from_days
    from tests.factories import ENV, rules_text
    from worker.prediction import fit_and_save

    rules = parse_rules(rules_text() + SMALL_GATE, env=ENV)
    orders, days_ago = simulated_orders(300, seed=3)
    store = backend.open()
    store.upsert_orders(orders, AS_OF)
    saved = fit_and_save(store, rules, AS_OF)
    today = (AS_OF - timedelta(hours=3)).date().toordinal()
    first = np.array([today - max(d) for d in days_ago.values()])
    last = np.array([today - min(d) for d in days_ago.values()])
    count = np.array([len(d) for d in days_ago.values()])
    inputs = inputs_from_days(first, last, AS_OF.date().toordinal(), count, np.zeros(len(count)))
    expected, _ = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
    assert saved.status == "fitted", saved.reason
    assert saved.report["customers"] == 300
    for name in ("r", "alpha", "a", "b"):
        assert saved.params["bgnbd"][name] == pytest.approx(getattr(expected, name), rel=1e-6)
    store.close()


def test_a_base_where_everyone_buys_alike_still_gets_predictions(store):
    """Every customer buying at the same random rate leaves the fit nothing to spread: it runs off to huge
    parameters, where the closed form of expected purchases overflows. The integral it stands for still evaluates,
    and says what a Poisson buyer would: no dropout, the same rate for everyone."""
    from rules import Classifier, parse_rules
    from tests.factories import ENV, rules_text
    from worker.prediction import FITTED, fit_and_save, load_model

    rules = parse_rules(rules_text() + SMALL_GATE, env=ENV)
    rng = np.random.default_rng(7)
    orders = [Order(f"C-{n}", f"C-{n}-{k}", AS_OF - timedelta(days=int(d)), 5_000)
              for n in range(40) for k, d in enumerate(sorted({int(d) for d in rng.integers(1, 300,
                                                                                           int(rng.integers(1, 6)))}))]
    store.upsert_orders(orders, AS_OF)
    saved = fit_and_save(store, rules, AS_OF)
    assert saved.status == FITTED, saved.reason
    bg = saved.params["bgnbd"]
    assert bg["r"] > 1e4 and bg["alpha"] > 1e4, "the corner: everyone buys at one rate"
    rate = bg["r"] / bg["alpha"]  # purchases a week, the same for all
    predicted = Classifier(rules, None, load_model(store, rules)).classify(store.get_customer("C-0").facts,
                                                                           AS_OF).predicted
    assert predicted.expected_orders_90d == pytest.approx(rate * 90 / 7 * predicted.p_alive, rel=1e-3)

def test_unreadable_stored_parameters_mean_no_predictions_not_an_error(store, client, read_headers):
    store.upsert_orders([Order("C-1", "O-1", AS_OF, 1000)], AS_OF)
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps({"status": "fitted", "checkedAt": "1997-09-30T23:59:00.000Z",
                                                     "reason": None, "settings": "", "params": {"bgnbd": {}},
                                                     "fittedAt": "1997-09-30T23:59:00.000Z"}))
    answer = client.get("/api/customers/C-1", headers=read_headers)
    assert answer.status_code == 200 and answer.get_json()["data"]["metrics"]["predicted"] is None
