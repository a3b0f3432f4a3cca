"""The segmentation domain: rules.yaml model, classification and campaign matching. Pure: no I/O, no clock."""

from rules.campaigns import (
    Announced,
    Fired,
    bands_reached,
    campaigns_for_move,
    event_id,
    milestones_reached,
    undone_because,
)
from rules.classify import Classification, Classifier
from rules.metrics import CustomerFacts, days_between
from rules.reader import RulesError
from rules.schema import Rules, parse_rules

__all__ = [
    "Announced", "Classification", "Classifier", "CustomerFacts", "Fired", "Rules", "RulesError", "bands_reached",
    "campaigns_for_move",
    "days_between", "event_id", "milestones_reached", "parse_rules",
    "undone_because",
]
