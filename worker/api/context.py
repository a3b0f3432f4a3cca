"""What every API request works with: settings, the store, the rules in force and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app

from rules import Classifier, Rules
from worker.rfm import RFM_KEY, load_cutoffs
from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store.base import Store

EXTENSION = "segment_worker"


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    rules_source: RulesSource
    clock: Callable[[], datetime]
    _compiled: tuple[Rules, str | None, Classifier] | None = field(default=None, init=False, repr=False)

    def rules(self) -> Rules:
        return self.rules_source.current()

    def classifier(self) -> Classifier:
        """A Classifier for the rules in force and the latest RFM boundaries, compiled again only on change."""
        rules = self.rules()
        rfm_raw = self.store.get_meta(RFM_KEY)
        compiled = self._compiled
        if compiled is None or compiled[0] is not rules or compiled[1] != rfm_raw:
            compiled = (rules, rfm_raw, Classifier(rules, load_cutoffs(self.store)))
            self._compiled = compiled
        return compiled[2]


def context() -> ApiContext:
    return current_app.extensions[EXTENSION]
