"""Predicted churn risk and 12-month value: BG/NBD for when customers buy, Gamma-Gamma for how much per order.

Pure: numpy and scipy over arrays, no I/O, no clock. Time is in weeks computed from calendar days (days / 7),
as in Fader, Hardie & Lee (2005) "Counting Your Customers the Easy Way" and "RFM and CLV"; money is in the
store's currency as floats, which the caller rounds to cents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import digamma, expit, gammaln, hyp2f1

DAYS_PER_WEEK = 7.0
WEEKS_PER_MONTH = 365.25 / 12 / DAYS_PER_WEEK
DEFAULT_HORIZON_DAYS = 90
DEFAULT_MONTHS = 12
# Klaviyo's published gate for its predictive analytics (help article 360020919731): 500 customers with an
# order and 180 days of order history (it also wants orders in the last 30 days, not checked here).
DEFAULT_MIN_CUSTOMERS_WITH_ORDERS = 500
DEFAULT_MIN_HISTORY_DAYS = 180
# Klaviyo asks only for "some" customers with 3+ orders; 50 is ours: enough repeat buyers to estimate dropout.
DEFAULT_MIN_CUSTOMERS_WITH_3_ORDERS = 50

# Log-parameters stay within these bounds so that no evaluation overflows (e^30 ~ 1e13).
_LOG_BOUND = 30.0
# E[X(t)] divides by (a - 1); at a == 1 exactly the limit is taken by moving a by this much (error ~1e-7).
_A_NEAR_ONE = 1e-7
# A fit whose line search stops with the mean log-likelihood's gradient below this has reached its optimum.
_FLAT_GRADIENT = 1e-4
# Where the hypergeometric function fails, E[X(t)] is integrated over the dropout probability with this many nodes.
_QUADRATURE_NODES = 48
_CONCENTRATED_A = 1000.0  # from here on the dropout probability's spread is negligible (see above)

Array = NDArray[np.float64]
Params = TypeVar("Params")


class PredictionError(ValueError):
    """Inputs the model cannot use (inconsistent aggregates, no customers); the message names the problem."""


@dataclass(frozen=True, slots=True)
class PurchaseHistory:
    """One customer's aggregates over counted orders, as the store keeps them at ingest.

    `purchase_days`: distinct calendar days (in the rules' timezone) with at least one counted order.
    `first_day_cents`: spend on the first of those days; the rest of `total_cents` is repeat spend.
    """

    first_purchase_at: datetime
    last_purchase_at: datetime
    purchase_days: int
    total_cents: int
    first_day_cents: int


@dataclass(frozen=True, eq=False)
class ModelInputs:
    """Per customer: repeat purchase days `x`, recency `t_x` and age `T` in weeks, and the mean value of the
    repeat purchase days (0 where x == 0). Checked on construction so a fit never sees impossible rows."""

    x: Array
    t_x: Array
    T: Array
    mean_repeat_value: Array

    def __post_init__(self) -> None:
        for name in ("x", "t_x", "T", "mean_repeat_value"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        x, t_x, T, m = self.x, self.t_x, self.T, self.mean_repeat_value
        if not (len(x) == len(t_x) == len(T) == len(m)):
            raise PredictionError(f"x, t_x, T and mean_repeat_value differ in length "
                                  f"({len(x)}, {len(t_x)}, {len(T)}, {len(m)})")
        _refuse(~np.isfinite(x) | ~np.isfinite(t_x) | ~np.isfinite(T) | ~np.isfinite(m), "a value is not finite")
        _refuse((x < 0) | (x != np.floor(x)), "x must be a whole number of repeat purchase days, at least 0")
        _refuse((t_x < 0) | (t_x > T), "recency t_x must be between 0 and the age T")
        _refuse((x == 0) & (t_x != 0), "a customer with no repeat purchase has recency t_x 0")
        _refuse(m < 0, "the mean repeat value may not be negative")

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """Purchase rate ~ Gamma(r, alpha) (alpha in weeks); dropout probability after each purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    """Spend per purchase day ~ Gamma(p, nu) with nu ~ Gamma(q, v) across customers (v in currency units)."""

    p: float
    q: float
    v: float


@dataclass(frozen=True, slots=True)
class FitReport:
    customers: int
    log_likelihood: float
    iterations: int
    evaluations: int
    seconds: float
    converged: bool
    message: str


@dataclass(frozen=True, eq=False)
class Predictions:
    """Per customer, in the order of the inputs. Money is a float in the store's currency: round it to cents."""

    p_alive: Array
    expected_orders: Array
    churn_risk: Array
    expected_order_value: Array
    predicted_value: Array


# building the inputs ---------------------------------------------------------------------------------------------

def model_inputs(histories: Sequence[PurchaseHistory], as_of: datetime, tz: ZoneInfo) -> ModelInputs:
    """The model's arrays from the store's aggregates at `as_of`, counting calendar days in `tz` (the rules').

    One conversion of datetimes to local dates per customer; everything after is vectorised.
    """
    first = np.fromiter((h.first_purchase_at.astimezone(tz).date().toordinal() for h in histories), np.int64,
                        len(histories))
    last = np.fromiter((h.last_purchase_at.astimezone(tz).date().toordinal() for h in histories), np.int64,
                       len(histories))
    days = np.fromiter((h.purchase_days for h in histories), np.int64, len(histories))
    repeat = np.fromiter((h.total_cents - h.first_day_cents for h in histories), np.int64, len(histories))
    return inputs_from_days(first, last, as_of.astimezone(tz).date().toordinal(), days, repeat / 100)


def inputs_from_days(first_day: ArrayLike, last_day: ArrayLike, as_of_day: int, purchase_days: ArrayLike,
                     repeat_spend: ArrayLike) -> ModelInputs:
    """The model's arrays from day numbers (e.g. `date.toordinal()`): x = purchase days - 1, t_x = last - first
    and T = as_of - first, both in days / 7 (whole-week rounding biases the fit), and the repeat spend per
    repeat purchase day."""
    first = np.asarray(first_day, dtype=np.int64)
    last = np.asarray(last_day, dtype=np.int64)
    days = np.asarray(purchase_days, dtype=np.int64)
    spend = np.asarray(repeat_spend, dtype=np.float64)
    _refuse(days < 1, "a customer with a purchase has at least 1 purchase day")
    _refuse(last < first, "the last purchase is before the first")
    _refuse(last > as_of_day, "a purchase is after as_of: pass the aggregates as they were at as_of")
    _refuse(days - 1 > last - first, "more repeat purchase days than days between first and last purchase")
    _refuse(spend < 0, "repeat spend may not be negative")
    x = (days - 1).astype(np.float64)
    mean = np.where(x > 0, spend / np.maximum(x, 1), 0.0)
    return ModelInputs(x, (last - first) / DAYS_PER_WEEK, (as_of_day - first) / DAYS_PER_WEEK, mean)


def inputs_from_store_days(first_day: ArrayLike, last_day: ArrayLike, today: ArrayLike, purchase_days: ArrayLike,
                           repeat_cents: ArrayLike) -> ModelInputs:
    """inputs_from_days for aggregates as a store keeps them, at `today` (one day, or one per customer), tolerant
    of what a live store holds: an order dated after `today` (an asOf in the past, a clock a little behind) counts
    the customer at that order's day; purchase days counted in another timezone than the rules' (until the store
    recounts them) can exceed the calendar span by one and are clipped to it; repeat spend below 0 (refunds
    booked as negative totals) counts as 0."""
    first = np.asarray(first_day, dtype=np.int64)
    last = np.asarray(last_day, dtype=np.int64)
    days = np.minimum(np.maximum(np.asarray(purchase_days, dtype=np.int64), 1), last - first + 1)
    shifted = np.maximum(np.asarray(today, dtype=np.int64), last)  # each customer's today becomes day 0
    return inputs_from_days(first - shifted, last - shifted, 0, days,
                            np.maximum(np.asarray(repeat_cents, dtype=np.int64), 0) / 100)


# eligibility -----------------------------------------------------------------------------------------------------

def eligibility(customers_with_orders: int, history_days: int, customers_with_3_orders: int, *,
                min_customers_with_orders: int = DEFAULT_MIN_CUSTOMERS_WITH_ORDERS,
                min_history_days: int = DEFAULT_MIN_HISTORY_DAYS,
                min_customers_with_3_orders: int = DEFAULT_MIN_CUSTOMERS_WITH_3_ORDERS) -> str | None:
    """None when the base is big and old enough to fit the model; otherwise why not, in a marketer's words."""
    reasons = []
    if customers_with_orders < min_customers_with_orders:
        reasons.append(f"predictions need at least {min_customers_with_orders} customers with an order "
                       f"(there are {customers_with_orders})")
    if history_days < min_history_days:
        reasons.append(f"predictions need at least {min_history_days} days of order history "
                       f"(there are {history_days})")
    if customers_with_3_orders < min_customers_with_3_orders:
        reasons.append(f"predictions need at least {min_customers_with_3_orders} customers who ordered on 3 or "
                       f"more days (there are {customers_with_3_orders})")
    return "; ".join(reasons) or None


def eligibility_of(inputs: ModelInputs, **thresholds: int) -> str | None:
    """`eligibility` with the counts taken from the model's inputs (history: the oldest customer's age)."""
    history_days = round(float(inputs.T.max()) * DAYS_PER_WEEK) if len(inputs) else 0
    return eligibility(len(inputs), history_days, int(np.count_nonzero(inputs.x >= 2)), **thresholds)


# BG/NBD ----------------------------------------------------------------------------------------------------------

class _BgNbdData:
    """The fit's view of the customers: those without a repeat purchase grouped by age (their likelihood depends
    on T alone), sums over each distinct x precomputed, so one evaluation is a few passes over the repeaters."""

    def __init__(self, x: Array, t_x: Array, T: Array):
        zero = x == 0
        self.customers = len(x)
        self.T0, self.w0 = np.unique(T[zero], return_counts=True)
        self.x, self.t_x, self.T = x[~zero], t_x[~zero], T[~zero]
        self.xu, self.wu = np.unique(self.x, return_counts=True)
        self.n_repeat = len(self.x)

    def log_likelihood(self, theta: Array, gradient: bool = False) -> tuple[float, Array | None]:
        """Total log-likelihood (the paper's eq. 6 with A1..A4 of Hardie's note 004) and its gradient in theta."""
        r, alpha, a, b = theta
        xu, wu, x, t_x, T = self.xu, self.wu, self.x, self.t_x, self.T
        log_alpha = np.log(alpha)
        # repeaters: A1 + A2 depend on x alone, summed over each distinct x
        a12 = wu @ (gammaln(r + xu) - gammaln(r) + gammaln(a + b) + gammaln(b + xu) - gammaln(b)
                    - gammaln(a + b + xu))
        log_alpha_T = np.log(alpha + T)
        log_alpha_tx = np.log(alpha + t_x)
        log_b_x = np.log(b + x - 1)
        a3 = -(r + x) * log_alpha_T
        a4 = np.log(a) - log_b_x - (r + x) * log_alpha_tx
        ll = a12 + self.n_repeat * r * log_alpha + np.logaddexp(a3, a4).sum()
        # non-repeaters: r log(alpha / (alpha + T))
        log_alpha_T0 = np.log(alpha + self.T0)
        ll += r * (self.customers - self.n_repeat) * log_alpha - r * (self.w0 @ log_alpha_T0)
        if not gradient:
            return float(ll), None
        w4 = expit(a4 - a3)
        w3 = 1 - w4
        d_r = (wu @ (digamma(r + xu) - digamma(r)) + self.customers * log_alpha
               - (w3 @ log_alpha_T) - (w4 @ log_alpha_tx) - self.w0 @ log_alpha_T0)
        d_alpha = (self.customers * r / alpha - ((r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))).sum()
                   - r * (self.w0 @ (1 / (alpha + self.T0))))
        d_ab = self.n_repeat * digamma(a + b) - wu @ digamma(a + b + xu)
        d_a = d_ab + w4.sum() / a
        d_b = d_ab + wu @ (digamma(b + xu) - digamma(b)) - w4 @ (1 / (b + x - 1))
        return float(ll), np.array([d_r, d_alpha, d_a, d_b])


