"""Rules preview over the whole store: reads every customer once, writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rules import CustomerFacts, Rules
from rules.preview import Preview, preview
from worker.serialize import iso
from worker.store.base import Store


def preview_store(store: Store, current: Rules, candidate: Rules, as_of: datetime) -> Preview:
    return preview(_facts(store), current, candidate, as_of)


def preview_json(result: Preview, current: Rules, candidate: Rules, as_of: datetime) -> dict[str, Any]:
    return {
        "asOf": iso(as_of),
        "currentRulesVersion": current.rules_version,
        "candidateRulesVersion": candidate.rules_version,
        "customers": result.customers,
        "moved": result.moved,
        "moves": [{"from": f, "to": t, "customers": n, "sample": result.samples[(f, t)]}
                  for (f, t), n in result.moves.most_common()],
        "campaigns": dict(result.campaigns.most_common()),
        "segments": {name: {"before": result.before.get(name, 0), "after": result.after.get(name, 0)}
                     for name in dict.fromkeys(current.segment_names + candidate.segment_names)},
    }


def _facts(store: Store) -> Iterator[tuple[str, CustomerFacts]]:
    for batch in store.iter_customers(batch_size=5000):
        for record in batch:
            yield record.contact_id, record.facts
