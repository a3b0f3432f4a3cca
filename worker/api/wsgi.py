"""The gunicorn entry point (Procfile `web`: `gunicorn ... worker.api.wsgi:app`), configured from the environment."""

from worker.api import create_app
from worker.logs import configure_logging
from worker.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format, settings.env)
app = create_app(settings)
