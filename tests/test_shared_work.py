"""Several scheduler processes on one store share evaluation and delivery by shard (worker/shards.py), on both
backends: together they evaluate every customer once per run and deliver every event once; a crashed one's shards
are taken over once its leases lapse."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.factories import order
from tests.outbox_helpers import ENV, T0, WELCOME_AS_QUEUED, StillClock, ingest, order_json, queue_welcomes, rules_text
from tests.receiver import Receiver
from worker.clock import utc_now
from worker.rules_file import RulesSource
from worker.scheduler import DELIVERY_LEASE_SECONDS, EVALUATION_LEASE_SECONDS, Jobs
from worker.store.base import SHARDS, Store, shard_of

CUSTOMERS = 120


@pytest.fixture
def rules_path(tmp_path: Path, receiver: Receiver) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url, campaigns=WELCOME_AS_QUEUED), encoding="utf-8")
    return path


@pytest.fixture
def team(backend: Backend, rules_path: Path) -> Iterator[list[Jobs]]:
    """Three scheduler processes' jobs, each with its own connection to the one store, on one still clock."""
    clock = StillClock(T0 + timedelta(days=1))
    jobs = [Jobs(backend.open(), RulesSource(rules_path, ENV), clock=clock, holder=f"worker-{n}") for n in range(3)]
    yield jobs
    for job in jobs:
        job.close()
        job.store.close()


def customers(store: Store, count: int = CUSTOMERS) -> list[str]:
    ids = [f"C{n:04d}" for n in range(count)]
    ingest(store, [order_json(c, f"{c}-ORD-1", T0 - timedelta(days=1)) for c in ids], T0)
    return ids


def test_processes_running_at_once_evaluate_every_customer_exactly_once(team: list[Jobs]) -> None:
    ids = customers(team[0].store)
    start = threading.Barrier(len(team))
    results = {}

    def run(job: Jobs) -> None:
        start.wait()
        results[job.holder] = job.evaluate_once()

    threads = [threading.Thread(target=run, args=(job,)) for job in team]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    runs = [r for r in results.values() if r is not None]
    # a customer evaluated twice would be saved (and counted) twice; one never evaluated would be missing
    assert sum(r.customers for r in runs) == len(ids)
    assert sum(r.shards for r in runs) == SHARDS
    assert all(team[0].store.get_customer(c).segment == "New" for c in ids)
    assert team[0].store.count_events("pending") == len(ids)
    print(f"\nshards per process: {[r.shards for r in runs]}")


def test_a_process_evaluates_only_the_shards_it_can_take(team: list[Jobs]) -> None:
    a, b = team[0], team[1]
    ids = customers(a.store)
    for shard in range(SHARDS // 2):  # A is in the middle of evaluating the first half
        assert a.evaluation_shards.take(shard)
    run = b.evaluate_once()
    theirs = [c for c in ids if shard_of(c) >= SHARDS // 2]
    assert run is not None and run.shards == SHARDS // 2 and run.customers == len(theirs)
    assert {c for c in ids if a.store.get_customer(c).segment is not None} == set(theirs)
    # A finishes its half; nothing is evaluated twice, and B's next tick has nothing left
    a.evaluation_shards.release_all()
    mine = a.evaluate_once()
    assert mine is not None and mine.customers == len(ids) - len(theirs)
    assert all(a.store.get_customer(c).segment == "New" for c in ids)
    assert a.store.last_run().customers == len(ids)


def test_a_crashed_process_shard_is_taken_over_once_its_lease_lapses(team: list[Jobs]) -> None:
    a, b = team[0], team[1]
    ids = customers(a.store)
    crashed = shard_of(ids[0])
    assert a.evaluation_shards.take(crashed)  # A dies holding it: it never releases the lease
    first = b.evaluate_once()
    left = [c for c in ids if shard_of(c) == crashed]
    assert first is not None and first.customers == len(ids) - len(left)
    assert all(b.store.get_customer(c).segment is None for c in left)
    b.clock.advance(seconds=EVALUATION_LEASE_SECONDS - 1)
    again = b.evaluate_once()  # the crashed shard is still leased; the others have nothing due
    assert again is not None and again.customers == 0 and again.shards == SHARDS - 1
    b.clock.advance(seconds=2)
    second = b.evaluate_once()
    assert second is not None and second.customers == len(left) and second.shards >= 1
    assert all(b.store.get_customer(c).segment == "New" for c in left)


def test_processes_share_delivery_by_shard_and_send_every_event_once(team: list[Jobs], receiver: Receiver) -> None:
    a, b, _ = team
    events = queue_welcomes(a.store, a.rules_source.current(), 60, as_of=T0)
    for job in (a, b):  # both are members: each takes half of the shards in a pass
        job.delivery_shards.take_share(DELIVERY_LEASE_SECONDS)
        job.delivery_shards.release_all()
    receiver.respond_with(200, times=200, delay=0.1)  # sends in flight: the two passes overlap
    start = threading.Barrier(2)
    runs, shares = {}, {}

    def deliver(job: Jobs) -> None:
        start.wait()
        take = job.delivery_shards.take_share
        job.delivery_shards.take_share = lambda seconds: shares.setdefault(job.holder, take(seconds))
        runs[job.holder] = job.deliver_once()

    threads = [threading.Thread(target=deliver, args=(job,)) for job in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    arrivals = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(arrivals) == set(events) and set(arrivals.values()) == {1}
    assert [len(s) for s in shares.values()] == [SHARDS // 2] * 2
    assert shares[a.holder].isdisjoint(shares[b.holder])
    assert runs[a.holder].delivered + runs[b.holder].delivered == len(events)
    assert runs[a.holder].delivered > 0 and runs[b.holder].delivered > 0


def test_a_crashed_process_delivery_shards_are_taken_over_once_their_leases_lapse(
        team: list[Jobs], receiver: Receiver) -> None:
    a, b, _ = team
    events = queue_welcomes(a.store, a.rules_source.current(), 30, as_of=T0)
    held = a.delivery_shards.take_share(DELIVERY_LEASE_SECONDS)  # A alone holds every shard, then dies
    assert len(held) == SHARDS
    receiver.respond_with(200, times=100)
    assert b.deliver_once() is None
    b.clock.advance(seconds=DELIVERY_LEASE_SECONDS + 1)
    run = b.deliver_once()
    assert run is not None and run.delivered == len(events)
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(events)


def test_the_command_line_run_leaves_a_shard_a_running_scheduler_holds_to_it(runner, store: Store) -> None:
    now = utc_now()
    contacts = [f"C{n:03d}" for n in range(40)]
    store.upsert_orders([order(c, f"{c}-1", now - timedelta(days=3)) for c in contacts], now)
    busy = shard_of(contacts[0])
    assert store.acquire_lease(f"evaluate:{busy}", "scheduler-x", now, EVALUATION_LEASE_SECONDS)

    first = runner.invoke("evaluate")
    assert first.exit_code == 0, first.output
    assert f"1 of {SHARDS} shards were being evaluated by a running scheduler: left to it" in first.output
    left = [c for c in contacts if shard_of(c) == busy]
    assert f"customers evaluated: {len(contacts) - len(left)}" in first.output
    assert [c for c in contacts if store.get_customer(c).segment is None] == left
    assert store.leases("evaluate:", utc_now()) == {f"evaluate:{busy}": "scheduler-x"}  # its own were released

    store.release_lease(f"evaluate:{busy}", "scheduler-x")
    second = runner.invoke("evaluate")
    assert f"customers evaluated: {len(left)}" in second.output and "left to it" not in second.output
    assert all(store.get_customer(c).segment is not None for c in contacts)