def bgnbd_log_likelihood(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> float:
    """The BG/NBD log-likelihood of the customers (x, t_x, T) under `params`, summed."""
    data = _BgNbdData(*_floats(x, t_x, T))
    return data.log_likelihood(np.array([params.r, params.alpha, params.a, params.b]))[0]


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[BgNbdParams, FitReport]:
    """Maximum-likelihood BG/NBD parameters (L-BFGS-B on log-parameters with the analytic gradient)."""
    x, t_x, T = _floats(x, t_x, T)
    if len(x) == 0 or not np.any(x > 0):
        raise PredictionError("fitting the purchase model needs customers, some of them with a repeat purchase")
    data = _BgNbdData(x, t_x, T)
    # r = a = b = 1 and alpha at the mean age: a rate of about one purchase per customer lifetime so far
    start = np.log([1.0, max(float(T.mean()), 1e-3), 1.0, 1.0])
    return _maximise(data.log_likelihood, start, len(x), lambda th: BgNbdParams(*map(float, th)))


def probability_alive(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(alive at T | x, t_x, T): 1 for x == 0 (BG/NBD customers drop out only right after a purchase)."""
    x, t_x, T = np.broadcast_arrays(*_floats(x, t_x, T))
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds_dead = (np.log(a) - np.log(b + np.maximum(x, 1) - 1)
                     + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
    return np.where(x > 0, expit(-log_odds_dead), 1.0)


def expected_purchases(params: BgNbdParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """E[X(t) | x, t_x, T]: expected repeat purchase days in the next t weeks (the paper's eq. 10)."""
    x, t_x, T = _floats(x, t_x, T)
    return probability_alive(params, x, t_x, T) * _purchases_if_alive(params, np.asarray(t, np.float64), x, T)


def probability_no_purchase(params: BgNbdParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(X(t) = 0 | x, t_x, T): the chance of no purchase in the next t weeks, the churn risk.

    Dead customers never buy; an alive one has rate lambda ~ Gamma(r + x, alpha + T) and, since BG/NBD dropout
    happens only right after a purchase, stays alive until it buys: P(no purchase in t | alive) =
    ((alpha + T) / (alpha + T + t)) ** (r + x). Hence 1 - P(alive) * (1 - that).
    """
    x, t_x, T = _floats(x, t_x, T)
    return 1 - probability_alive(params, x, t_x, T) * _buys_if_alive(params, np.asarray(t, np.float64), x, T)


def _buys_if_alive(params: BgNbdParams, t: Array | float, x: Array, T: Array) -> Array:
    """P(at least one purchase in the next t | alive at T, x, T) = 1 - ((alpha+T) / (alpha+T+t)) ** (r+x)."""
    return -np.expm1(-(params.r + x) * np.log1p(t / (params.alpha + T)))


def _purchases_if_alive(params: BgNbdParams, t: Array, x: Array, T: Array) -> Array:
    """E[X(t) | alive at T, x, T].

    The paper writes it with ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z), which overflows for large
    x; Euler's transformation turns the product into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose series
    converges faster the larger x is.
    """
    if params.a >= _CONCENTRATED_A:  # the dropout spread is negligible: no hypergeometric function needed (and it
        return _purchases_if_dropout_fixed(params, t, x, T)  # is 4x slower here, then overflows)
    r, alpha, b = params.r, params.alpha, params.b
    a = params.a if abs(params.a - 1) > _A_NEAR_ONE else 1 + _A_NEAR_ONE
    one_minus_z = (alpha + T) / (alpha + T + t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        hyp = hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, 1 - one_minus_z)
        exact = (a + b + x - 1) / (a - 1) * -np.expm1((a - 1) * np.log(one_minus_z) + np.log(hyp))
    failed = ~np.isfinite(exact)
    if not failed.any():
        return exact
    exact = np.array(np.broadcast_to(exact, failed.shape))
    t_b, x_b, T_b = (np.broadcast_to(np.asarray(v, np.float64), failed.shape) for v in (t, x, T))
    exact[failed] = _purchases_by_quadrature(params, t_b[failed], x_b[failed], T_b[failed])
    return exact


def _purchases_if_dropout_fixed(params: BgNbdParams, t: Array | float, x: Array, T: Array) -> Array:
    """The integral below when the dropout probability hardly varies (a >= _CONCENTRATED_A: its spread is under
    3 % of its mean): the integrand at the posterior mean p = a / (a + b + x). Within 2e-6 of the closed form at
    a = 50 already; no quantile function, so scoring a large base stays fast in this corner."""
    p = params.a / (params.a + params.b + x)
    return -np.expm1((params.r + x) * np.log1p(-p * t / (params.alpha + T + p * t))) / p


def _purchases_by_quadrature(params: BgNbdParams, t: Array, x: Array, T: Array) -> Array:
    """E[X(t) | alive at T, x, T] as the integral it is, where the hypergeometric function fails.

    An alive customer with dropout probability p and rate lambda ~ Gamma(r + x, alpha + T) makes (1 - exp(-lambda p
    t)) / p purchases in t on average, so E[X(t) | alive] = E[(1 - ((alpha + T) / (alpha + T + p t)) ** (r + x)) / p]
    over p ~ Beta(a, b + x), its posterior after x purchases survived. Gauss-Legendre nodes in probability, mapped
    through Beta's quantile function, integrate that bounded, smooth function; against the closed form where it
    evaluates (the CDNOW fit, a = 0.14 .. 50) they agree within 1e-5. This is the corner where a fit finds nearly
    everyone alike (a and b, or r and alpha, in the hundreds of thousands), as a homogeneous base does.
    """
    from scipy.special import roots_legendre
    from scipy.stats import beta

    nodes, weights = roots_legendre(_QUADRATURE_NODES)
    u, w = (nodes + 1) / 2, weights / 2
    distinct, which = np.unique(x, return_inverse=True)
    p = beta.ppf(u[None, :], params.a, params.b + distinct[:, None])[which.reshape(-1)]  # (rows, nodes)
    t, T, x = t[:, None], T[:, None], x[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = -np.expm1((params.r + x) * np.log1p(-p * t / (params.alpha + T + p * t))) / p
    values = np.where(p > 0, values, (params.r + x) * t / (params.alpha + T))  # p -> 0: no dropout, Poisson
    return values @ w


# Gamma-Gamma -----------------------------------------------------------------------------------------------------

class _GammaGammaData:
    """Repeaters' (x, mean value); the terms that do not depend on the parameters summed once."""

    def __init__(self, x: Array, m: Array):
        self.x, self.m = x, m
        self.customers = len(x)
        self.xu, self.wu = np.unique(x, return_counts=True)
        self.sum_log_m = float(np.log(m).sum())
        self.sum_x_log_xm = float((x * (np.log(m) + np.log(x))).sum())

    def log_likelihood(self, theta: Array, gradient: bool = False) -> tuple[float, Array | None]:
        """Total log-likelihood of the mean repeat values (Fader, Hardie & Lee 2005, eq. 1a; Hardie's note 025)."""
        p, q, v = theta
        xu, wu, n = self.xu, self.wu, self.customers
        log_v_xm = np.log(v + self.x * self.m)
        ll = (wu @ (gammaln(p * xu + q) - gammaln(p * xu)) - n * gammaln(q) + n * q * np.log(v)
              + p * self.sum_x_log_xm - self.sum_log_m - (p * self.x + q) @ log_v_xm)
        if not gradient:
            return float(ll), None
        psi_pq = digamma(p * xu + q)
        d_p = (wu * xu) @ (psi_pq - digamma(p * xu)) + self.sum_x_log_xm - self.x @ log_v_xm
        d_q = wu @ psi_pq - n * digamma(q) + n * np.log(v) - log_v_xm.sum()
        d_v = n * q / v - ((p * self.x + q) / (v + self.x * self.m)).sum()
        return float(ll), np.array([d_p, d_q, d_v])


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: ArrayLike, mean_value: ArrayLike) -> float:
    """The Gamma-Gamma log-likelihood of the paid repeaters (x > 0, mean_value > 0), summed."""
    x, m = _floats(x, mean_value)
    repeat = (x > 0) & (m > 0)
    return _GammaGammaData(x[repeat], m[repeat]).log_likelihood(np.array([params.p, params.q, params.v]))[0]


def fit_gamma_gamma(x: ArrayLike, mean_value: ArrayLike) -> tuple[GammaGammaParams, FitReport]:
    """Maximum-likelihood Gamma-Gamma parameters from the customers with a repeat purchase (x > 0) of some value
    (a mean of 0, free repeat orders only, has no likelihood under a Gamma: such customers are left out)."""
    x, m = _floats(x, mean_value)
    repeat = (x > 0) & (m > 0)
    if not np.any(repeat):
        raise PredictionError("fitting the spend model needs customers with a paid repeat purchase")
    data = _GammaGammaData(x[repeat], m[repeat])
    # p = 1, q = 2 (so the mean exists) and v at the mean value: the population mean equals the sample mean
    start = np.log([1.0, 2.0, float(m[repeat].mean())])
    return _maximise(data.log_likelihood, start, data.customers, lambda th: GammaGammaParams(*map(float, th)))


def expected_order_value(params: GammaGammaParams, x: ArrayLike, mean_value: ArrayLike) -> Array:
    """E[value of a purchase day | x, mean]: the customer's mean shrunk towards the population's, the more the
    fewer repeat purchases (eq. 5). For x == 0 it is the population mean p v / (q - 1).

    A fit with q <= 1 says spend is so heavy-tailed that the mean is infinite: no value can be predicted then.
    """
    x, m = _floats(x, mean_value)
    p, q, v = params.p, params.q, params.v
    if q <= 1:
        raise PredictionError(f"the spend model has no finite mean (q = {q:.3g} <= 1): no order value to predict")
    return (v + x * m) * p / (p * x + q - 1)


# together --------------------------------------------------------------------------------------------------------

def lifetime_value(bgnbd: BgNbdParams, gamma_gamma: GammaGammaParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
                   mean_value: ArrayLike, months: int = DEFAULT_MONTHS, monthly_discount_rate: float = 0.01,
                   weeks_per_month: float = WEEKS_PER_MONTH) -> Array:
    """Discounted value of the next `months`: each month's expected purchases (differences of E[X(t)]) times the
    expected value of a purchase, divided by (1 + rate) ** month, as lifetimes' customer_lifetime_value does."""
    x, t_x, T, m = _floats(x, t_x, T, mean_value)
    keys, inverse = _distinct_x_T(x, T)
    purchases = _discounted_purchases_if_alive(bgnbd, keys, months, monthly_discount_rate, weeks_per_month)
    return probability_alive(bgnbd, x, t_x, T) * purchases[inverse] * expected_order_value(gamma_gamma, x, m)


def predict(bgnbd: BgNbdParams, gamma_gamma: GammaGammaParams, inputs: ModelInputs,
            horizon_days: float = DEFAULT_HORIZON_DAYS, months: int = DEFAULT_MONTHS,
            monthly_discount_rate: float = 0.01) -> Predictions:
    """Every figure for every customer: P(alive), expected orders and churn risk over `horizon_days`, expected
    order value and the discounted value of the next `months` (the functions above, sharing their work)."""
    x, t_x, T, m = inputs.x, inputs.t_x, inputs.T, inputs.mean_repeat_value
    horizon = horizon_days / DAYS_PER_WEEK
    alive = probability_alive(bgnbd, x, t_x, T)
    order_value = expected_order_value(gamma_gamma, x, m)
    keys, inverse = _distinct_x_T(x, T)
    orders_if_alive = _purchases_if_alive(bgnbd, np.float64(horizon), keys.real, keys.imag)[inverse]
    with np.errstate(invalid="ignore", over="ignore"):  # a failure shows as a non-finite figure, refused below
        value_if_alive = _discounted_purchases_if_alive(bgnbd, keys, months, monthly_discount_rate, WEEKS_PER_MONTH)
    predictions = Predictions(
        p_alive=alive,
        expected_orders=alive * orders_if_alive,
        churn_risk=1 - alive * _buys_if_alive(bgnbd, horizon, x, T),
        expected_order_value=order_value,
        predicted_value=alive * value_if_alive[inverse] * order_value,
    )
    _refuse_non_finite(predictions, bgnbd)
    return predictions


def _refuse_non_finite(predictions: Predictions, bgnbd: BgNbdParams) -> None:
    """No figure is published that is not a number: the hypergeometric function behind E[X(t)] fails in corners of
    the parameter space (a + b + x - 1 near 0, a and b in the thousands), where saying so beats a NaN in a segment
    condition."""
    for name in ("p_alive", "expected_orders", "churn_risk", "expected_order_value", "predicted_value"):
        values = getattr(predictions, name)
        bad = ~np.isfinite(values)
        if bad.any():
            raise PredictionError(f"{name} is not a finite number for {int(bad.sum())} customer(s) with the fitted "
                                  f"parameters r={bgnbd.r:.4g}, alpha={bgnbd.alpha:.4g}, a={bgnbd.a:.4g}, "
                                  f"b={bgnbd.b:.4g}; no prediction is made with them")


def _distinct_x_T(x: Array, T: Array) -> tuple[NDArray[np.complex128], NDArray[np.intp]]:
    """The distinct (x, T) pairs, as complex numbers x + iT (they sort by both), and each customer's pair.

    What an alive customer does next depends on (x, T) alone, and ingest's whole days make few distinct pairs, so
    the costly hypergeometric function runs once per pair rather than once per customer.
    """
    keys, inverse = np.unique(x + 1j * T, return_inverse=True)
    return keys, inverse.reshape(-1)


def _discounted_purchases_if_alive(bgnbd: BgNbdParams, keys: NDArray[np.complex128], months: int, rate: float,
                                   weeks_per_month: float) -> Array:
    ends = np.arange(months + 1, dtype=np.float64)[:, None] * weeks_per_month
    cumulative = _purchases_if_alive(bgnbd, ends, keys.real, keys.imag)
    discount = (1 + rate) ** -np.arange(1, months + 1, dtype=np.float64)
    return discount @ np.diff(cumulative, axis=0)


# shared ----------------------------------------------------------------------------------------------------------

def _maximise(log_likelihood: Callable[..., tuple[float, Array | None]], start: Array, customers: int,
              build: Callable[[Array], Params]) -> tuple[Params, FitReport]:
    """L-BFGS-B on log-parameters, minimising the mean negative log-likelihood (scale-free tolerances).

    The duration comes from time.perf_counter, a monotonic counter, not the wall clock the domain may not read.
    """
    def objective(log_theta: Array) -> tuple[float, Array]:
        theta = np.exp(log_theta)
        ll, grad = log_likelihood(theta, gradient=True)
        return -ll / customers, -grad * theta / customers

    started = time.perf_counter()
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      bounds=[(-_LOG_BOUND, _LOG_BOUND)] * len(start),
                      options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-9})
    seconds = time.perf_counter() - started
    converged, message = bool(result.success), str(result.message)
    gradient = float(np.max(np.abs(result.jac)))
    if not converged and result.status == 2 and gradient < _FLAT_GRADIENT:
        # The line search found no better point where the likelihood is a flat ridge running off to infinity
        # (a base where everyone is alike): the optimum is reached in all but name.
        converged, message = True, f"stopped on a flat ridge of the likelihood (gradient {gradient:.1e}): {message}"
    report = FitReport(customers=customers, log_likelihood=-float(result.fun) * customers,
                       iterations=int(result.nit), evaluations=int(result.nfev), seconds=seconds,
                       converged=converged, message=message)
    return build(np.exp(result.x)), report


def _floats(*arrays: ArrayLike) -> tuple[Array, ...]:
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _refuse(bad: NDArray[np.bool_], message: str) -> None:
    if np.any(bad):
        rows = np.flatnonzero(bad)
        raise PredictionError(f"{message}: {len(rows)} customer(s), the first at position {rows[0]}")
