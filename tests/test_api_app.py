"""The application factory owns the store it opens: closed with the app, never per request; a store passed in is
left to its owner."""

from __future__ import annotations

import gc

from worker.api import create_app
from worker.api.context import EXTENSION


def test_a_store_the_app_opened_is_closed_with_the_app(settings, admin_headers):
    app = create_app(settings)
    client = app.test_client()
    store = app.extensions[EXTENSION].store
    assert client.get("/api/customers", headers=admin_headers).status_code == 200
    assert store._opened
    del app, client
    gc.collect()
    assert not store._opened


def test_a_store_passed_in_stays_open_after_the_app(settings, store):
    app = create_app(settings, store=store)
    app.test_client().get("/healthz")
    del app
    gc.collect()
    assert store._opened
    assert store.count_customers() == 0
