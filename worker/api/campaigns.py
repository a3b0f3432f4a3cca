"""Campaigns over HTTP: the campaigns of the rules in force (what a subscriber can choose), and each campaign's
measured outcomes: sent against held out, the uplift with its interval, and the verdict."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from werkzeug.exceptions import BadRequest, NotFound

from rules import Rules
from rules.describe import describe_campaign
from worker.api.context import context
from worker.api.params import as_of_param
from worker.experiments import experiment_report, experiment_summary_json, spans
from worker.experiments import report_json as experiment_json
from worker.outcomes import DEFAULT_EFFECT, campaign_report, report_json

bp = Blueprint("campaigns", __name__)


@bp.get("/campaigns")
def list_campaigns() -> dict[str, Any]:
    rules = context().rules()
    data = [{"name": name, "description": describe_campaign(name, campaign, rules.currency),
             "webhook": campaign.webhook, "trigger": campaign.on.model_dump(mode="json", by_alias=True,
                                                                            exclude_none=True),
             "segment": campaign.segment, "holdoutPercent": float(campaign.holdout_percent),
             "outcomeDays": campaign.outcome_days}
            for name, campaign in rules.campaigns.items()]
    return {"data": data, "count": len(data), "experiments": _experiments(rules)}


@bp.get("/experiments")
def list_experiments() -> dict[str, Any]:
    experiments = _experiments(context().rules())
    return {"data": experiments, "count": len(experiments)}


@bp.get("/experiments/<name>/outcomes")
def experiment_outcomes(name: str) -> dict[str, Any]:
    ctx = context()
    rules = ctx.rules()
    if name not in rules.experiments:
        raise NotFound(f"experiment '{name}' is not in the rules in force (experiments: "
                       f"{', '.join(rules.experiments) or 'none'})")
    as_of = as_of_param() or ctx.clock()
    return {"data": experiment_json(experiment_report(ctx.store, rules, name, as_of), rules)}


def _experiments(rules: Rules) -> list[dict[str, Any]]:
    if not rules.experiments:
        return []
    started = spans(context().store)
    return [experiment_summary_json(rules, name, started.get(name)) for name in rules.experiments]


@bp.get("/campaigns/<name>/outcomes")
def campaign_outcomes(name: str) -> dict[str, Any]:
    ctx = context()
    rules = ctx.rules()
    if name not in rules.campaigns:
        raise NotFound(f"campaign '{name}' is not in the rules in force (campaigns: "
                       f"{', '.join(rules.campaigns) or 'none'})")
    as_of = as_of_param() or ctx.clock()
    return {"data": report_json(campaign_report(ctx.store, rules, name, as_of, _effect()), rules.currency)}


def _effect() -> float:
    raw = request.args.get("effect")
    if raw is None:
        return DEFAULT_EFFECT
    try:
        effect = float(raw)
    except ValueError:
        raise BadRequest(f"effect: a share such as 0.05 (5 points of conversion), got {raw!r}") from None
    if not 0.001 <= effect <= 0.5:
        raise BadRequest(f"effect: between 0.001 and 0.5 (0.1 to 50 points of conversion), got {raw}")
    return effect
