"""RFM: recency, frequency and monetary scores 1-5 by quintiles of the current base, and named RFM groups."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

QUINTILES = 5


class RfmGroup(NamedTuple):
    """A named cell of the recency x frequency-monetary grid; both ranges are inclusive scores 1-5."""

    name: str
    recency: tuple[int, int]
    frequency_monetary: tuple[int, int]


# The usual RFM segment map (recency against the mean of frequency and monetary). First match wins.
DEFAULT_GROUPS: tuple[RfmGroup, ...] = (
    RfmGroup("Champions", (5, 5), (4, 5)),
    RfmGroup("Loyal", (3, 4), (4, 5)),
    RfmGroup("Potential loyalist", (4, 5), (2, 3)),
    RfmGroup("New", (5, 5), (1, 1)),
    RfmGroup("Promising", (4, 4), (1, 1)),
    RfmGroup("Needs attention", (3, 3), (3, 3)),
    RfmGroup("About to sleep", (3, 3), (1, 2)),
    RfmGroup("Cannot lose", (1, 2), (5, 5)),
    RfmGroup("At risk", (1, 2), (3, 4)),
    RfmGroup("Lost", (1, 1), (1, 1)),
    RfmGroup("Hibernating", (1, 2), (1, 2)),
)


@dataclass(frozen=True)
class RfmCutoffs:
    """The four quintile boundaries of each measure over the base (ascending). Equal values score equally."""

    recency_days: tuple[int, ...]
    frequency: tuple[int, ...]
    monetary_cents: tuple[int, ...]

    def as_json(self) -> dict[str, list[int]]:
        return {"recencyDays": list(self.recency_days), "frequency": list(self.frequency),
                "monetaryCents": list(self.monetary_cents)}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> RfmCutoffs:
        return cls(tuple(data["recencyDays"]), tuple(data["frequency"]), tuple(data["monetaryCents"]))


class RfmScore(NamedTuple):
    recency: int
    frequency: int
    monetary: int
    group: str


def quintile_cutoffs(values: Sequence[int]) -> tuple[int, ...]:
    """Boundaries so that about a fifth of `values` falls at or below each; deterministic for ties."""
    ordered = sorted(values)
    if not ordered:
        return ()
    return tuple(ordered[max(0, (len(ordered) * k + QUINTILES - 1) // QUINTILES - 1)] for k in range(1, QUINTILES))


def compute_cutoffs(recency_days: Sequence[int], frequency: Sequence[int], monetary_cents: Sequence[int]) -> RfmCutoffs:
    return RfmCutoffs(quintile_cutoffs(recency_days), quintile_cutoffs(frequency), quintile_cutoffs(monetary_cents))


def score_high(value: int, cutoffs: Sequence[int]) -> int:
    """1-5 where more is better (frequency, monetary): one point per boundary the value is above."""
    return 1 + bisect_left(cutoffs, value) if cutoffs else 1


def score_recent(days: int, cutoffs: Sequence[int]) -> int:
    """1-5 where fewer days since the last order is better."""
    return QUINTILES - bisect_left(cutoffs, days) if cutoffs else 1


def rfm_score(last_order_days_ago: int, order_count: int, total_cents: int, cutoffs: RfmCutoffs,
              groups: Sequence[RfmGroup] = DEFAULT_GROUPS) -> RfmScore:
    recency = score_recent(last_order_days_ago, cutoffs.recency_days)
    frequency = score_high(order_count, cutoffs.frequency)
    monetary = score_high(total_cents, cutoffs.monetary_cents)
    return RfmScore(recency, frequency, monetary, rfm_group(recency, frequency, monetary, groups))


def rfm_group(recency: int, frequency: int, monetary: int, groups: Sequence[RfmGroup] = DEFAULT_GROUPS) -> str:
    fm = (frequency + monetary + 1) // 2  # the mean, halves rounded up
    for group in groups:
        if group.recency[0] <= recency <= group.recency[1] and \
                group.frequency_monetary[0] <= fm <= group.frequency_monetary[1]:
            return group.name
    return "Other"
