"""`python -m worker webhooks ...`: look at the webhooks of the rules and send them test events."""

from __future__ import annotations

import click


@click.group()
def webhooks() -> None:
    """The webhooks in the rules."""
