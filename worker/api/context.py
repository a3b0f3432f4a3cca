"""What every API request works with: settings, the store, the rules in force and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app

from rules import Classifier, Rules
from worker.prediction import load_model, saved_model
from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store.base import PREDICTION_MODEL_KEY, SavedRfm, Store

EXTENSION = "segment_worker"


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    rules_source: RulesSource
    clock: Callable[[], datetime]
    _compiled: tuple[Rules, SavedRfm | None, str | None, Classifier] | None = field(default=None, init=False,
                                                                                  repr=False)

    def rules(self) -> Rules:
        return self.rules_source.current()

    def delivery_problem(self) -> str | None:
        """Why nothing is delivered, or None: as the scheduler last found it (it has the delivery settings), else as
        this process's own rules see it, before any scheduler has run."""
        said = self.store.delivery_state()
        return self.rules().delivery_problem if said is None else said[0]

    def classifier(self) -> Classifier:
        """A Classifier for the rules in force, the latest RFM boundaries and the fitted churn model, compiled again
        only on change."""
        rules = self.rules()
        rfm = self.store.rfm_cutoffs()
        model = self.store.get_meta(PREDICTION_MODEL_KEY)
        compiled = self._compiled
        if compiled is None or compiled[0] is not rules or compiled[1] != rfm or compiled[2] != model:
            saved = None if model is None else saved_model(self.store)
            compiled = (rules, rfm, model, Classifier(rules, None if rfm is None else rfm.cutoffs,
                                                      load_model(self.store, rules, saved) if saved else None))
            self._compiled = compiled
        return compiled[3]


def context() -> ApiContext:
    return current_app.extensions[EXTENSION]
