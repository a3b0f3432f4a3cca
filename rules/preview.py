"""What-if: how a candidate rules file would move customers compared with the rules in force. Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from rules.campaigns import campaigns_for_move
from rules.classify import Classifier
from rules.metrics import CustomerFacts
from rules.schema import Rules

SAMPLE_SIZE = 5


@dataclass
class Preview:
    """Counts of moves `(from, to)` under the candidate, the campaign events they would fire, and samples."""

    customers: int = 0
    moves: Counter = field(default_factory=Counter)
    campaigns: Counter = field(default_factory=Counter)
    samples: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    before: Counter = field(default_factory=Counter)
    after: Counter = field(default_factory=Counter)

    @property
    def moved(self) -> int:
        return sum(self.moves.values())


def preview(customers: Iterable[tuple[str, CustomerFacts]], current: Rules, candidate: Rules, as_of: datetime,
            sample_size: int = SAMPLE_SIZE) -> Preview:
    """Classify every customer at `as_of` under both rule sets; nothing is stored, nothing is sent.

    Both sides are evaluated at the same moment, so the result shows the effect of the rule change alone,
    not of time passing since the last evaluation.
    """
    in_force, proposed = Classifier(current), Classifier(candidate)
    result = Preview()
    fired_by_move: dict[tuple[str, str], list[str]] = {}
    for contact_id, facts in customers:
        result.customers += 1
        before = in_force.classify(facts, as_of).segment
        after = proposed.classify(facts, as_of).segment
        result.before[before] += 1
        result.after[after] += 1
        if before == after:
            continue
        move = (before, after)
        result.moves[move] += 1
        if len(result.samples[move]) < sample_size:
            result.samples[move].append(contact_id)
        if facts.order_count:
            if move not in fired_by_move:
                fired_by_move[move] = [name for name, _ in campaigns_for_move(candidate, before, after)]
            result.campaigns.update(fired_by_move[move])
    return result
