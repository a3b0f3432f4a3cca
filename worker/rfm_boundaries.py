"""RFM quintile boundaries over the whole base: recomputed by the scheduler, kept in the store."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from rules import Rules
from rules.metrics import local_date
from rules.rfm import RfmCutoffs, compute_cutoffs
from rules.schema import RFM_METRICS
from worker.store.base import Store

RECOMPUTE_EVERY = timedelta(hours=24)


def load_cutoffs(store: Store) -> RfmCutoffs | None:
    saved = store.rfm_cutoffs()
    return None if saved is None else saved.cutoffs


def rfm_is_stale(store: Store, as_of: datetime) -> bool:
    saved = store.rfm_cutoffs()
    return saved is None or saved.computed_at is None or saved.computed_at + RECOMPUTE_EVERY <= as_of


def refresh_rfm(store: Store, rules: Rules, as_of: datetime) -> bool:
    """Recompute the boundaries when they are a day old (or missing); True if they were recomputed."""
    if not rfm_is_stale(store, as_of):
        return False
    recompute_rfm(store, rules, as_of)
    return True


def recompute_rfm(store: Store, rules: Rules, as_of: datetime) -> RfmCutoffs:
    """compute_rfm, stored for every process to use."""
    cutoffs, customers = _compute(store, rules, as_of)
    store.save_rfm_cutoffs(cutoffs, as_of, customers)
    return cutoffs


def compute_rfm(store: Store, rules: Rules, as_of: datetime) -> RfmCutoffs:
    """One pass over every customer with orders; quintiles of days since last order, order count and spend."""
    return _compute(store, rules, as_of)[0]


def _compute(store: Store, rules: Rules, as_of: datetime) -> tuple[RfmCutoffs, int]:
    tz = rules.tz
    today = local_date(as_of, tz)
    recency, frequency, monetary = [], [], []
    for batch in store.iter_customers(batch_size=5000):
        for record in batch:
            facts = record.facts
            if facts.order_count == 0 or facts.last_order_at is None:
                continue
            recency.append((today - local_date(facts.last_order_at, tz)).days)
            frequency.append(facts.order_count)
            monetary.append(facts.total_cents)
    return compute_cutoffs(recency, frequency, monetary), len(recency)


def evaluation_version(rules: Rules, cutoffs: RfmCutoffs | None) -> str:
    """What a stored evaluation depends on: the rules, and the RFM boundaries when the rules' conditions use them."""
    uses_rfm = any(c.metric in RFM_METRICS for s in rules.segments for c in s.conditions)
    if not uses_rfm or cutoffs is None:
        return rules.rules_version
    digest = hashlib.sha256(json.dumps(cutoffs.as_json(), sort_keys=True).encode()).hexdigest()[:16]
    return f"{rules.rules_version}+rfm:{digest}"
