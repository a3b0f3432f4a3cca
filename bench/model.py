"""Churn model scenarios: the fit through the product on the imported store, what scoring adds to a full
evaluation (child processes, with and without the saved model), and a large fit on simulated customers."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.dataset import snapshot
from bench.evaluation import FullRun, first_full_evaluation
from bench.predict import CDNOW_BGNBD, CDNOW_GAMMA_GAMMA, synthetic_base
from rules import Rules
from rules.predict import BgNbdParams, _BgNbdData, _GammaGammaData, fit_bgnbd, fit_gamma_gamma, predict
from worker.prediction import FITTED, SavedModel, _rows_and_inputs, fit_and_save, settings_digest
from worker.store.base import PREDICTION_MODEL_KEY, RULES_VERSION_KEY
from worker.store.sqlite import SQLiteStore


@dataclass(frozen=True)
class FitRun:
    """`fit_and_save` on the store (median of `repeats`) and the bare read + BG/NBD fit on the same store; whether
    the product kept the fit (it refuses parameters whose predictions are not finite) and why not."""

    seconds: float
    baseline_seconds: float
    fitted: bool
    reason: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class ScoringRun:
    """Full evaluations of everyone, each on its own copy of the same store, with and without the saved model."""

    with_model: list[FullRun]
    without_model: list[FullRun]

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.with_model)

    @property
    def baseline_seconds(self) -> float:
        return statistics.median(run.seconds for run in self.without_model)


def warm_up() -> None:
    """scipy loads parts of itself on the first fit; the product's long-lived processes pay that once."""
    base = synthetic_base(1000, np.random.default_rng(0))
    fit_bgnbd(base.x, base.t_x, base.T)
    repeaters = base.x > 0
    fit_gamma_gamma(base.x[repeaters], base.mean_repeat_value[repeaters])


def fit_through_store(db: Path, rules: Rules, as_of: datetime, repeats: int) -> FitRun:
    """`worker.prediction.fit_and_save` as the scheduler calls it (read every customer's aggregates, fit both
    models, score and summarise everyone, save), then the baseline: the same read and the BG/NBD fit alone."""
    warm_up()
    store = SQLiteStore(db)
    try:
        store.apply_timezone(rules.timezone)  # as refresh_model does first: a no-op when the days are counted so
        times, saved = [], None
        for _ in range(repeats):
            started = time.perf_counter()
            saved = fit_and_save(store, rules, as_of)
            times.append(time.perf_counter() - started)
        assert saved is not None
        bare = []
        for _ in range(repeats):
            started = time.perf_counter()
            _, inputs = _rows_and_inputs(store, rules, as_of, None)  # the arrays fit_and_save builds
            params, report = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
            bare.append(time.perf_counter() - started)
        floor = _bgnbd_floor(inputs.x, inputs.t_x, inputs.T, params, report.evaluations)
    finally:
        store.close()
    details = {"customers": len(inputs), "status": saved.status, "reason": saved.reason,
               "log_likelihood": report.log_likelihood, "iterations": report.iterations,
               "evaluations": report.evaluations, "bgnbd_params": asdict(params),
               "bgnbd_floor_seconds": floor, "runs_seconds": times, "baseline_runs_seconds": bare,
               "gate_min_customers_with_orders": rules.prediction.min_customers_with_orders}
    if saved.status == FITTED:  # the product's own report of its last fit
        details.update(read_seconds=saved.report["readSeconds"], fit_report_seconds=saved.report["seconds"],
                       repeat_customers=saved.report["repeatCustomers"], bgnbd=saved.report["bgnbd"],
                       gamma_gamma=saved.report["gammaGamma"])
    return FitRun(statistics.median(times), statistics.median(bare), saved.status == FITTED, saved.reason, details)


def saved_model_json(db: Path) -> str:
    """The model a store holds, as saved (the meta row every evaluating process loads)."""
    store = SQLiteStore(db)
    try:
        saved = store.get_meta(PREDICTION_MODEL_KEY)
    finally:
        store.close()
    if saved is None:
        raise RuntimeError(f"{db} holds no saved model")
    return saved


