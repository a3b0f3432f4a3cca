"""Rules preview over the whole store: reads every customer once, writes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rules import Classifier, CustomerFacts, Rules
from rules.preview import Preview, preview
from worker.prediction import load_model, saved_model
from worker.rfm_boundaries import load_cutoffs
from worker.serialize import iso
from worker.store.base import Store

# A web request that holds a server thread longer than this is one a proxy has likely given up on; the CLI's
# `rules preview` has no such limit. Parsing is not interrupted, but the size and nesting limits of parse_rules
# keep it to a few seconds; reading the customers is stopped between batches.
WEB_PREVIEW_SECONDS = 10.0
_BATCH = 5000


class PreviewOutOfTime(Exception):
    """The deadline passed while the customers were read; `customers` had been compared."""

    def __init__(self, customers: int):
        self.customers = customers
        super().__init__(f"stopped after {customers} customers")


def preview_store(store: Store, current: Rules, candidate: Rules, as_of: datetime,
                  deadline: float | None = None) -> Preview:
    """Compare every customer under both rules, each with the base's RFM boundaries and churn model (under its
    own prediction settings); past `deadline` (time.monotonic()) raise PreviewOutOfTime."""
    cutoffs, saved = load_cutoffs(store), saved_model(store)
    return preview(_facts(store, deadline), current, candidate, as_of,
                   current_classifier=Classifier(current, cutoffs, load_model(store, current, saved)),
                   candidate_classifier=Classifier(candidate, cutoffs, load_model(store, candidate, saved)))


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
        "experiments": {name: [{"arm": arm, "customers": result.arm_customers.get((name, arm), 0),
                                "moved": sum(result.arm_moves[(name, arm)].values()),
                                "moves": [{"from": f, "to": t, "customers": n}
                                          for (f, t), n in result.arm_moves[(name, arm)].most_common()]}
                               for arm in candidate.experiments[name].arms]
                        for name in candidate.running_experiments},
    }


def _facts(store: Store, deadline: float | None) -> Iterator[tuple[str, CustomerFacts]]:
    customers = 0
    for batch in store.iter_customers(batch_size=_BATCH):
        if deadline is not None and time.monotonic() > deadline:
            raise PreviewOutOfTime(customers)
        for record in batch:
            yield record.contact_id, record.facts
        customers += len(batch)
