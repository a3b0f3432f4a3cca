"""The scheduler as it runs in production: real processes killed, stopped and doubled over one SQLite file, the
lease between workers, and rules.yaml changes picked up (or refused) between runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.outbox_helpers import (
    ENV,
    SECRET,
    T0,
    WELCOME_AS_QUEUED,
    StillClock,
    ingest,
    order_json,
    queue_welcomes,
    rules_text,
)
from tests.receiver import ReceivedRequest, Receiver
from worker.delivery import CLAIM_SECONDS, DeliveryRun
from worker.rules_file import RulesSource
from worker.scheduler import DELIVERY_BUDGET_SECONDS, DELIVERY_LEASE_SECONDS, EVALUATION_LEASE_SECONDS, Jobs
from worker.store import open_store
from worker.store.base import SHARDS, Store

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 40
# Stands in for the minutes a restarted worker waits for a killed one's lease and claims to expire.
PAST_EXPIRY_SECONDS = max(CLAIM_SECONDS, DELIVERY_BUDGET_SECONDS + 60, 120) + 30

# A scheduler whose clock runs ahead, as if it were started once the killed process's lease and claims expired.
# Signatures still carry the real time (deliver_due's default), so the receiver accepts them.
RESTART_LATER = """\
import logging, sys
from datetime import datetime, timedelta, timezone
from worker.rules_file import RulesSource
from worker.scheduler import Jobs, run_forever
from worker.store import open_store
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
ahead = timedelta(seconds=float(sys.argv[1]))
worker = Jobs(open_store(sys.argv[2]), RulesSource(sys.argv[3]),
                clock=lambda: datetime.now(timezone.utc) + ahead)