def stand_in_model_json(rules: Rules, as_of: datetime) -> str:
    """The published CDNOW estimates as a model fitted at `as_of`: scoring does the same passes whatever the
    parameters, so the overhead can still be measured on a base whose own fit the product refused."""
    params = {"bgnbd": asdict(CDNOW_BGNBD), "gammaGamma": asdict(CDNOW_GAMMA_GAMMA)}
    saved = SavedModel(FITTED, as_of, None, settings_digest(rules.prediction), as_of, params,
                       {"standIn": "CDNOW estimates (bench)"})
    return json.dumps(saved.as_json())


def scoring_overhead(db: Path, model_json: str, work: Path, as_of: datetime, repeats: int,
                     reset_version: bool) -> ScoringRun:
    """Full evaluations of everyone in a child process, each on its own copy of `db`: half with `model_json` saved
    as the store's model, half without any. `reset_version` forgets what the stored evaluations were made with,
    so an evaluated store re-evaluates everyone (as after a rules change, or a refit the rules read); a freshly
    imported store evaluates everyone anyway. The pairs alternate which goes first, so a machine getting busier
    hurts both alike."""
    with_model, without_model = [], []
    for pair in range(repeats):
        for keep_model in ((True, False) if pair % 2 == 0 else (False, True)):
            copy = _evaluation_copy(db, work / "scoring.db", model_json if keep_model else None, reset_version)
            run = first_full_evaluation(copy, as_of)
            copy.unlink(missing_ok=True)
            if run.scored != keep_model:
                raise RuntimeError(f"an evaluation {'with' if keep_model else 'without'} a saved model "
                                   f"{'did not score' if keep_model else 'scored'}")
            (with_model if keep_model else without_model).append(run)
    return ScoringRun(with_model, without_model)


def large_fit(customers: int, seed: int) -> dict[str, Any]:
    """Both fits and the scoring of everyone on `customers` simulated from the CDNOW estimates (bench/predict.py);
    the simulation stands in for reading the store, which at this size would need a many-minute import."""
    warm_up()
    started = time.perf_counter()
    base = synthetic_base(customers, np.random.default_rng(seed))
    build = time.perf_counter() - started
    started = time.perf_counter()
    bgnbd, bg = fit_bgnbd(base.x, base.t_x, base.T)
    repeaters = base.x > 0
    gamma_gamma, gg = fit_gamma_gamma(base.x[repeaters], base.mean_repeat_value[repeaters])
    fit = time.perf_counter() - started
    started = time.perf_counter()
    predict(bgnbd, gamma_gamma, base)
    score = time.perf_counter() - started
    gg_data = _GammaGammaData(base.x[repeaters], base.mean_repeat_value[repeaters])
    gg_eval = _seconds_of_one(lambda: gg_data.log_likelihood(np.array([gamma_gamma.p, gamma_gamma.q,
                                                                       gamma_gamma.v]), True))
    floor = _bgnbd_floor(base.x, base.t_x, base.T, bgnbd, bg.evaluations) + gg_eval * gg.evaluations
    return {"customers": customers, "seconds": fit, "build_inputs_seconds": build,
            "with_build_seconds": build + fit, "scoring_seconds": score, "floor_seconds": floor,
            "converged": bg.converged and gg.converged, "bgnbd_seconds": bg.seconds, "gamma_gamma_seconds": gg.seconds,
            "log_likelihood": bg.log_likelihood, "iterations": bg.iterations, "evaluations": bg.evaluations,
            "repeat_customers": int(repeaters.sum())}


def _evaluation_copy(db: Path, to: Path, model_json: str | None, reset_version: bool) -> Path:
    snapshot(db, to)
    conn = sqlite3.connect(to)
    with conn:
        if reset_version:
            conn.execute("DELETE FROM meta WHERE key = ?", (RULES_VERSION_KEY,))
        conn.execute("DELETE FROM meta WHERE key = ?", (PREDICTION_MODEL_KEY,))
        if model_json is not None:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (PREDICTION_MODEL_KEY, model_json))
    conn.close()
    return to


def _bgnbd_floor(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, params: BgNbdParams, evaluations: int) -> float:
    """bench/predict.py's floor: one log-likelihood and gradient at the optimum times the evaluations made."""
    data = _BgNbdData(x, t_x, T)
    theta = np.array([params.r, params.alpha, params.a, params.b])
    return _seconds_of_one(lambda: data.log_likelihood(theta, True)) * evaluations


def _seconds_of_one(step: Callable[[], object]) -> float:
    """The quickest of three: the floor is what one evaluation costs when nothing else gets in the way."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - started)
    return best
