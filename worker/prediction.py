"""The churn and value model in the store: fitted by the scheduler (or `model fit`) from the aggregates kept at
ingest, saved with its report and a per-segment summary, and loaded by every process that scores customers."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from rules import Rules
from rules.schema import CHURN_BANDS, PredictionRules
from worker.store.base import PREDICTION_MODEL_KEY, PurchaseRow, Store
from worker.store.times import from_iso, iso

log = logging.getLogger(__name__)

FITTED, NOT_ELIGIBLE, FAILED, DISABLED = "fitted", "not_eligible", "failed", "disabled"
UNEVALUATED = "(not evaluated yet)"  # the summary's segment for customers the store has not evaluated


@dataclass(frozen=True)
class SavedModel:
    """What the store holds about the model: its state, the parameters when fitted, the report and summary."""

    status: str  # fitted / not_eligible / failed (a failed refit keeps the parameters of the last good fit)
    checked_at: datetime | None  # the last fit attempt
    reason: str | None  # why there is no (new) model, in a marketer's words
    settings: str  # digest of the prediction settings the attempt used
    fitted_at: datetime | None = None
    params: dict[str, dict[str, float]] | None = None  # {"bgnbd": {r, alpha, a, b}, "gammaGamma": {p, q, v}}
    report: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.params is not None and self.status in (FITTED, FAILED)

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "checkedAt": iso(self.checked_at), "reason": self.reason,
                "settings": self.settings, "fittedAt": iso(self.fitted_at), "params": self.params,
                "report": self.report, "summary": self.summary}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SavedModel:
        return cls(status=data["status"], checked_at=from_iso(data.get("checkedAt") or ""), reason=data.get("reason"),
                   settings=data.get("settings", ""), fitted_at=from_iso(data.get("fittedAt") or ""),
                   params=data.get("params"), report=data.get("report") or {}, summary=data.get("summary") or {})


def saved_model(store: Store) -> SavedModel | None:
    raw = store.get_meta(PREDICTION_MODEL_KEY)
    if raw is None:
        return None
    try:
        return SavedModel.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        log.warning("the stored churn model is unreadable; it is fitted again at the next run")
        return None


def load_model(store: Store, rules: Rules, saved: SavedModel | None = None):  # noqa: ANN201 (FittedModel | None)
    """The model to score with, or None (not fitted, not eligible, or predictions disabled in rules.yaml)."""
    saved = saved if saved is not None else saved_model(store)
    if not rules.prediction.enabled or saved is None or not saved.usable or saved.fitted_at is None:
        return None
    try:
        return fitted_model(saved, rules.prediction)
    except (TypeError, KeyError, ValueError):  # parameters the store holds but cannot make a model of
        log.warning("the stored churn model's parameters are unreadable; no predictions until the next fit")
        return None


def fitted_model(saved: SavedModel, settings: PredictionRules):  # noqa: ANN201
    from rules.predict import BgNbdParams, GammaGammaParams
    from rules.scores import FittedModel

    assert saved.params is not None and saved.fitted_at is not None
    return FittedModel(BgNbdParams(**saved.params["bgnbd"]), GammaGammaParams(**saved.params["gammaGamma"]),
                       saved.fitted_at, settings.horizon_days, float(settings.monthly_discount_rate),
                       settings.churn_bands)


def settings_digest(settings: PredictionRules) -> str:
    """What a fit depends on besides the data: a change of any of these makes the next run fit again."""
    return hashlib.sha256(json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def model_version(rules: Rules, saved: SavedModel | None) -> str | None:
    """What evaluations depend on when the rules read the predictions: the model fitted (None otherwise)."""
    if not rules.uses_predictions or not rules.prediction.enabled or saved is None or not saved.usable:
        return None
    return f"model:{iso(saved.fitted_at)}"


def is_due(store: Store, rules: Rules, as_of: datetime, saved: SavedModel | None = None) -> bool:
    saved = saved if saved is not None else saved_model(store)
    settings = rules.prediction
    if not settings.enabled:
        return False
    if saved is None or saved.checked_at is None or saved.settings != settings_digest(settings):
        return True
    return saved.checked_at + timedelta(hours=settings.refit_every_hours) <= as_of


def refresh_model(store: Store, rules: Rules, as_of: datetime) -> SavedModel | None:
    """Fit again when the model is due (refit_every_hours, or changed settings); the saved state either way.

    A failure is logged and saved as the reason; the last good parameters stay in use. Never raises for the data.
    """
    saved = saved_model(store)
    if not is_due(store, rules, as_of, saved):
        return saved
    return fit_and_save(store, rules, as_of, previous=saved)


def refresh_model_safely(store: Store, rules: Rules, as_of: datetime) -> SavedModel | None:
    """refresh_model for the scheduler and `evaluate`: the purchase days are first counted in the rules'
    timezone; any failure is logged and never stops the evaluation that follows (the last model stays in use).
    Returns the model fitted now, or None when none was."""
    try:
        store.apply_timezone(rules.timezone)
        before = saved_model(store)
        after = refresh_model(store, rules, as_of)
        return after if after is not before else None
    except Exception:
        log.exception("the churn model could not be refreshed; the last one stays in use")
        return None


def summarize_after_evaluation(store: Store, rules: Rules, fitted: SavedModel | None, as_of: datetime) -> None:
    """A fit made before a store's customers were first evaluated summarised them as not evaluated: once the
    evaluation has given them segments, summarise again with the same parameters (no new fit)."""
    if fitted is None or not fitted.usable or UNEVALUATED not in (fitted.summary.get("segments") or {}):
        return
    try:
        rows, inputs = _rows_and_inputs(store, rules, fitted.fitted_at or as_of, None)
        model = fitted_model(fitted, rules.prediction)
        from rules.predict import predict

        predictions = predict(model.bgnbd, model.gamma_gamma, inputs, horizon_days=model.horizon_days,
                              monthly_discount_rate=model.monthly_discount_rate)
        summary = _summary(rows, predictions.churn_risk.round(4), predictions.predicted_value,
                           predictions.expected_orders, rules.prediction)
        store.set_meta(PREDICTION_MODEL_KEY, json.dumps({**fitted.as_json(), "summary": summary}))
    except Exception:
        log.exception("the churn model's per-segment summary could not be made")


def state_json(saved: SavedModel | None, rules: Rules) -> dict[str, Any]:
    """The model's state in a few fields, for /healthz: fitted or not, when, and why not."""
    if not rules.prediction.enabled:
        return {"status": DISABLED, "fittedAt": None, "reason": "prediction.enabled is false in rules.yaml"}
    if saved is None:
        return {"status": "not_fitted", "fittedAt": None, "reason": "the model has not been fitted yet (the "
                "scheduler fits it on its first run, or run `model fit`)"}
    return {"status": saved.status, "fittedAt": iso(saved.fitted_at) if saved.usable else None,
            "reason": saved.reason}


