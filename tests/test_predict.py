"""The churn/value model: the papers' figures on CDNOW, lifetimes as an oracle, a simulation of the process for
P(no order in t), holdout ranking on the full CDNOW, the eligibility gate, the input builder and edge cases.

CDNOW comes as the transaction files the lifetimes package ships; lifetimes is a dev dependency only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data
from scipy.special import hyp2f1
from scipy.stats import mannwhitneyu

from bench.predict import CDNOW_BGNBD, simulate_customers
from rules.predict import (
    DAYS_PER_WEEK,
    BgNbdParams,
    GammaGammaParams,
    ModelInputs,
    PredictionError,
    PurchaseHistory,
    bgnbd_log_likelihood,
    eligibility,
    eligibility_of,
    expected_order_value,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    inputs_from_days,
    lifetime_value,
    model_inputs,
    predict,
    probability_alive,
    probability_no_purchase,
)

DATASETS = Path(importlib.util.find_spec("lifetimes").origin).parent / "datasets"
UTC = ZoneInfo("UTC")
CALIBRATION_END = date(1997, 9, 30)  # weeks 1-39; every CDNOW customer's first purchase is in Q1 1997
HOLDOUT_END = date(1998, 6, 30)  # weeks 40-78
HOLDOUT_WEEKS = (HOLDOUT_END - CALIBRATION_END).days / DAYS_PER_WEEK
LIFETIMES_WEEKS_PER_MONTH = 4.345  # lifetimes' customer_lifetime_value(freq="W")


@dataclass(frozen=True, eq=False)
class Cdnow:
    customers: np.ndarray
    days: np.ndarray
    values: np.ndarray
    ids: np.ndarray
    inputs: ModelInputs
    ordered_in_holdout: np.ndarray


@cache
def cdnow(name: str) -> Cdnow:
    """Transactions (customer, day, dollars) of a CDNOW file, and per customer the aggregates the product keeps,
    turned into model inputs through `model_inputs` at the end of the calibration period."""
    sample = name == "CDNOW_sample.txt"
    rows = np.loadtxt(DATASETS / name, dtype=str, skiprows=0 if sample else 1)
    ids = rows[:, 0].astype(np.int64)
    days = np.array([date(int(d[:4]), int(d[4:6]), int(d[6:])).toordinal() for d in rows[:, 1 + sample]])
    cents = np.round(rows[:, 3 + sample].astype(float) * 100).astype(np.int64)
    calibration = days <= CALIBRATION_END.toordinal()
    purchase_days, spend = np.unique(ids[calibration] * 1_000_000 + days[calibration], return_inverse=True)
    day_cents = np.bincount(spend.reshape(-1), cents[calibration]).astype(np.int64)
    day_ids, day_days = purchase_days // 1_000_000, purchase_days % 1_000_000
    customers, customer, counts = np.unique(day_ids, return_inverse=True, return_counts=True)
    first = np.full(len(customers), np.iinfo(np.int64).max)
    np.minimum.at(first, customer, day_days)
    last = np.zeros(len(customers), np.int64)
    np.maximum.at(last, customer, day_days)
    total = np.bincount(customer, day_cents).astype(np.int64)
    first_day = np.bincount(customer, np.where(day_days == first[customer], day_cents, 0)).astype(np.int64)
    histories = [PurchaseHistory(_noon(f), _noon(la), int(n), int(t), int(fd))
                 for f, la, n, t, fd in zip(first, last, counts, total, first_day, strict=True)]
    inputs = model_inputs(histories, datetime(1997, 9, 30, 23, 59, tzinfo=timezone.utc), UTC)
    holdout = (days > CALIBRATION_END.toordinal()) & (days <= HOLDOUT_END.toordinal())
    return Cdnow(customers, days, cents / 100, ids, inputs, np.isin(customers, ids[holdout]))


def _noon(day: int) -> datetime:
    return datetime.combine(date.fromordinal(int(day)), datetime.min.time(), tzinfo=timezone.utc).replace(hour=12)


def sample_inputs() -> ModelInputs:
    return cdnow("CDNOW_sample.txt").inputs


@cache
def sample_fits() -> tuple[BgNbdParams, GammaGammaParams]:
    inputs = sample_inputs()
    return fit_bgnbd(inputs.x, inputs.t_x, inputs.T)[0], fit_gamma_gamma(inputs.x, inputs.mean_repeat_value)[0]


@cache
def lifetimes_fits() -> tuple[BetaGeoFitter, GammaGammaFitter]:
    inputs = sample_inputs()
    bgf = BetaGeoFitter().fit(inputs.x, inputs.t_x, inputs.T)
    repeat = inputs.x > 0
    ggf = GammaGammaFitter().fit(inputs.x[repeat], inputs.mean_repeat_value[repeat])
    return bgf, ggf


def lifetimes_bgnbd(params: BgNbdParams) -> BetaGeoFitter:
    """A lifetimes model carrying our parameters, so that only the formulas are compared."""
    model = BetaGeoFitter()
    model.params_ = pd.Series({"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b})
    model.predict = model.conditional_expected_number_of_purchases_up_to_time
    return model


def lifetimes_gamma_gamma(params: GammaGammaParams) -> GammaGammaFitter:
    model = GammaGammaFitter()
    model.params_ = pd.Series({"p": params.p, "q": params.q, "v": params.v})
    return model


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive outranks a negative (ties count half), from Mann-Whitney U."""
    u = mannwhitneyu(score[positive], score[~positive]).statistic
    return float(u / (positive.sum() * (~positive).sum()))


