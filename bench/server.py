"""`python -m bench.server api|hello`: the server of `python -m worker api` (worker/server.py's waitress and its
settings) bound to 127.0.0.1, serving the real API or, as the baseline, the bare WSGI app of bench/hello.py."""

from __future__ import annotations

import os
import sys

from bench import hello
from worker.logs import configure_logging
from worker.server import serve_api
from worker.settings import Settings

LOOPBACK = "127.0.0.1"
APPS = ("api", "hello")


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in APPS:
        raise SystemExit(f"usage: python -m bench.server {'|'.join(APPS)}")
    settings = Settings.from_env()  # PORT, WEB_CONCURRENCY and the rest, as `python -m worker api` reads them
    configure_logging(settings.log_level, settings.log_format, settings.env)
    serve_api(settings, workers=int(os.environ.get("WEB_CONCURRENCY", "2")), with_scheduler=False, host=LOOPBACK,
              app=hello.app if argv[0] == "hello" else None)


if __name__ == "__main__":
    main(sys.argv[1:])