def fit_and_save(store: Store, rules: Rules, as_of: datetime, until: datetime | None = None,
                 previous: SavedModel | None = None) -> SavedModel:
    """Fit on every customer's aggregates at `as_of` (with `until`: on the orders dated no later than it, for a
    backtest) and save the result for every process."""
    result = fit(store, rules, as_of, until)
    if result.status == FAILED:
        previous = previous if previous is not None else saved_model(store)
        if previous is not None and previous.usable:
            result = SavedModel(FAILED, result.checked_at, result.reason, result.settings, previous.fitted_at,
                                previous.params, {**previous.report, "lastFailure": result.reason}, previous.summary)
        log.warning("the churn model could not be fitted: %s", result.reason)
    elif result.status == NOT_ELIGIBLE:
        log.info("no churn predictions yet: %s", result.reason)
    else:
        log.info("churn model fitted on %d customers in %.2fs", result.report["customers"], result.report["seconds"])
    store.set_meta(PREDICTION_MODEL_KEY, json.dumps(result.as_json()))
    return result


def fit(store: Store, rules: Rules, as_of: datetime, until: datetime | None = None) -> SavedModel:
    """The fit itself, saved nowhere: the parameters, the report (n, log-likelihood, iterations, seconds, data
    window) and the summary of bands and predicted value per segment."""
    from rules.predict import PredictionError, eligibility_of, fit_bgnbd, fit_gamma_gamma, predict

    settings = rules.prediction
    digest = settings_digest(settings)
    started = time.perf_counter()
    moment = until if until is not None else as_of
    try:
        rows, inputs = _rows_and_inputs(store, rules, moment, until)
    except PredictionError as exc:
        return SavedModel(FAILED, as_of, f"the stored aggregates are inconsistent: {exc}", digest)
    read_seconds = time.perf_counter() - started
    if not rows:
        return SavedModel(NOT_ELIGIBLE, as_of, f"predictions need at least {settings.min_customers_with_orders} "
                          "customers with an order (there are 0)", digest)
    reason = eligibility_of(inputs, min_customers_with_orders=settings.min_customers_with_orders,
                            min_history_days=settings.min_history_days,
                            min_customers_with_3_orders=settings.min_customers_with_3_orders)
    if reason is not None:
        return SavedModel(NOT_ELIGIBLE, as_of, reason, digest)
    try:
        bgnbd, bg_report = fit_bgnbd(inputs.x, inputs.t_x, inputs.T)
        repeaters = inputs.x > 0
        gamma_gamma, gg_report = fit_gamma_gamma(inputs.x[repeaters], inputs.mean_repeat_value[repeaters])
        predictions = predict(bgnbd, gamma_gamma, inputs, horizon_days=settings.horizon_days,
                              monthly_discount_rate=float(settings.monthly_discount_rate))
    except PredictionError as exc:
        return SavedModel(FAILED, as_of, str(exc), digest)
    if not bg_report.converged:
        return SavedModel(FAILED, as_of, f"the purchase model did not converge ({bg_report.message})", digest)
    seconds = time.perf_counter() - started
    report = {
        "customers": len(rows), "repeatCustomers": int(repeaters.sum()), "asOf": iso(moment),
        "window": {"firstOrderDay": date.fromordinal(min(r.first_day for r in rows)).isoformat(),
                   "lastOrderDay": date.fromordinal(max(r.last_day for r in rows)).isoformat()},
        "bgnbd": _report_json(bg_report), "gammaGamma": _report_json(gg_report),
        "seconds": round(seconds, 3), "readSeconds": round(read_seconds, 3),
        "meanChurnRisk": round(float(predictions.churn_risk.mean()), 4),
    }
    params = {"bgnbd": {"r": bgnbd.r, "alpha": bgnbd.alpha, "a": bgnbd.a, "b": bgnbd.b},
              "gammaGamma": {"p": gamma_gamma.p, "q": gamma_gamma.q, "v": gamma_gamma.v}}
    summary = _summary(rows, predictions.churn_risk.round(4), predictions.predicted_value,
                       predictions.expected_orders, settings)
    return SavedModel(FITTED, as_of, None, digest, as_of, params, report, summary)


