"""Work shared across scheduler processes: the base is split into SHARDS shards by a hash of contactID
(`shard_of`), and each shard has its own lease per kind of work ("evaluate", "deliver").

Evaluation walks the shards: each process starts at its own place in the ring, takes every free shard in turn,
evaluates it, and lets it go, so several processes spread a run between them and a shard is never evaluated by
two at once. Delivery takes a fair share of the shards for a whole pass (a customer's events are only ever sent by
the holder of its shard, so their order holds), counting the live processes by their membership leases. A killed
process's leases lapse after their TTL and its shards are taken by the next pass of any other process.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime

from worker.store.base import SHARDS, Store

# A shard's evaluation lease, renewed before each batch: a killed process's shard is taken over this soon.
EVALUATION_LEASE_SECONDS = 60.0


class ShardLeases:
    """One process's leases on the shards of one kind of work."""

    def __init__(self, store: Store, kind: str, holder: str, clock: Callable[[], datetime], ttl_seconds: float):
        self.store, self.kind, self.holder, self.clock, self.ttl = store, kind, holder, clock, ttl_seconds
        self.held: set[int] = set()

    def name(self, shard: int) -> str:
        return f"{self.kind}:{shard}"

    def ring(self) -> list[int]:
        """Every shard, starting at this holder's own place: processes start apart and meet only at the end."""
        start = zlib.crc32(self.holder.encode()) % SHARDS
        return [(start + step) % SHARDS for step in range(SHARDS)]

    def take(self, shard: int) -> bool:
        if self.store.acquire_lease(self.name(shard), self.holder, self.clock(), self.ttl):
            self.held.add(shard)
            return True
        return False

    def release(self, shard: int) -> None:
        self.held.discard(shard)
        self.store.release_lease(self.name(shard), self.holder)

    def walk(self) -> Iterator[int]:
        """Each shard that is free when its turn comes, held while the caller works on it, released after."""
        for shard in self.ring():
            if not self.take(shard):
                continue
            try:
                yield shard
            finally:
                self.release(shard)

    def take_free(self) -> frozenset[int]:
        """Every shard nobody else holds now (the command line's run takes them all at once)."""
        for shard in range(SHARDS):
            self.take(shard)
        return frozenset(self.held)

    def renew(self) -> None:
        """The heartbeat: keep every held lease another TTL (a shard lost meanwhile is dropped; its saves are
        still safe, since every save is conditional on what the evaluation read)."""
        for shard in sorted(self.held):
            if not self.store.acquire_lease(self.name(shard), self.holder, self.clock(), self.ttl):
                self.held.discard(shard)

    def take_share(self, member_seconds: float) -> frozenset[int]:
        """Renew membership (for `member_seconds`: longer than the time between two passes), then take free shards
        up to this process's fair share of them."""
        now = self.clock()
        self.store.acquire_lease(f"{self.kind}-member:{self.holder}", self.holder, now, member_seconds)
        members = len(set(self.store.leases(f"{self.kind}-member:", now).values()) | {self.holder})
        share = math.ceil(SHARDS / members)
        taken = self.store.leases(f"{self.kind}:", now)
        for shard in self.ring():
            if len(self.held) >= share:
                break
            if taken.get(self.name(shard)) in (None, self.holder):
                self.take(shard)
        return frozenset(self.held)

    def release_all(self) -> None:
        for shard in sorted(self.held):
            self.release(shard)

    def leave(self) -> None:
        """At shutdown: every lease let go at once, the membership too, so the others' shares grow now."""
        self.release_all()
        self.store.release_lease(f"{self.kind}-member:{self.holder}", self.holder)