# the papers' figures on the CDNOW sample ---------------------------------------------------------------------------

def test_cdnow_sample_has_the_papers_2357_customers():
    inputs = sample_inputs()
    assert len(inputs) == 2357
    assert inputs.x.sum() == 2457  # the repeat purchases of the paper's calibration period


def test_our_inputs_are_lifetimes_summary_data_in_weeks():
    data = cdnow("CDNOW_sample.txt")
    transactions = pd.DataFrame({"id": data.ids, "date": [date.fromordinal(int(d)) for d in data.days],
                                 "value": data.values})
    summary = summary_data_from_transaction_data(transactions, "id", "date", "value",
                                                 observation_period_end=CALIBRATION_END.isoformat(), freq="D")
    summary = summary.loc[data.customers]
    inputs = data.inputs
    assert np.array_equal(summary["frequency"].to_numpy(), inputs.x)
    assert np.allclose(summary["recency"].to_numpy() / DAYS_PER_WEEK, inputs.t_x, rtol=0, atol=1e-12)
    assert np.allclose(summary["T"].to_numpy() / DAYS_PER_WEEK, inputs.T, rtol=0, atol=1e-12)
    assert np.allclose(summary["monetary_value"].to_numpy(), inputs.mean_repeat_value, rtol=1e-12, atol=1e-12)


def test_bgnbd_fit_reproduces_the_paper_on_the_cdnow_sample():
    inputs = sample_inputs()
    params, report = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
    for fitted, published in ((params.r, 0.243), (params.alpha, 4.414), (params.a, 0.793), (params.b, 2.426)):
        assert fitted == pytest.approx(published, rel=0.005)
    assert report.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert report.converged and report.customers == 2357 and report.seconds >= 0
    assert bgnbd_log_likelihood(params, inputs.x, inputs.t_x, inputs.T) == pytest.approx(report.log_likelihood)