def _rows_and_inputs(store: Store, rules: Rules, moment: datetime, until: datetime | None):  # noqa: ANN202
    """Every customer with an order, and the model's arrays for them at `moment` (an order dated after it, a
    clock a little behind, counts at its own day)."""
    import numpy as np

    from rules.predict import inputs_from_store_days

    rows = [row for batch in store.purchase_rows(until) for row in batch]
    first = np.fromiter((r.first_day for r in rows), np.int64, len(rows))
    last = np.fromiter((r.last_day for r in rows), np.int64, len(rows))
    days = np.fromiter((r.purchase_days for r in rows), np.int64, len(rows))
    repeat = np.fromiter((r.total_cents - r.first_day_cents for r in rows), np.int64, len(rows))
    return rows, inputs_from_store_days(first, last, moment.astimezone(rules.tz).toordinal(), days, repeat)


def _report_json(report: Any) -> dict[str, Any]:
    return {"customers": report.customers, "logLikelihood": round(report.log_likelihood, 4),
            "iterations": report.iterations, "evaluations": report.evaluations, "seconds": round(report.seconds, 4),
            "converged": report.converged, "message": report.message}


def _summary(rows: list[PurchaseRow], risk: Any, value: Any, orders: Any, settings: PredictionRules,
             ) -> dict[str, Any]:
    """Per stored segment: customers in each churn band, predicted 12-month value and orders, at the fit."""
    bands = settings.churn_bands
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CHURN_BANDS, 0))
    cents: dict[str, int] = defaultdict(int)
    expected: dict[str, float] = defaultdict(float)
    for row, churn, clv, n in zip(rows, risk.tolist(), value.tolist(), orders.tolist(), strict=True):
        segment = row.segment or UNEVALUATED
        counts[segment][bands.band(churn)] += 1
        cents[segment] += round(clv * 100)
        expected[segment] += n
    return {"bands": {"medium": str(bands.medium), "high": str(bands.high)}, "horizonDays": settings.horizon_days,
            "segments": {segment: {"customers": sum(counts[segment].values()), "churnRiskBands": counts[segment],
                                   "predictedClv12m": f"{Decimal(cents[segment]) / 100:.2f}",
                                   "expectedOrders": round(expected[segment], 1)}
                         for segment in sorted(counts)}}
