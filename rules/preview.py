"""What-if: how a candidate rules file would move customers compared with the rules in force. Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
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
    # per running experiment of the candidate, per arm: its customers and their moves
    arm_customers: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    arm_moves: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def moved(self) -> int:
        return sum(self.moves.values())


def preview(customers: Iterable[tuple[str, CustomerFacts]], current: Rules, candidate: Rules, as_of: datetime,
            sample_size: int = SAMPLE_SIZE, current_classifier: Classifier | None = None,
            candidate_classifier: Classifier | None = None, batch_size: int = 2000) -> Preview:
    """Classify every customer at `as_of` under both rule sets; nothing is stored, nothing is sent.

    Both sides are evaluated at the same moment, so the result shows the effect of the rule change alone,
    not of time passing since the last evaluation. Under a candidate with a running experiment each customer is
    classified in its arm, and the moves are also counted per arm. The classifiers, when given, carry the base's RFM
    boundaries and churn model (conditions on them hold as in an evaluation); customers are classified a batch at a
    time.
    """
    in_force = current_classifier or Classifier(current)
    proposed = candidate_classifier or Classifier(candidate)
    result = Preview()
    fired_by_move: dict[tuple[str, str], list[str]] = {}
    for batch in _batches(customers, batch_size):
        facts = [f for _, f in batch]
        for (contact_id, f), before, after in zip(batch, in_force.classify_many(facts, as_of),
                                                  proposed.classify_many(facts, as_of), strict=True):
            fired = _count(result, fired_by_move, candidate, contact_id, f, before.segment, after.segment,
                           sample_size)
            for arm in after.experiments:
                result.arm_customers[arm] += 1
                if before.segment != after.segment:
                    result.arm_moves[arm][(before.segment, after.segment)] += 1
            result.campaigns.update(c for c in fired if proposed.campaign_blocked(c, f, after) is None)
    return result


def _count(result: Preview, fired_by_move: dict[tuple[str, str], list[str]], candidate: Rules, contact_id: str,
           facts: CustomerFacts, before: str, after: str, sample_size: int) -> list[str]:
    """Counts one customer; returns the campaigns its move fires (before their `when` conditions)."""
    result.customers += 1
    result.before[before] += 1
    result.after[after] += 1
    if before == after:
        return []
    move = (before, after)
    result.moves[move] += 1
    if len(result.samples[move]) < sample_size:
        result.samples[move].append(contact_id)
    if not facts.order_count:
        return []
    if move not in fired_by_move:
        fired_by_move[move] = [name for name, _ in campaigns_for_move(candidate, before, after)]
    return fired_by_move[move]


def _batches(items: Iterable[tuple[str, CustomerFacts]], size: int) -> Iterator[list[tuple[str, CustomerFacts]]]:
    batch: list[tuple[str, CustomerFacts]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
