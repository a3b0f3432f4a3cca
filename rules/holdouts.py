"""Who is held out of a campaign, and who is in which arm of an experiment: deterministic draws from a hash of the
salt, the campaign (or experiment) and the contactID, so every process and backend, before and after a restart, puts
a customer in the same group. Pure."""

from __future__ import annotations

import hashlib
from decimal import Decimal

BUCKETS = 10_000  # hundredths of a percent: holdout_percent has at most two decimals


def bucket(salt: str, campaign: str, contact_id: str) -> int:
    """The customer's place in 0 .. BUCKETS - 1 for this campaign: uniform, and independent across campaigns."""
    digest = hashlib.sha256("\x1f".join((salt, campaign, contact_id)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def draws_held_out(salt: str, campaign: str, contact_id: str, percent: Decimal) -> bool:
    """Whether a customer not assigned yet is held out at `percent` (0 to 50)."""
    return bucket(salt, campaign, contact_id) < int(percent * BUCKETS / 100)


class ArmDraw:
    """The arm of a threshold experiment each customer is in: the arms fill 0 .. BUCKETS - 1 in the order listed, each
    as wide as its share. The draw has its own namespace, so it is independent of every campaign's holdout draw.
    The same shares always give the same arm; changing them moves the customers whose bucket changes hands.
    Built once per experiment: drawing is one hash and a few integer comparisons."""

    def __init__(self, salt: str, experiment: str, shares: tuple[tuple[str, Decimal], ...]):
        # bucket()'s key, all but the contact id: salt, the experiment's namespace, then the contact id
        self._prefix = "\x1f".join((salt, "experiment\x1f" + experiment, "")).encode()
        edges, edge = [], 0
        for arm, share in shares:
            edge += int(share * BUCKETS / 100)
            edges.append((edge, arm))
        self._edges = tuple(edges)
        self._last = shares[-1][0]  # hundredths always fill the range, but the last arm takes any rounding gap

    def arm(self, contact_id: str) -> str:
        digest = hashlib.sha256(self._prefix + contact_id.encode()).digest()
        place = int.from_bytes(digest[:8], "big") % BUCKETS
        for edge, arm in self._edges:
            if place < edge:
                return arm
        return self._last


def experiment_arm(salt: str, experiment: str, contact_id: str, shares: tuple[tuple[str, Decimal], ...]) -> str:
    """The customer's arm (see ArmDraw); for one customer at a time."""
    return ArmDraw(salt, experiment, shares).arm(contact_id)
