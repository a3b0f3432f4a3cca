"""Serving under gunicorn: the API alone, or the API with the scheduler beside it in the same process."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from worker.rules_file import RulesSource
from worker.settings import Settings
from worker.store import open_store


class _Server(BaseApplication):
    def __init__(self, settings: Settings, workers: int, with_scheduler: bool):
        self.settings = settings
        self.workers = workers
        self.with_scheduler = with_scheduler
        self.scheduled: dict[str, Any] = {}
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", f"0.0.0.0:{self.settings.port}")
        self.cfg.set("workers", self.workers)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", 8)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("accesslog", None)
        if self.with_scheduler:
            self.cfg.set("post_worker_init", self._start_scheduler)
            self.cfg.set("worker_exit", self._stop_scheduler)

    def load(self):
        from worker.api import create_app

        rules_source = RulesSource(self.settings.rules_file, self.settings.env)
        return create_app(self.settings, store=open_store(self.settings.database_url), rules_source=rules_source)

    def _start_scheduler(self, _worker: Any) -> None:
        # Runs inside the (single) gunicorn worker process, after fork, so the threads live where the API lives.
        from worker.scheduler import Worker, start_scheduler

        store = open_store(self.settings.database_url)
        job_worker = Worker(store, RulesSource(self.settings.rules_file, self.settings.env))
        self.scheduled.update(worker=job_worker, scheduler=start_scheduler(job_worker))

    def _stop_scheduler(self, _server: Any, _worker: Any) -> None:
        job_worker, scheduler = self.scheduled.get("worker"), self.scheduled.get("scheduler")
        if job_worker is not None:
            job_worker.stopping.set()
            scheduler.shutdown(wait=True)
            job_worker.close()


def serve_api(settings: Settings, workers: int, with_scheduler: bool) -> None:
    _Server(settings, workers, with_scheduler).run()
