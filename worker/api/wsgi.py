"""The gunicorn entry point (Procfile `web`: `gunicorn ... worker.api.wsgi:app`), configured from the environment."""

import logging

from worker.api import create_app
from worker.settings import Settings

settings = Settings.from_env()
logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app(settings)
