"""Serving under waitress: the API alone, or the API with the scheduler beside it in the same process."""

from __future__ import annotations

import errno
import logging
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store import Store, open_store

if TYPE_CHECKING:
    from worker.scheduler import Jobs

log = logging.getLogger(__name__)

# Why waitress, measured on 2 cores with 200 connections sending one header byte a second (the scenario of
# tests/test_slow_clients.py):
# - gunicorn's gthread reads a request on the thread that will run it, so each slow client holds a thread:
#   /healthz answered 0 of 4 tries within 1 s (2 workers x 8 threads). 256 threads got through 200 such clients
#   and failed at 300: more threads only move the number.
# - gunicorn's gevent worker answered, but its monkey patching turns the scheduler's threads into greenlets, and
#   an evaluation never yields: under `serve`, /healthz stalled 3.5 s while 30,000 customers were evaluated
#   (0.4 s at most with real threads).
# - waitress reads and buffers each request in one poll loop and gives only complete ones to its threads, with
#   no patching (the scheduler, per-thread SQLite connections and delivery's pools stay real threads): every
#   answer within 1 s (under 40 ms), up to CONNECTION_LIMIT slow clients, and as many requests a second as
#   gunicorn's 2 x 8 threads on 2 cores.

# One process, where gunicorn ran WEB_CONCURRENCY workers of 8 threads: as many requests run at once.
THREADS_PER_WORKER = 8
# Connections waiting for their request cost a poll slot, not a thread; waitress's default of 100 would let
# 100 slow clients lock everyone else out. Past this many, new connections wait in the listen backlog.
CONNECTION_LIMIT = 1000
FILES_BESIDES_CONNECTIONS = 200  # SQLite files per thread, logs, pipes, delivery's connections
MAX_HEADER_BYTES = 64 * 1024  # per request, buffered before it runs: bounds what 1000 connections can hold
# Waitress buffers a whole body before the app sees it. It refuses bodies over twice MAX_REQUEST_BYTES itself
# (a plain 413), so that nobody makes it spool its default of 1 GB, while a body just over the limit still gets
# the app's JSON 413 with its security headers.
BODY_BACKSTOP_FACTOR = 2
GRACEFUL_SECONDS = 10  # as gunicorn's graceful_timeout was: requests in flight at SIGTERM get this long
LOOP_SECONDS = 0.5  # how long one poll waits, so how soon a stop request is seen


class CannotListen(OSError):
    """The address cannot be listened on (in use, not this machine's, not allowed); the message says which."""


def serve_api(settings: Settings, workers: int, with_scheduler: bool, host: str = "0.0.0.0",
              app: Callable[..., Any] | None = None, store: Store | None = None,
              rules_source: RulesSource | None = None) -> None:
    """Serve the API on host:PORT until SIGTERM or SIGINT, then finish the requests in flight and return.

    `app` replaces the API (the bench serves a bare WSGI app on exactly this server as its baseline). `store` and
    `rules_source`, when given (already checked by the command line), serve the API; the server closes the store.
    Raises CannotListen before serving anything when the port cannot be had.
    """
    from worker.api import create_app

    if app is None:
        store = store or open_store(settings.database_url)
        rules_source = rules_source or RulesSource(settings.rules_file, settings.env)
        app = create_app(settings, store=store, rules_source=rules_source)
    channels: dict[int, Any] = {}
    threads = THREADS_PER_WORKER * max(1, workers)
    try:
        server = create_server(app, map=channels, **_adjustments(settings, threads, host))
    except OSError as exc:
        if store is not None:
            store.close()
        hint = "stop what uses it or set PORT" if exc.errno == errno.EADDRINUSE else "check HOST and PORT"
        raise CannotListen(f"cannot listen on {host}:{settings.port}: {exc.strerror or exc}; {hint}") from None
    stopping = _stop_requested()
    scheduled = _start_scheduler(settings) if with_scheduler else None
    log.info("serving on http://%s:%d with %d threads%s", host, settings.port, threads,
             " and the scheduler" if with_scheduler else "")
    try:
        while not stopping.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, map=channels, use_poll=True, count=1)
    finally:
        log.info("stopping: answering the requests in flight (at most %ds)", GRACEFUL_SECONDS)
        if scheduled is not None:
            scheduled[0].stopping.set()  # a delivery run winds down while the answers drain
        _drain(server, channels, time.monotonic() + GRACEFUL_SECONDS)
        if scheduled is not None:
            _stop_scheduler(*scheduled)
        if store is not None:
            store.close()  # every thread's connection, now that no request runs


def _adjustments(settings: Settings, threads: int, host: str) -> dict[str, Any]:
    return {
        "listen": f"{host}:{settings.port}",
        "threads": threads,
        "connection_limit": _connection_limit(),
        "asyncore_use_poll": True,  # select() fails on a descriptor numbered 1024 or more
        "max_request_header_size": MAX_HEADER_BYTES,
        "max_request_body_size": BODY_BACKSTOP_FACTOR * settings.max_request_bytes,
        "ident": None,  # no Server header: nobody needs to know what answers
    }


def _connection_limit() -> int:
    """CONNECTION_LIMIT, with the open-file limit raised to fit it where allowed (else the limit lowered): an
    accept() that fails for want of a descriptor would spin the poll loop."""
    wanted = CONNECTION_LIMIT + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    return max(1, min(CONNECTION_LIMIT, soft - FILES_BESIDES_CONNECTIONS))


def _stop_requested() -> threading.Event:
    """An event set by SIGTERM or SIGINT; the poll loop looks at it between polls."""
    stopping = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopping


def _drain(server: BaseWSGIServer, channels: dict[int, Any], deadline: float) -> None:
    """Stop listening, close connections with no request running (idle, or still sending one), and keep
    polling until those with one have sent their answer, or the deadline passes."""
    wasyncore.dispatcher.close(server)  # the listening socket only: the wake-up pipe is still needed
    while server.active_channels and time.monotonic() < deadline:
        for channel in list(server.active_channels.values()):
            if not channel.requests:
                channel.close_when_flushed = True
        wasyncore.loop(timeout=LOOP_SECONDS, map=channels, use_poll=True, count=1)
    if server.active_channels:
        log.warning("%d connection(s) still busy after %ds: closing them", len(server.active_channels),
                    GRACEFUL_SECONDS)
    server.task_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(channels)


def _start_scheduler(settings: Settings) -> tuple[Jobs, Any]:
    """The worker and its running scheduler, in the serving process itself: the jobs' threads share the API's
    process (and its /metrics)."""
    from worker.scheduler import Jobs, start_scheduler

    job_worker = Jobs(open_store(settings.database_url), RulesSource(settings.rules_file, settings.env))
    return job_worker, start_scheduler(job_worker)


def _stop_scheduler(job_worker: Jobs, scheduler: Any) -> None:
    scheduler.shutdown(wait=True)  # the job in flight finishes; a delivery run stops early once told to
    job_worker.close()
    job_worker.store.close()
