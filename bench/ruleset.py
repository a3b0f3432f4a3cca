"""The repo's rules.yaml as the bench uses it: first_run switched to `emit`, so the first full evaluation records
a transition (and its campaign events) for every customer rather than a silent baseline."""

from __future__ import annotations

from collections.abc import Mapping

from bench.dataset import RULES_FILE, WEBHOOK_SECRET
from rules import Rules
from worker.rules_file import load_rules_file


def bench_rules(webhook_base: str = "http://127.0.0.1:9/webhook", env: Mapping[str, str] | None = None) -> Rules:
    values = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "N8N_WEBHOOK_URL": webhook_base, **(env or {})}
    return load_rules_file(RULES_FILE, values).model_copy(update={"first_run": "emit"})
