"""The worker loop: APScheduler runs evaluation and delivery on the rules' schedule. Several processes share both
through per-shard leases in the store (worker/shards.py)."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from worker.clock import utc_now
from worker.delivery import CLAIM_SECONDS, DeliveryRun, Senders, deliver_due
from worker.evaluate import RunResult, evaluate_due, prepare_store, store_prepared
from worker.prediction import refresh_model_safely, summarize_after_evaluation
from worker.rfm_boundaries import refresh_rfm
from worker.rules_file import RulesSource
from worker.shards import EVALUATION_LEASE_SECONDS, ShardLeases
from worker.store.base import Store

log = logging.getLogger(__name__)

MAINTENANCE_EVERY_SECONDS = 60
DELIVERY_BUDGET_SECONDS = 20  # one delivery job drains at most this long, so shutdown is never far away
# The delivery lease, renewed between runs and by each run's heartbeat: after a kill -9 another process (or the
# restarted one) takes over within this long, and the dead one's claims lapse just as fast (CLAIM_SECONDS).
DELIVERY_LEASE_SECONDS = CLAIM_SECONDS
_UNSAID = object()


class Jobs:
    """The scheduler's two jobs, usable without any scheduler (tests call `evaluate_once` / `deliver_once`)."""

    def __init__(self, store: Store, rules_source: RulesSource, clock: Callable[[], datetime] = utc_now,
                 holder: str | None = None):
        self.store = store
        self.rules_source = rules_source
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.evaluation_shards = ShardLeases(store, "evaluate", self.holder, clock, EVALUATION_LEASE_SECONDS)
        self.delivery_shards = ShardLeases(store, "deliver", self.holder, clock, DELIVERY_LEASE_SECONDS)
        self.senders = Senders()
        self.stopping = threading.Event()
        self.rng = random.Random()
        self.last_evaluation: RunResult | None = None
        self.last_delivery_at: datetime | None = None
        # Said once in the log and the store when it appears, once when it goes (a fresh process says it at once).
        self.delivery_problem: str | None | object = _UNSAID

    def evaluate_once(self) -> RunResult | None:
        """One evaluation run over the shards this process can take; None if other processes hold them all.

        First the run-wide steps (RFM boundaries, the model's fit, a recount under changed statuses or timezone),
        by one process at a time under the "evaluate" lease; a process that finds them in another's hands
        evaluates under what is stored, or skips this tick while the aggregates are being recounted.
        """
        rules = self.rules_source.current()
        interval = rules.schedule.evaluate_every_seconds
        now = self.clock()
        fitted = None
        if self.store.acquire_lease("evaluate", self.holder, now, max(120.0, 3 * interval)):
            try:
                refresh_rfm(self.store, rules, now)
                fitted = refresh_model_safely(self.store, rules, now)  # under this lease: one fit at a time
                prepare_store(self.store, rules)
            finally:
                self.store.release_lease("evaluate", self.holder)
        elif not store_prepared(self.store, rules):
            return None
        now = self.clock()
        # A shard another process evaluated in this tick's half interval is left alone until the next tick.
        result = evaluate_due(self.store, rules, now, leases=self.evaluation_shards,
                              fresh_since=now - timedelta(seconds=interval / 2))
        summarize_after_evaluation(self.store, rules, fitted, now)
        if result.shards == 0:
            return None
        self.last_evaluation = result
        if result.customers or result.errors:
            log.info("evaluated %d customers: %d transitions, %d events, %d skipped, %d errors in %.2fs",
                     result.customers, result.transitions, result.events, result.skipped, result.errors,
                     result.seconds)
        return result

    def deliver_once(self, budget_seconds: float = DELIVERY_BUDGET_SECONDS) -> DeliveryRun | None:
        """Deliver due events until none is left, the budget is spent or shutdown begins."""
        rules = self.rules_source.current()
        if rules.delivery_problem != self.delivery_problem:
            if rules.delivery_problem is not None:
                log.warning("%s", rules.delivery_problem)
            elif self.delivery_problem is not _UNSAID:
                log.info("delivery is enabled again: every webhook has its settings")
            self.store.record_delivery_state(rules.delivery_problem)  # what /healthz and the dashboard show
            self.delivery_problem = rules.delivery_problem
        if rules.delivery_problem is not None:
            return None  # the events wait in the outbox, in order, until the settings are there
        started = self.clock()
        # This process's share of the shards, for the whole pass: a customer's events go out from one process only.
        member_seconds = max(DELIVERY_LEASE_SECONDS, 3 * rules.schedule.deliver_every_seconds)
        shards = self.delivery_shards.take_share(member_seconds)
        if not shards:
            return None
        total = DeliveryRun()
        renew_leases = self.delivery_shards.renew  # the heartbeat while sends are in flight

        try:
            while not self.stopping.is_set():
                now = self.clock()
                run = deliver_due(self.store, rules, self.senders, now, self.holder, self.rng,
                                  stopping=self.stopping, heartbeat=renew_leases, shards=shards)
                total += run
                if run.attempted == 0 or (now - started).total_seconds() >= budget_seconds:
                    break
                renew_leases()
        finally:
            self.delivery_shards.release_all()
        self.last_delivery_at = self.clock()
        return total

    def close(self) -> None:
        self.senders.close()

    def leave(self) -> None:
        """At shutdown: this process's leases and memberships let go, so the others take its share at once."""
        self.evaluation_shards.leave()
        self.delivery_shards.leave()


