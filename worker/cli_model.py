"""`model fit` and `model show`: the churn and value model, fitted on demand or read back, as a readable report
(or JSON). Click commands that worker.cli registers."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import click

from worker.cli import Context, _as_of, pass_context
from worker.prediction import FITTED, SavedModel, fit, fit_and_save, saved_model, state_json
from worker.serialize import iso


@click.group()
def model() -> None:
    """The churn risk and lifetime-value model (BG/NBD and Gamma-Gamma)."""


@model.command("fit")
@click.option("--as-of", help="Fit on the orders as they stood at this ISO date/datetime (a backtest: printed, "
                              "not saved). Without it the model is fitted now and saved for every process.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_context
def model_fit(ctx: Context, as_of: str | None, as_json: bool) -> None:
    """Fit the model now on every customer's aggregates, and print its report."""
    rules = ctx.rules_source().current()
    if not rules.prediction.enabled:
        raise click.ClickException("prediction.enabled is false in rules.yaml: nothing to fit")
    if as_of is None:
        store = ctx.writable_store
        store.apply_timezone(rules.timezone)
        result = fit_and_save(store, rules, _as_of(None))
        note = "saved: every process scores with it from its next request or run"
    else:
        moment = _as_of(as_of)
        result = fit(ctx.store, rules, moment, until=moment)
        note = f"backtest on the orders dated up to {iso(moment)}: not saved"
    if as_json:
        click.echo(json.dumps({**result.as_json(), "saved": as_of is None}, indent=2))
    else:
        click.echo(report(result, rules))
        click.echo(f"({note})")
    if result.status != FITTED:
        raise SystemExit(1)


@model.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the stored model as JSON.")
@pass_context
def model_show(ctx: Context, as_json: bool) -> None:
    """Print the stored model: when it was fitted, its parameters and report, and what it says per segment."""
    rules = ctx.rules_source().current()
    saved = saved_model(ctx.store)
    if as_json:
        click.echo(json.dumps(saved.as_json() if saved else state_json(None, rules), indent=2))
        return
    if saved is None or not rules.prediction.enabled:
        click.echo(f"No churn predictions: {state_json(saved, rules)['reason']}.")
        return
    click.echo(report(saved, rules))
    if saved.checked_at is not None:
        due = saved.checked_at + timedelta(hours=rules.prediction.refit_every_hours)
        click.echo(f"Next refit: after {iso(due)} (every {rules.prediction.refit_every_hours} h, by the scheduler)")


def report(saved: SavedModel, rules: Any) -> str:
    """A model's state as a marketer reads it: what it is, how it was fitted, what it says per segment."""
    settings = rules.prediction
    if not saved.usable:
        return f"No churn predictions: {saved.reason}."
    lines = []
    r = saved.report
    lines.append(f"Churn and value model, fitted {iso(saved.fitted_at)} on {r['customers']:,} customers with orders "
                 f"({r['repeatCustomers']:,} ordered on more than one day)")
    if saved.status != FITTED:
        lines.append(f"  The last refit failed ({saved.reason}); this fit stays in use.")
    window = r.get("window", {})
    lines.append(f"  Orders from {window.get('firstOrderDay')} to {window.get('lastOrderDay')}, "
                 f"data as of {r.get('asOf')}; fit took {r['seconds']:.2f} s ({r['readSeconds']:.2f} s reading)")
    bg, gg = saved.params["bgnbd"], saved.params["gammaGamma"]  # type: ignore[index]
    lines.append(f"  When they buy (BG/NBD): r {bg['r']:.4f}, alpha {bg['alpha']:.4f}, a {bg['a']:.4f}, "
                 f"b {bg['b']:.4f}; log-likelihood {r['bgnbd']['logLikelihood']:.2f}, "
                 f"{r['bgnbd']['iterations']} iterations")
    lines.append(f"  How much (Gamma-Gamma): p {gg['p']:.4f}, q {gg['q']:.4f}, v {gg['v']:.4f}; "
                 f"log-likelihood {r['gammaGamma']['logLikelihood']:.2f}, {r['gammaGamma']['iterations']} iterations")
    bands = settings.churn_bands
    lines.append(f"  churnRisk = the chance of no order in the next {settings.horizon_days} days; bands: "
                 f"Low below {bands.medium}, Medium from {bands.medium}, High from {bands.high}; "
                 f"mean churnRisk {r.get('meanChurnRisk')}")
    segments = saved.summary.get("segments") or {}
    if segments:
        lines.append("")
        width = max(len("Segment"), *(len(name) for name in segments))
        lines.append(f"  {'Segment':<{width}}  {'Customers':>9}  {'Low':>7}  {'Medium':>7}  {'High':>7}  "
                     f"{'Predicted value, 12 months':>26}")
        for name, row in segments.items():
            b = row["churnRiskBands"]
            lines.append(f"  {name:<{width}}  {row['customers']:>9,}  {b['Low']:>7,}  {b['Medium']:>7,}  "
                         f"{b['High']:>7,}  {row['predictedClv12m']:>22} {rules.currency}")
        lines.append("  (per segment as stored when the model was fitted)")
    return "\n".join(lines)
