"""The dashboard at /: server-rendered pages for people, signed in with an API key (segments, transitions per day,
the event queue with replay, customers with search, the rules, campaigns' measured outcomes, threshold experiments
by arm), warning on every page while something is wrong."""

from worker.api.dashboard import (  # noqa: F401  (importing the pages adds them to bp)
    campaigns_page,
    customers,
    experiments_page,
    rules_page,
    views,
)
from worker.api.dashboard.banners import DELIVERY_BEHIND_SECONDS
from worker.api.dashboard.blueprint import CONTENT_SECURITY_POLICY, bp
from worker.api.dashboard.charts import PLOT_BOTTOM, PLOT_TOP, horizontal_bars, transitions_chart
from worker.api.dashboard.session import SESSION_HOURS, SESSION_IDLE_MINUTES, install_dashboard_session, session_secret

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DELIVERY_BEHIND_SECONDS",
    "PLOT_BOTTOM",
    "PLOT_TOP",
    "SESSION_HOURS",
    "SESSION_IDLE_MINUTES",
    "bp",
    "horizontal_bars",
    "install_dashboard_session",
    "session_secret",
    "transitions_chart",
]