def start_scheduler(worker: Jobs) -> BackgroundScheduler:
    """Run both jobs on the rules' intervals in background threads; intervals follow rules.yaml changes."""
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    schedule = worker.rules_source.current().schedule

    intervals = {"evaluate": schedule.evaluate_every_seconds, "deliver": schedule.deliver_every_seconds}

    def evaluate_job() -> None:
        _guarded("evaluation", worker.evaluate_once)
        _follow_schedule(scheduler, worker, intervals)

    scheduler.add_job(evaluate_job, "interval", seconds=schedule.evaluate_every_seconds, id="evaluate", name="evaluate",
                      next_run_time=utc_now(), max_instances=1, coalesce=True)
    scheduler.add_job(lambda: _guarded("delivery", worker.deliver_once), "interval",
                      seconds=schedule.deliver_every_seconds, id="deliver", name="deliver", next_run_time=utc_now(),
                      max_instances=1, coalesce=True)
    scheduler.add_job(lambda: _guarded("maintenance", worker.store.checkpoint), "interval",
                      seconds=MAINTENANCE_EVERY_SECONDS, id="maintain", name="maintain", max_instances=1,
                      coalesce=True)
    scheduler.start()
    return scheduler


def run_forever(worker: Jobs) -> None:
    """The `scheduler` command: run until SIGTERM/SIGINT, then finish the attempt in flight and exit."""
    scheduler = start_scheduler(worker)
    done = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the work in flight", signal.Signals(signum).name)
        worker.stopping.set()
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started as %s", worker.holder)
    while not done.wait(1.0):
        pass
    scheduler.shutdown(wait=True)
    _guarded("leaving", worker.leave)
    worker.close()
    log.info("scheduler stopped")


def _guarded(name: str, job: Callable[[], object]) -> None:
    # A failing run (database locked, rules unreadable) is logged and retried at the next tick, never fatal.
    try:
        job()
    except Exception:
        log.exception("%s run failed; retrying at the next tick", name)


def _follow_schedule(scheduler: BackgroundScheduler, worker: Jobs, intervals: dict[str, float]) -> None:
    # The scheduler's own lookups (get_job, reschedule_job) take the lock that shutdown(wait=True) holds while it
    # waits for this very job: call them only when an interval really changed, and never once stopping began.
    schedule = worker.rules_source.current().schedule
    for job_id, seconds in (("evaluate", schedule.evaluate_every_seconds),
                            ("deliver", schedule.deliver_every_seconds)):
        if intervals.get(job_id) == seconds or worker.stopping.is_set():
            continue
        scheduler.reschedule_job(job_id, trigger="interval", seconds=seconds)
        intervals[job_id] = seconds
        log.info("%s now runs every %ss", job_id, seconds)
