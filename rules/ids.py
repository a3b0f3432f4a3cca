"""Deterministic ids: the same inputs give the same id, so re-running any step never creates a second record."""

from __future__ import annotations

import hashlib

DIGITS = 26  # hex digits of sha256 kept: 104 bits, no collision in any base this tool will see


def digest_id(prefix: str, *parts: str) -> str:
    """`prefix_` and the first DIGITS hex digits of sha256 over `parts` joined by '|'."""
    return f"{prefix}_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:DIGITS]
