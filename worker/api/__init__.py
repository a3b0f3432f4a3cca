"""The customer API (Flask): `create_app(settings)` builds it; `wsgi.py` is the WSGI entry point."""

from worker.api.app import create_app

__all__ = ["create_app"]