def test_expected_purchases_of_the_papers_example_customer():
    bgnbd, _ = sample_fits()
    assert float(expected_purchases(bgnbd, 39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=0.001)


def test_gamma_gamma_fit_reproduces_the_published_figures():
    inputs = sample_inputs()
    params, report = fit_gamma_gamma(inputs.x, inputs.mean_repeat_value)
    for fitted, published in ((params.p, 6.25), (params.q, 3.74), (params.v, 15.44)):
        assert fitted == pytest.approx(published, rel=0.01)
    assert report.converged and report.customers == 946  # the repeaters


# lifetimes as an oracle ---------------------------------------------------------------------------------------------

def test_fits_agree_with_lifetimes_and_reach_at_least_its_likelihood():
    inputs = sample_inputs()
    bgnbd, gamma_gamma = sample_fits()
    bgf, ggf = lifetimes_fits()
    assert [bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b] == pytest.approx(bgf.params_.tolist(), rel=2e-4)
    assert [gamma_gamma.p, gamma_gamma.q, gamma_gamma.v] == pytest.approx(ggf.params_.tolist(), rel=1e-3)
    theirs = BgNbdParams(*bgf.params_.tolist())
    assert (bgnbd_log_likelihood(bgnbd, inputs.x, inputs.t_x, inputs.T)
            >= bgnbd_log_likelihood(theirs, inputs.x, inputs.t_x, inputs.T) - 1e-9)


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, x, t_x, T) over repeat counts 0-30, recency from 0 to T, ages from half a week to 1.5 years."""
    t, x, share, T = np.meshgrid([1.0, 13.0, 39.0, 104.0], np.arange(31.0), [0.0, 0.1, 0.5, 0.9, 1.0],
                                 [0.5, 5.0, 20.0, 38.86, 78.0], indexing="ij")
    t_x = np.where(x > 0, np.maximum(share, 0.01) * T, 0.0)
    return t.ravel(), x.ravel(), t_x.ravel(), T.ravel()


def test_probability_alive_and_expected_purchases_match_lifetimes_on_a_grid():
    bgnbd, _ = sample_fits()
    oracle = lifetimes_bgnbd(bgnbd)
    t, x, t_x, T = grid()
    assert np.allclose(probability_alive(bgnbd, x, t_x, T), oracle.conditional_probability_alive(x, t_x, T),
                       rtol=1e-12, atol=1e-14)
    theirs = oracle.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)
    assert np.allclose(expected_purchases(bgnbd, t, x, t_x, T), theirs, rtol=1e-9, atol=1e-12)


def test_a_new_customer_matches_the_papers_unconditional_formulas():
    bgnbd, _ = sample_fits()
    oracle = lifetimes_bgnbd(bgnbd)
    for t in (1.0, 13.0, 52.0, 520.0):
        assert float(expected_purchases(bgnbd, t, 0, 0, 0)) == pytest.approx(
            oracle.expected_number_of_purchases_up_to_time(t), rel=1e-10)
        assert float(probability_no_purchase(bgnbd, t, 0, 0, 0)) == pytest.approx(
            oracle.probability_of_n_purchases_up_to_time(t, 0), rel=1e-10)


def test_expected_order_value_and_lifetime_value_match_lifetimes():
    inputs = sample_inputs()
    bgnbd, gamma_gamma = sample_fits()
    oracle = lifetimes_gamma_gamma(gamma_gamma)
    frame = pd.DataFrame({"x": inputs.x, "t_x": inputs.t_x, "T": inputs.T, "m": inputs.mean_repeat_value})
    assert np.allclose(expected_order_value(gamma_gamma, inputs.x, inputs.mean_repeat_value),
                       oracle.conditional_expected_average_profit(frame["x"], frame["m"]), rtol=1e-12)
    theirs = oracle.customer_lifetime_value(lifetimes_bgnbd(bgnbd), frame["x"], frame["t_x"], frame["T"],
                                            frame["m"], time=12, discount_rate=0.01, freq="W")
    ours = lifetime_value(bgnbd, gamma_gamma, inputs.x, inputs.t_x, inputs.T, inputs.mean_repeat_value,
                          months=12, monthly_discount_rate=0.01, weeks_per_month=LIFETIMES_WEEKS_PER_MONTH)
    assert np.allclose(ours, theirs.to_numpy(), rtol=1e-9)


# P(no order in t) against the process itself ----------------------------------------------------------------------

def test_probability_of_no_purchase_matches_a_simulation_of_the_process():
    """400,000 customers simulated from BG/NBD: among those with the same history the share without a purchase in
    the next 13 weeks is the predicted probability, within 4 standard errors; 1 - P(alive) is far off."""
    rng = np.random.default_rng(20050101)
    ages = np.repeat([0.0, 13.0, 26.0, 39.0], 100_000)
    sim = simulate_customers(CDNOW_BGNBD, ages, 13.0, rng)
    predicted = probability_no_purchase(CDNOW_BGNBD, 13.0, sim.x, sim.t_x, sim.T)
    naive = 1 - probability_alive(CDNOW_BGNBD, sim.x, sim.t_x, sim.T)
    none = (sim.future == 0).astype(float)
    groups = [(sim.x == 0) & (sim.T == age) for age in (0.0, 13.0, 26.0, 39.0)]  # exact conditioning: x=0, age T
    repeaters = np.flatnonzero(sim.x > 0)
    groups += [np.isin(np.arange(len(none)), part) for part in
               np.array_split(repeaters[np.argsort(predicted[repeaters])], 8)]
    naive_misses = 0
    for group in groups:
        error = 4 * np.sqrt(none[group].var() / group.sum()) + 1e-4
        assert abs(predicted[group].mean() - none[group].mean()) < error
        naive_misses += abs(naive[group].mean() - none[group].mean()) > 10 * error
    assert naive_misses >= 6


def test_expected_purchases_match_a_simulation_of_the_process():
    rng = np.random.default_rng(2005)
    ages = np.repeat([13.0, 39.0], 100_000)
    sim = simulate_customers(CDNOW_BGNBD, ages, 26.0, rng)
    predicted = expected_purchases(CDNOW_BGNBD, 26.0, sim.x, sim.t_x, sim.T)
    for group in (sim.x == 0, (sim.x > 0) & (sim.x <= 2), sim.x > 2):
        error = 4 * np.sqrt(sim.future[group].var() / group.sum())
        assert abs(predicted[group].mean() - sim.future[group].mean()) < error


# full CDNOW: does churn risk rank next year's non-buyers? --------------------------------------------------------

def test_churn_risk_ranks_holdout_non_buyers_as_well_as_days_since_last_order():
    """Full CDNOW, fitted on weeks 1-39, scored against "no order in weeks 40-78".

    Measured: churn risk (90 days) AUC 0.7580, days since the last order 0.7594 (a paired bootstrap puts the
    difference, -0.0015, within [-0.004, +0.001]: no real difference), 1 - P(alive) 0.3195, worse than a coin.
    """
    data = cdnow("CDNOW_master.txt")
    inputs, no_order = data.inputs, ~data.ordered_in_holdout
    assert len(inputs) == 23_570
    params, report = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
    assert report.converged
    risk = probability_no_purchase(params, 90 / DAYS_PER_WEEK, inputs.x, inputs.t_x, inputs.T)
    days_since_last = (inputs.T - inputs.t_x) * DAYS_PER_WEEK
    risk_auc, recency_auc = auc(risk, no_order), auc(days_since_last, no_order)
    assert risk_auc == pytest.approx(0.758, abs=0.001) and recency_auc == pytest.approx(0.759, abs=0.001)
    assert risk_auc >= recency_auc - 0.005
    assert auc(1 - probability_alive(params, inputs.x, inputs.t_x, inputs.T), no_order) < 0.5


def test_churn_risk_over_the_holdout_is_calibrated_within_four_points():
    """Predicted P(no order in the 39 holdout weeks) averages 73.4%; 70.1% of customers did not order."""
    data = cdnow("CDNOW_master.txt")
    inputs, no_order = data.inputs, ~data.ordered_in_holdout
    params, _ = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
    predicted = probability_no_purchase(params, HOLDOUT_WEEKS, inputs.x, inputs.t_x, inputs.T).mean()
    assert no_order.mean() == pytest.approx(0.7006, abs=1e-4)
    assert predicted == pytest.approx(0.7344, abs=1e-3)
    assert abs(predicted - no_order.mean()) < 0.04


# the eligibility gate ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("counts", "reason"), [
    ((500, 180, 50), None),
    ((499, 180, 50), "predictions need at least 500 customers with an order (there are 499)"),
    ((500, 179, 50), "predictions need at least 180 days of order history (there are 179)"),
    ((500, 180, 49), "predictions need at least 50 customers who ordered on 3 or more days (there are 49)"),
    ((10, 20, 0), "predictions need at least 500 customers with an order (there are 10); predictions need at "
                  "least 180 days of order history (there are 20); predictions need at least 50 customers who "
                  "ordered on 3 or more days (there are 0)"),
])
def test_eligibility_says_every_missing_requirement(counts, reason):
    assert eligibility(*counts) == reason


def test_eligibility_thresholds_come_from_the_caller():
    assert eligibility(20, 30, 1, min_customers_with_orders=20, min_history_days=30,
                       min_customers_with_3_orders=1) is None
    assert eligibility(20, 30, 1, min_customers_with_orders=21, min_history_days=30,
                       min_customers_with_3_orders=1) == ("predictions need at least 21 customers with an order "
                                                          "(there are 20)")


def test_cdnow_sample_is_eligible_and_a_young_small_base_is_not():
    assert eligibility_of(sample_inputs()) is None
    young = inputs_from_days([100, 100, 110], [100, 120, 140], 150, [1, 3, 4], [0, 20, 30])
    assert eligibility_of(young) == (
        "predictions need at least 500 customers with an order (there are 3); predictions need at least 180 "
        "days of order history (there are 50); predictions need at least 50 customers who ordered on 3 or more "
        "days (there are 2)")
    assert eligibility_of(young, min_customers_with_orders=3, min_history_days=50,
                          min_customers_with_3_orders=2) is None


# building the inputs from the store's aggregates ------------------------------------------------------------------

def test_days_are_counted_in_the_rules_timezone():
    """A first order at 23:30 UTC on 1 March is 2 March in Berlin; as_of 10 March 08:00 Berlin is day 8 after it."""
    berlin = ZoneInfo("Europe/Berlin")
    history = PurchaseHistory(first_purchase_at=datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc),
                              last_purchase_at=datetime(2026, 3, 5, 22, 0, tzinfo=timezone.utc),
                              purchase_days=2, total_cents=5_000, first_day_cents=2_000)
    inputs = model_inputs([history], datetime(2026, 3, 10, 7, 0, tzinfo=timezone.utc), berlin)
    assert inputs.x.tolist() == [1.0]
    assert inputs.t_x.tolist() == [3 / 7] and inputs.T.tolist() == [8 / 7]
    assert inputs.mean_repeat_value.tolist() == [30.0]
    in_utc = model_inputs([history], datetime(2026, 3, 10, 7, 0, tzinfo=timezone.utc), UTC)
    assert in_utc.t_x.tolist() == [4 / 7] and in_utc.T.tolist() == [9 / 7]


def test_a_one_day_customer_has_no_repeat_and_a_first_day_customer_has_age_zero():
    moment = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    inputs = model_inputs([PurchaseHistory(moment, moment.replace(hour=17), 1, 4_200, 4_200)],
                          moment.replace(hour=20), UTC)
    assert (inputs.x.tolist(), inputs.t_x.tolist(), inputs.T.tolist(), inputs.mean_repeat_value.tolist()) == (
        [0.0], [0.0], [0.0], [0.0])


@pytest.mark.parametrize(("first", "last", "as_of", "days", "spend", "message"), [
    (10, 12, 20, 0, 10, "at least 1 purchase day"),
    (12, 10, 20, 2, 10, "the last purchase is before the first"),
    (10, 25, 20, 2, 10, "a purchase is after as_of"),
    (10, 12, 20, 4, 10, "more repeat purchase days than days between first and last purchase"),
    (10, 12, 20, 2, -10, "repeat spend may not be negative"),
])
def test_impossible_aggregates_are_refused_with_the_reason(first, last, as_of, days, spend, message):
    with pytest.raises(PredictionError, match=f"{message}.*the first at position 1"):
        inputs_from_days([1, first], [1, last], as_of, [1, days], [0, spend])


@pytest.mark.parametrize(("x", "t_x", "T", "m", "message"), [
    ([1.5], [1.0], [2.0], [10.0], "whole number"),
    ([-1], [0.0], [2.0], [10.0], "whole number"),
    ([1], [3.0], [2.0], [10.0], "between 0 and the age T"),
    ([0], [1.0], [2.0], [0.0], "no repeat purchase has recency t_x 0"),
    ([1], [1.0], [2.0], [-5.0], "may not be negative"),
    ([1], [1.0], [np.nan], [5.0], "not finite"),
    ([1, 2], [1.0], [2.0], [5.0], "differ in length"),
])
def test_model_inputs_refuse_impossible_rows(x, t_x, T, m, message):
    with pytest.raises(PredictionError, match=message):
        ModelInputs(x, t_x, T, m)


def test_fits_refuse_a_base_without_repeat_purchases():
    with pytest.raises(PredictionError, match="repeat purchase"):
        fit_bgnbd([0, 0], [0, 0], [3, 4])
    with pytest.raises(PredictionError, match="paid repeat purchase"):
        fit_gamma_gamma([0, 1], [0, 0])


# edge cases --------------------------------------------------------------------------------------------------------

def test_extreme_customers_get_finite_figures():
    bgnbd, gamma_gamma = sample_fits()
    inputs = ModelInputs(
        x=[0, 0, 1e5, 1e5, 3, 1, 200, 5],
        t_x=[0, 0, 1e5, 1.0, 1 / 7, 1 / 7, 1.0, 2.0],
        T=[0, 1e5, 1e5, 1e5, 1 / 7, 1e4, 1.0, 2.0],
        mean_repeat_value=[0, 0, 80.0, 80.0, 1e6, 0.0, 5.0, 1e-6],
    )
    for horizon_days in (1, 90, 365 * 100):
        figures = predict(bgnbd, gamma_gamma, inputs, horizon_days=horizon_days)
        for name, values in vars(figures).items():
            assert np.all(np.isfinite(values)) and np.all(values >= 0), (name, values)
        assert np.all(figures.p_alive <= 1) and np.all(figures.churn_risk <= 1)
        assert np.all(figures.churn_risk >= 1 - figures.p_alive - 1e-12)


def test_where_the_closed_form_overflows_the_integral_it_stands_for_gives_the_figures():
    """a and b in the thousands (a fit on data with almost no dropout variance) overflow the hypergeometric
    function of E[X(t)]; the figures then come from integrating over the dropout probability, which agrees with
    the closed form next to the corner and with the no-variance limit inside it."""
    _, gamma_gamma = sample_fits()
    x, t_x, T = np.array([0.0, 3, 20]), np.array([0.0, 40, 90]), np.array([10.0, 50, 100])
    inputs = ModelInputs(x=x, t_x=t_x, T=T, mean_repeat_value=[0, 80.0, 80.0])
    corner = BgNbdParams(0.8, 3.2, 1e4, 4e4)
    with np.errstate(all="ignore"):
        assert not np.all(np.isfinite(hyp2f1(corner.a + corner.b - 1 - corner.r, corner.a - 1,
                                              corner.a + corner.b + x - 1, 13 / (corner.alpha + T + 13))))
    figures = predict(corner, gamma_gamma, inputs)
    assert all(np.all(np.isfinite(v)) for v in vars(figures).values())
    # inside the corner the dropout probability is a / (a + b + x) for everyone: a Poisson process stopped with it
    p = corner.a / (corner.a + corner.b + x)
    fixed = -np.expm1((corner.r + x) * np.log1p(-p * 90 / 7 / (corner.alpha + T + p * 90 / 7))) / p
    assert figures.expected_orders == pytest.approx(figures.p_alive * fixed, rel=1e-4)


def test_the_integral_agrees_with_the_closed_form_where_both_evaluate():
    from rules.predict import _purchases_by_quadrature, _purchases_if_alive

    x, T = np.array([0.0, 1, 3, 10, 50]), np.array([10.0, 20, 40, 52, 100])
    for params in (CDNOW_BGNBD, BgNbdParams(0.243, 4.414, 0.14, 4.5), BgNbdParams(0.66, 3.4, 50, 4000)):
        closed = _purchases_if_alive(params, np.float64(13.0), x, T)
        assert np.all(np.isfinite(closed))
        assert _purchases_by_quadrature(params, np.full(5, 13.0), x, T) == pytest.approx(closed, rel=2e-5)


def test_a_very_regular_customer_expects_their_own_rate():
    """100,000 purchases in 100,000 weeks, the last just now: alive, buying at about one a week."""
    bgnbd, _ = sample_fits()
    expected = float(expected_purchases(bgnbd, 13, 1e5, 1e5, 1e5))
    assert expected == pytest.approx(13 * (bgnbd.r + 1e5) / (bgnbd.alpha + 1e5), rel=1e-3)
    assert float(probability_no_purchase(bgnbd, 13, 1e5, 1e5, 1e5)) < 1e-4
    assert float(probability_alive(bgnbd, 1e5, 1.0, 1e5)) == 0.0


def test_dropout_parameter_at_exactly_one_is_the_limit_of_its_neighbours():
    below, at, above = (BgNbdParams(0.243, 4.414, a, 2.426) for a in (1 - 1e-4, 1.0, 1 + 1e-4))
    values = [float(expected_purchases(p, 39, 2, 30.43, 38.86)) for p in (below, at, above)]
    assert values[1] == pytest.approx((values[0] + values[2]) / 2, rel=1e-6)


def test_predictions_keep_the_order_and_length_of_the_inputs():
    inputs = sample_inputs()
    bgnbd, gamma_gamma = sample_fits()
    figures = predict(bgnbd, gamma_gamma, inputs)
    assert {len(v) for v in vars(figures).values()} == {len(inputs)}
    first = ModelInputs(inputs.x[:1], inputs.t_x[:1], inputs.T[:1], inputs.mean_repeat_value[:1])
    alone = predict(bgnbd, gamma_gamma, first)
    assert all(np.allclose(getattr(alone, k), getattr(figures, k)[:1], rtol=1e-12) for k in vars(figures))


def test_predict_gives_what_the_single_figures_give():
    inputs = sample_inputs()
    bgnbd, gamma_gamma = sample_fits()
    figures = predict(bgnbd, gamma_gamma, inputs, horizon_days=60, months=6, monthly_discount_rate=0.02)
    x, t_x, T, m = inputs.x, inputs.t_x, inputs.T, inputs.mean_repeat_value
    assert np.allclose(figures.p_alive, probability_alive(bgnbd, x, t_x, T), rtol=1e-12)
    assert np.allclose(figures.expected_orders, expected_purchases(bgnbd, 60 / 7, x, t_x, T), rtol=1e-12)
    assert np.allclose(figures.churn_risk, probability_no_purchase(bgnbd, 60 / 7, x, t_x, T), rtol=1e-12)
    assert np.allclose(figures.expected_order_value, expected_order_value(gamma_gamma, x, m), rtol=1e-12)
    assert np.allclose(figures.predicted_value, lifetime_value(bgnbd, gamma_gamma, x, t_x, T, m, months=6,
                                                               monthly_discount_rate=0.02), rtol=1e-12)


def test_a_spend_model_without_a_finite_mean_predicts_no_value():
    with pytest.raises(PredictionError, match="no finite mean"):
        expected_order_value(GammaGammaParams(p=2.0, q=0.9, v=10.0), [1, 2], [10.0, 20.0])


def test_the_model_needs_neither_pandas_nor_lifetimes_at_run_time():
    loaded = subprocess.run([sys.executable, "-c", "import sys, rules.predict; print(sorted(m for m in "
                             "('pandas', 'lifetimes', 'autograd', 'worker') if m in sys.modules))"],
                            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
