"""`python -m bench.predict`: how long the churn/value model takes to fit and to score, on customers simulated
from the model itself, each fit against a floor measured in the same run.

The floor is one log-likelihood-and-gradient evaluation at the optimum times the evaluations the fit made: what
the fit would cost if the optimiser and the data preparation were free. Timings are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from rules.predict import (
    DAYS_PER_WEEK,
    BgNbdParams,
    GammaGammaParams,
    ModelInputs,
    _BgNbdData,
    _GammaGammaData,
    fit_bgnbd,
    fit_gamma_gamma,
    predict,
)

# The published CDNOW-sample estimates (Fader, Hardie & Lee 2005): a realistic, heavy-tailed base.
CDNOW_BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, v=15.44)
MAX_AGE_DAYS = 730


@dataclass(frozen=True, eq=False)
class Simulated:
    """Customers drawn from BG/NBD: calibration (x, t_x) over ages T, and repeat purchases in the next horizon."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    future: np.ndarray


def simulate_customers(params: BgNbdParams, T: np.ndarray, horizon: float, rng: np.random.Generator) -> Simulated:
    """The BG/NBD process itself: rate lambda ~ Gamma(r, alpha), dropout p ~ Beta(a, b) after each repeat purchase,
    first purchase at 0. Vectorised over customers, one pass per purchase."""
    n = len(T)
    rate = rng.gamma(params.r, 1 / params.alpha, n)
    dropout = rng.beta(params.a, params.b, n)
    end = T + horizon
    x, t_x, future, clock = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.arange(n)
    with np.errstate(divide="ignore"):
        while active.size:
            clock[active] += rng.exponential(1 / rate[active])
            active = active[clock[active] <= end[active]]
            now = clock[active]
            calibration = now <= T[active]
            x[active[calibration]] += 1
            t_x[active[calibration]] = now[calibration]
            future[active[~calibration]] += 1
            active = active[rng.random(active.size) >= dropout[active]]
    return Simulated(x, t_x, T, future)


def simulate_mean_values(params: GammaGammaParams, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma-Gamma: nu ~ Gamma(q, v) per customer, each purchase ~ Gamma(p, nu), so the mean of x purchases is
    Gamma(p x, nu x); 0 where x == 0."""
    nu = rng.gamma(params.q, 1 / params.v, len(x))
    shape = np.where(x > 0, params.p * x, 1.0)
    return np.where(x > 0, rng.gamma(shape, 1 / (nu * np.maximum(x, 1))), 0.0)


def synthetic_base(customers: int, rng: np.random.Generator) -> ModelInputs:
    """A base as ingest would give it: ages in whole days up to two years, recency cut to the day."""
    T = rng.integers(0, MAX_AGE_DAYS + 1, customers) / DAYS_PER_WEEK
    sim = simulate_customers(CDNOW_BGNBD, T, 0.0, rng)
    t_x = np.floor(sim.t_x * DAYS_PER_WEEK) / DAYS_PER_WEEK
    return ModelInputs(sim.x, t_x, T, simulate_mean_values(CDNOW_GAMMA_GAMMA, sim.x, rng))


def seconds_of(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def one_size(customers: int, rng: np.random.Generator) -> list[str]:
    base = synthetic_base(customers, rng)
    bg, bg_report = fit_bgnbd(base.x, base.t_x, base.T)
    gg, gg_report = fit_gamma_gamma(base.x, base.mean_repeat_value)
    bg_data = _BgNbdData(base.x, base.t_x, base.T)
    bg_eval = min(seconds_of(lambda: bg_data.log_likelihood(np.array([bg.r, bg.alpha, bg.a, bg.b]), True))
                  for _ in range(3))
    paid = (base.x > 0) & (base.mean_repeat_value > 0)
    gg_data = _GammaGammaData(base.x[paid], base.mean_repeat_value[paid])
    gg_eval = min(seconds_of(lambda: gg_data.log_likelihood(np.array([gg.p, gg.q, gg.v]), True)) for _ in range(3))
    score = seconds_of(lambda: predict(bg, gg, base))
    bg_floor, gg_floor = bg_eval * bg_report.evaluations, gg_eval * gg_report.evaluations
    return [
        f"{customers:>9,} BG/NBD fit {bg_report.seconds:7.3f} s ({bg_report.evaluations} evaluations, "
        f"floor {bg_floor:.3f} s, ratio {bg_report.seconds / bg_floor:4.1f}x) "
        f"r={bg.r:.3f} alpha={bg.alpha:.3f} a={bg.a:.3f} b={bg.b:.3f} converged={bg_report.converged}",
        f"{'':>9} Gamma-Gamma fit {gg_report.seconds:7.3f} s ({gg_report.evaluations} evaluations, "
        f"floor {gg_floor:.3f} s, ratio {gg_report.seconds / gg_floor:4.1f}x) "
        f"p={gg.p:.2f} q={gg.q:.2f} v={gg.v:.2f} on {gg_report.customers:,} repeaters",
        f"{'':>9} scoring (every figure, 12-month value included) {score:7.3f} s = "
        f"{customers / score:,.0f} customers/s",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated customer counts")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    one_size(1000, np.random.default_rng(0))  # warm-up: scipy loads parts of itself on first use
    print(f"true r={CDNOW_BGNBD.r} alpha={CDNOW_BGNBD.alpha} a={CDNOW_BGNBD.a} b={CDNOW_BGNBD.b}; "
          f"p={CDNOW_GAMMA_GAMMA.p} q={CDNOW_GAMMA_GAMMA.q} v={CDNOW_GAMMA_GAMMA.v}")
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        print("\n".join(one_size(size, rng)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
