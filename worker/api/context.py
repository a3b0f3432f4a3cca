"""What every API request works with: settings, the store, the rules in force and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app

from rules import Classifier, Rules
from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store.base import SavedRfm, Store

EXTENSION = "segment_worker"


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    rules_source: RulesSource
    clock: Callable[[], datetime]
    _compiled: tuple[Rules, SavedRfm | None, Classifier] | None = field(default=None, init=False, repr=False)

    def rules(self) -> Rules:
        return self.rules_source.current()

    def delivery_problem(self) -> str | None:
        """Why nothing is delivered, or None: as the scheduler last found it (it has the delivery settings), else as
        this process's own rules see it, before any scheduler has run."""
        said = self.store.delivery_state()
        return self.rules().delivery_problem if said is None else said[0]

    def classifier(self) -> Classifier:
        """A Classifier for the rules in force and the latest RFM boundaries, compiled again only on change."""
        rules = self.rules()
        rfm = self.store.rfm_cutoffs()
        compiled = self._compiled
        if compiled is None or compiled[0] is not rules or compiled[1] != rfm:
            compiled = (rules, rfm, Classifier(rules, None if rfm is None else rfm.cutoffs))
            self._compiled = compiled
        return compiled[2]


def context() -> ApiContext:
    return current_app.extensions[EXTENSION]