run_forever(worker)
"""


class Processes:
    """Child processes of one test; whatever is still running at the end is killed."""

    def __init__(self, tmp_path: Path, database_url: str, rules_file: Path):
        self.tmp_path = tmp_path
        self.env = {**os.environ, "DATABASE_URL": database_url, "RULES_FILE": str(rules_file),
                    "WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "INFO"}
        self.started: list[subprocess.Popen] = []

    def scheduler(self, name: str) -> subprocess.Popen:
        return self._start(name, [sys.executable, "-m", "worker", "scheduler"])

    def scheduler_later(self, name: str, seconds_ahead: float) -> subprocess.Popen:
        return self._start(name, [sys.executable, "-c", RESTART_LATER, str(seconds_ahead),
                                  self.env["DATABASE_URL"], self.env["RULES_FILE"]])

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def rules_file(tmp_path: Path, receiver: Receiver) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(receiver.url, evaluate_every=1, deliver_every=0.2, campaigns=WELCOME_AS_QUEUED),
                    encoding="utf-8")
    return path


@pytest.fixture
def processes(tmp_path: Path, database_url: str, rules_file: Path, receiver: Receiver) -> Iterator[Processes]:
    # Depends on the receiver so children (and their keep-alive connections) are gone before it stops.
    children = Processes(tmp_path, database_url, rules_file)
    try:
        yield children
    finally:
        children.kill_all()


@pytest.fixture
def queued(store: Store, rules_file: Path) -> list[str]:
    """EVENTS welcome events in the outbox, evaluated at T0 (in the past, so due for the scheduler's real clock).

    The rules only welcome newcomers, so the scheduler's own evaluations (at the real time) add no events.
    """
    rules = RulesSource(rules_file, ENV).current()
    return queue_welcomes(store, rules, EVENTS)


def exit_code(process: subprocess.Popen, log: Callable[[str], str], name: str, within: float = 10) -> int:
    """The exit code of a process asked to stop; fails (the fixture then kills it) if it takes over `within` s."""
    try:
        return process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} did not exit within {within}s of SIGTERM; its log:\n{log(name)}") from None


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def all_delivered(store: Store, ids: list[str]) -> bool:
    return all(store.get_event(i).status == "delivered" for i in ids)


def complete(receiver: Receiver) -> list[ReceivedRequest]:
    """Requests whose whole body arrived: a process killed mid-send leaves headers without a body, which the
    receiver still records (and n8n would reject), so they count as nothing."""
    return [r for r in receiver.requests if len(r.body) == int(r.headers["Content-Length"])]


def delivered_ids(receiver: Receiver) -> list[str]:
    return [r.headers["webhook-id"] for r in complete(receiver) if 200 <= r.status < 300]


def assert_each_request_is_one_signed_event(receiver: Receiver) -> None:
    for request in complete(receiver):
        assert request.signature_valid
        assert request.headers["webhook-id"] == request.json["id"]


def test_kill_9_during_delivery_loses_nothing(store: Store, receiver: Receiver, processes: Processes,
                                              queued: list[str]) -> None:
    receiver.respond_with(200, times=10 * EVENTS, delay=0.05)  # keeps sends in flight when the kill lands
    first = processes.scheduler("first")
    receiver.wait_for(8, timeout=15)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    received_before_restart = len(receiver.requests)
    assert received_before_restart < EVENTS, "the kill should land mid-delivery"

    processes.scheduler_later("restarted", PAST_EXPIRY_SECONDS)
    wait_until(lambda: set(delivered_ids(receiver)) >= set(queued) and all_delivered(store, queued), 20,
               "every event to arrive and be marked delivered")

    assert_each_request_is_one_signed_event(receiver)
    arrivals = Counter(delivered_ids(receiver))
    duplicates = {event_id: n for event_id, n in arrivals.items() if n > 1}
    cut_off = len(receiver.requests) - len(complete(receiver))
    print(f"\nkill -9 after {received_before_restart} requests: {len(duplicates)} event(s) delivered twice, "
          f"{cut_off} request(s) cut off mid-send")
    assert set(arrivals) == set(queued)
    assert all(n <= 2 for n in arrivals.values())


def test_two_schedulers_on_one_database_deliver_each_event_once(store: Store, receiver: Receiver,
                                                                 processes: Processes, queued: list[str]) -> None:
    receiver.respond_with(200, times=10 * EVENTS, delay=0.01)
    first, second = processes.scheduler("first"), processes.scheduler("second")
    wait_until(lambda: all_delivered(store, queued), 20, "every event to be marked delivered")
    time.sleep(1.0)  # room for a late duplicate from the other process
    assert first.poll() is None and second.poll() is None, processes.log("first") + processes.log("second")

    ids = delivered_ids(receiver)
    assert sorted(ids) == sorted(queued)
    assert len(set(ids)) == len(ids) == EVENTS
    assert_each_request_is_one_signed_event(receiver)
    assert all(len(store.attempts_for(i)) == 1 for i in queued)


def test_sigterm_during_delivery_exits_cleanly_and_loses_nothing(store: Store, receiver: Receiver,
                                                                 processes: Processes, rules_file: Path,
                                                                 queued: list[str]) -> None:
    # Only the start-up evaluation runs, and the signal waits for it: SIGTERM during an evaluation run is the
    # next test's subject; this one is about the delivery in flight.
    write_rules(rules_file, rules_text(receiver.url, evaluate_every=3600, deliver_every=0.2,
                                       campaigns=WELCOME_AS_QUEUED))
    receiver.respond_with(200, times=10 * EVENTS, delay=0.2)
    first = processes.scheduler("first")
    wait_until(lambda: f"evaluated {EVENTS} customers" in processes.log("first"), 15, "the start-up evaluation")
    receiver.wait_for(4, timeout=15)
    time.sleep(0.2)
    assert len(receiver.requests) < EVENTS, "the signal should land mid-delivery"
    first.send_signal(signal.SIGTERM)
    assert exit_code(first, processes.log, "first") == 0
    assert "scheduler stopped" in processes.log("first")
    statuses = Counter(store.get_event(i).status for i in queued)
    assert set(statuses) <= {"delivered", "pending"}, statuses
    print(f"\nafter SIGTERM: {dict(statuses)}")

    # A plain restart finishes the rest at once: the stopped process left no lease or claim behind.
    second = processes.scheduler("second")
    wait_until(lambda: "scheduler started" in processes.log("second"), 15, "the second scheduler to start")
    wait_until(lambda: all_delivered(store, queued), 15, "every event to be marked delivered")
    time.sleep(1.0)  # let its start-up evaluation finish
    second.send_signal(signal.SIGTERM)
    assert exit_code(second, processes.log, "second") == 0

    ids = delivered_ids(receiver)
    assert sorted(ids) == sorted(queued), "nothing lost and nothing sent twice after a clean stop"
    assert_each_request_is_one_signed_event(receiver)


def test_sigterm_during_an_evaluation_run_exits_once_the_run_is_done(store: Store, processes: Processes) -> None:
    # Enough changed customers that the scheduler's first evaluation run is still going when the signal lands.
    count = 4000
    ingest(store, [order_json(f"E{n:05d}", f"E{n:05d}-ORD-1", T0 - timedelta(days=2)) for n in range(count)])
    last = f"E{count - 1:05d}"
    scheduler = processes.scheduler("scheduler")
    wait_until(lambda: "scheduler started" in processes.log("scheduler"), 15, "the scheduler to start")
    assert store.get_customer(last).segment is None, "the evaluation run should still be in flight"
    scheduler.send_signal(signal.SIGTERM)
    assert exit_code(scheduler, processes.log, "scheduler") == 0
    assert store.get_customer(last).segment is not None  # the run in flight was finished, not abandoned


# In-process: the Jobs's jobs called directly, with a clock that stands still.


@pytest.fixture
def clock() -> StillClock:
    return StillClock(T0)


def write_rules(path: Path, text: str) -> None:
    # RulesSource notices a change by mtime and size; move the mtime on so a same-size edit is seen too.
    stamp = path.stat().st_mtime if path.exists() else time.time()
    path.write_text(text, encoding="utf-8")
    os.utime(path, (stamp + 1, stamp + 1))


def test_a_changed_rules_file_is_used_by_the_next_run_and_a_bad_one_is_refused(
        tmp_path: Path, store: Store, clock: StillClock) -> None:
    path = tmp_path / "worker-rules.yaml"
    campaigns = "  welcome: {on: {entered: New}, webhook: n8n}\n  vip: {on: {entered: VIP}, webhook: n8n}\n"
    good = rules_text("http://127.0.0.1:9/hook", first_run="baseline", campaigns=campaigns)
    write_rules(path, good)
    source = RulesSource(path, ENV)
    worker = Jobs(store, source, clock=clock, holder="worker-a")
    ingest(store, [order_json("C1", "C1-ORD-1", T0 - timedelta(days=10), "1000.00")])
    assert worker.evaluate_once().baseline
    assert store.get_customer("C1").segment == "New"

    cheaper_vip = good.replace("totalSpend: {gt: 5000}", "totalSpend: {gt: 500}")
    write_rules(path, cheaper_vip)
    clock.advance(minutes=1)
    run = worker.evaluate_once()
    assert (run.customers, run.events) == (1, 1)
    assert store.get_customer("C1").segment == "VIP"
    (event,) = store.list_events("pending", limit=10)
    assert event.campaign == "vip"
    tuned_version = source.current().rules_version

    broken = cheaper_vip.replace("totalSpend: {gt: 500}", "totalSpend: {above: 500}")
    bad_line = next(n for n, line in enumerate(broken.splitlines(), start=1) if "above" in line)
    write_rules(path, broken)
    clock.advance(minutes=1)
    ingest(store, [order_json("C2", "C2-ORD-1", clock.now - timedelta(days=1), "600.00")], clock.now)
    run = worker.evaluate_once()
    assert run is not None and run.events == 1  # still evaluating, with the last good rules
    assert source.current().rules_version == tuned_version
    assert store.get_customer("C2").segment == "VIP"
    assert f"worker-rules.yaml:{bad_line}" in source.error
    assert "above" in source.error

    write_rules(path, good)
    clock.advance(minutes=1)
    worker.evaluate_once()
    assert source.error is None
    assert source.current().rules_version != tuned_version
    worker.close()


def test_a_second_worker_waits_for_held_shards_and_takes_them_over_when_their_leases_expire(
        tmp_path: Path, receiver: Receiver, database_url: str, clock: StillClock) -> None:
    path = tmp_path / "worker-rules.yaml"
    write_rules(path, rules_text(receiver.url))
    store_a, store_b = open_store(database_url), open_store(database_url)
    a = Jobs(store_a, RulesSource(path, ENV), clock=clock, holder="worker-a")
    b = Jobs(store_b, RulesSource(path, ENV), clock=clock, holder="worker-b")
    try:
        queue_welcomes(store_a, a.rules_source.current(), 1)

        # A's delivery is in flight (the receiver is slow), holding every shard (it was alone when it began): B
        # may not deliver meanwhile.
        receiver.respond_with(200, delay=0.5)
        outcome: list[DeliveryRun | None] = []
        sending = threading.Thread(target=lambda: outcome.append(a.deliver_once()))
        sending.start()
        receiver.wait_for(1)
        assert b.deliver_once() is None
        sending.join(timeout=10)
        assert outcome == [DeliveryRun(delivered=1)]
        assert b.deliver_once() == DeliveryRun()  # A released its shards when it finished

        # A crashes while evaluating: every shard's lease stays until it expires.
        clock.advance(seconds=3600)
        for shard in range(SHARDS):
            assert store_a.acquire_lease(f"evaluate:{shard}", a.holder, clock.now, EVALUATION_LEASE_SECONDS)
        assert b.evaluate_once() is None
        clock.advance(seconds=EVALUATION_LEASE_SECONDS - 1)
        assert b.evaluate_once() is None
        clock.advance(seconds=2)
        run = b.evaluate_once()
        assert run is not None and run.shards == SHARDS
        for shard in range(SHARDS):
            assert store_a.acquire_lease(f"deliver:{shard}", a.holder, clock.now, DELIVERY_LEASE_SECONDS)
        assert b.deliver_once() is None
        clock.advance(seconds=DELIVERY_LEASE_SECONDS + 1)
        assert b.deliver_once() == DeliveryRun()
        assert delivered_ids(receiver) == [store_a.list_events(None, limit=1)[0].id]
    finally:
        a.close()
        b.close()
        store_a.close()
        store_b.close()
