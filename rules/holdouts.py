"""Who is held out of a campaign: a deterministic draw from a hash of the salt, the campaign and the contactID, so
every process and backend, before and after a restart, puts a customer in the same group. Pure."""

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
