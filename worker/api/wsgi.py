"""The WSGI entry point for a server of your own choosing (`worker.api.wsgi:app`), configured from the environment.

The Procfile's `web` is `python -m worker api`: waitress, set up in worker/server.py to withstand slow clients.
"""

from worker.api import create_app
from worker.logs import configure_logging
from worker.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format, settings.env)
app = create_app(settings)
