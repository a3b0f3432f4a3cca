"""The rules page: the rules in force in plain words, and a preview of an uploaded candidate file."""

from __future__ import annotations

from flask import render_template

from worker.api.dashboard.blueprint import bp


@bp.get("/rules")
def rules() -> str:
    return render_template("dashboard/rules.html")
