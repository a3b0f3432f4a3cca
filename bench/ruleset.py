"""The repo's rules.yaml as the bench uses it: first_run switched to `emit`, so the first full evaluation records
a transition (and its campaign events) for every customer rather than a silent baseline, and no pacing."""

from __future__ import annotations

from collections.abc import Mapping

from bench.dataset import RULES_FILE, WEBHOOK_SECRET
from rules import Rules
from worker.rules_file import load_rules_file


def bench_rules(webhook_base: str = "http://127.0.0.1:9/webhook", env: Mapping[str, str] | None = None) -> Rules:
    values = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": webhook_base, **(env or {})}
    rules = load_rules_file(RULES_FILE, values)
    # The delivery scenarios measure how fast the loop can go, so the shipped pacing for n8n is lifted.
    unpaced = {name: hook.model_copy(update={"max_per_second": None}) for name, hook in rules.webhooks.items()}
    return rules.model_copy(update={"first_run": "emit", "webhooks": unpaced})


def fit_rules(rules: Rules, customers: int) -> Rules:
    """The rules for fitting on a base of `customers`: the shipped gate of customers with an order (500) comes down
    to half the base when the base is smaller than twice that (the smoke run's 300; a few generated customers have
    no counted order), so the fit still runs; the row's note says so."""
    settings = rules.prediction
    if customers // 2 >= settings.min_customers_with_orders:
        return rules
    lowered = settings.model_copy(update={"min_customers_with_orders": max(customers // 2, 1)})
    return rules.model_copy(update={"prediction": lowered})
