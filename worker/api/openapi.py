"""GET /api/openapi.json: the OpenAPI 3.1 description of every route, built from the rules in force."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from rules import Rules
from worker.api.context import context
from worker.api.events import MAX_CAMPAIGN_CHARS, STATUSES
from worker.api.params import DEFAULT_LIMIT, DEFAULT_SORT, EARLIEST_AS_OF, LATEST_AS_OF, MAX_LIMIT, SORTS
from worker.store.base import BULK_REPLAY_LIMIT

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]


@bp.get("/openapi.json")
def openapi_json() -> Schema:
    return openapi_document(context().rules())


def openapi_document(rules: Rules) -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Segment worker customer API",
            "version": "1",
            "description": "Lifecycle segments and purchase frequency per customer, order intake and the "
                           "webhook event outbox. Money is a string with two decimals; times are UTC ISO 8601 "
                           "with milliseconds and Z.",
        },
        "security": [{"bearerAuth": []}, {"apiKey": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A key from API_KEYS (read) or ADMIN_API_KEYS (read and write)."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "The same keys as bearerAuth, for clients that cannot set Authorization."},
            },
            "parameters": _parameters(rules),
            "responses": _error_responses(),
            "schemas": _schemas(),
        },
    }


def _paths() -> Schema:
    read_errors = _errors(400, 401, 404)
    return {
        "/api/customers": {"get": _operation(
            "List customers, optionally by segment and purchase frequency, in pages ordered by contactID or by "
            "`sort`. `total` counts every customer of the filter: the stored segments (as of the last evaluation) "
            "without asOf, the classification at asOf with it; it is null where the store cannot count it without "
            "reading the whole segment (DynamoDB with both segment and purchaseFrequency).",
            "CustomerList", ["segment", "purchaseFrequency", "sort", "limit", "cursor", "asOf"], _errors(400, 401))},
        "/api/customers.csv": {"get": {
            "summary": "The customer list as CSV, streamed (same filters as /api/customers, no paging).",
            "parameters": [{"$ref": f"#/components/parameters/{name}"}
                           for name in ("segment", "purchaseFrequency", "asOf")],
            "responses": {"200": {"description": "CSV with a header row",
                                  "content": {"text/csv": {"schema": {"type": "string"}}}},
                          **_errors(400, 401)},
        }},
        "/api/customers/{contactID}": {"get": _operation(
            "One customer as classified now (or at asOf).", "CustomerResponse", ["contactID", "asOf"],
            read_errors)},
        "/api/customers/{contactID}/transitions": {"get": _operation(
            "The customer's segment moves, oldest first.", "TransitionList", ["contactID"], _errors(401, 404))},
        "/api/customers/{contactID}/events": {"get": _operation(
            "The customer's latest `limit` webhook events, every status, oldest first.", "CustomerEvents",
            ["contactID", "limit"], read_errors)},
        "/api/segments": {"get": _operation(
            "Customers and spend per segment, every segment of the rules included; with `experiment`, also per arm "
            "of that threshold experiment (a read of every customer).", "SegmentsResponse",
            ["asOf", "splitByExperiment"], _errors(400, 401))},
        "/api/orders": {"post": {
            **_operation("Record orders (upsert by orderReference; a batch is all or nothing) and re-evaluate "
                         "the touched customers at once. Needs a write key.", "OrdersResult", [],
                         _errors(400, 401, 403, 413)),
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("OrdersRequest")}}},
        }},
        "/api/events": {"get": _operation(
            "Webhook events in the outbox, oldest first; `total` counts the events of the status (all of them "
            "without one).", "EventList", ["status", "limit", "cursor"], _errors(400, 401))},
        "/api/events/replay": {"post": {
            **_operation(f"Replay dead events in bulk, oldest first: at most `limit` (up to {BULK_REPLAY_LIMIT}) a "
                         "call are made pending again, due now, each checked once more before it is sent; "
                         "`remaining` says how many matching dead events wait for another call. Only dead events: "
                         "a superseded event is replayed one at a time (POST /api/events/{eventId}/replay), since "
                         "it is then sent without its re-check. Needs a write key.", "BulkReplayResult", [],
                         _errors(400, 401, 403, 413), status="202"),
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": _ref("BulkReplayRequest")}}},
        }},
        "/api/events/{eventId}": {"get": _operation(
            "One event and its delivery attempts.", "EventDetail", ["eventId"], _errors(401, 404))},
        "/api/events/{eventId}/replay": {"post": _operation(
            "Make an event pending again, due now. Needs a write key. A held-out event (its customer is in the "
            "campaign's control group) is never replayed: 409.", "EventResponse", ["eventId"],
            _errors(401, 403, 404, 409), status="202")},
        "/api/campaigns": {"get": _operation(
            "The campaigns of the rules in force, with their trigger, holdout and outcome window.", "CampaignList",
            [], _errors(401))},
        "/api/campaigns/{campaign}/outcomes": {"get": _operation(
            "A campaign's measured outcomes, overall and per month of the events: customers sent and held out whose "
            "outcome window has closed, how many ordered, the uplift with its 95 % interval, revenue per customer, "
            "and a verdict. `effect` sizes the 'too few customers yet' advice (default 0.05: 5 points).",
            "CampaignOutcomes", ["campaign", "asOf", "effect"], _errors(400, 401, 404))},
        "/api/webhooks": {
            "get": _operation("The webhook subscriptions (without their secrets). Needs a write key.",
                              "SubscriptionList", [], _errors(401, 403)),
            "post": {
                **_operation("Subscribe a URL to campaigns (what the n8n trigger node does when its workflow is "
                             "activated): every event of those campaigns is queued for it too, signed with the "
                             "subscription's own secret, answered here once. Needs a write key.",
                             "SubscriptionCreated", [], _errors(400, 401, 403, 413), status="201"),
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("SubscriptionRequest")}}},
            }},
        "/api/webhooks/{subscriptionId}": {"delete": {
            "summary": "Delete a subscription (its events not yet sent go to dead). Needs a write key.",
            "parameters": [{"$ref": "#/components/parameters/subscriptionId"}],
            "responses": {"204": {"description": "Deleted"}, **_errors(401, 403, 404)}}},
        "/api/experiments": {"get": _operation(
            "The threshold experiments of the rules in force: segment, condition, arms, status.", "ExperimentList",
            [], _errors(401))},
        "/api/experiments/{experiment}/outcomes": {"get": _operation(
            "A threshold experiment's report per arm: customers who entered the segment after it started (each "
            "customer's first entry), and, over the windows closed by asOf, how many ordered again, orders and "
            "spend per customer, each with a 95 % interval.", "ExperimentOutcomes", ["experiment", "asOf"],
            _errors(400, 401, 404))},
        "/api/rules/preview": {"post": {
            **_operation("Preview a candidate rules file: how many customers would move from which segment to "
                         "which, the campaign events the moves would fire, a sample of customers per move. "
                         "Nothing is stored or sent. Needs a write key.", "PreviewResponse", ["asOf"],
                         _errors(400, 401, 403, 413)),
            "requestBody": {"required": True, "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": _object({"rules": {"type": "string"}})},
            }},
        }},
        "/api/openapi.json": {"get": {
            "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}, **_errors(401)},
        }},
        "/healthz": {"get": {
            "summary": "Liveness, rules and delivery status: degraded (still 200) while a refused rules file is "
                       "being ignored, or while delivery is disabled for want of a webhook's environment variable.",
            "security": [],
            "responses": {"200": _json("Healthy or degraded", "Health"),
                          "503": _json("The store does not answer", "Health")},
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics. Needs a key unless the server runs with METRICS_PUBLIC=true.",
            "responses": {"200": {"description": "Prometheus text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors(401)},
        }},
    }


def _operation(summary: str, schema: str, parameters: list[str], errors: Schema, status: str = "200") -> Schema:
    return {
        "summary": summary,
        "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in parameters],
        "responses": {status: _json(summary.split(".")[0], schema), **errors},
    }


def _errors(*statuses: int) -> Schema:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
             413: "TooLarge",
             429: "TooManyRequests", 503: "Unavailable"}
    if 401 in statuses:  # wherever a key is checked, repeated wrong keys are slowed down; the store may be busy
        statuses += (429, 503)
    return {str(status): {"$ref": f"#/components/responses/{names[status]}"} for status in statuses}


def _error_responses() -> Schema:
    return {
        "BadRequest": _json("A parameter or the body is invalid; the message names it", "Error"),
        "Unauthorized": _json("No valid API key", "Error"),
        "Forbidden": _json("The key may read but not write", "Error"),
        "NotFound": _json("No such customer, event or campaign", "Error"),
        "Conflict": _json("Not done in the state the resource is in", "Error"),
        "TooLarge": _json("The body is larger than MAX_REQUEST_BYTES", "Error"),
        "TooManyRequests": {**_json("Too many wrong API keys from this address; retry after Retry-After seconds",
                                    "Error"), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        "Unavailable": {**_json("The store is busy (a long import), or a preview ran out of time; retry after "
                                "Retry-After seconds", "Error"),
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    }


def _parameters(rules: Rules) -> Schema:
    return {
        "segment": _query("segment", "Only customers in this segment.", {"enum": list(rules.segment_names)}),
        "purchaseFrequency": _query("purchaseFrequency", "Only customers with this purchase frequency.",
                                    {"enum": list(rules.frequency_names)}),
        "limit": _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                                "default": DEFAULT_LIMIT}),
        "cursor": _query("cursor", "nextCursor from the previous page (of the same filters and sort).",
                         {"type": "string"}),
        "sort": _query("sort", "Order of the list: a field, ascending, or with a leading '-' descending "
                       "(-totalSpend: the biggest spenders first). Days since the last order is the last order "
                       "date reversed: -lastOrderDate lists the fewest days first. Customers without a counted "
                       "order have no last order and come first by lastOrderDate. Ties go by contactID, in the "
                       f"same direction. Default {DEFAULT_SORT}.", {"enum": list(SORTS), "default": DEFAULT_SORT}),
        "asOf": _query("asOf", "Evaluate at this moment instead of now: an ISO 8601 date or datetime "
                       f"from {EARLIEST_AS_OF.date()} to before {LATEST_AS_OF.date()}.",
                       {"type": "string", "examples": ["2026-02-21", "2026-02-21T08:30:00Z"]}),
        "status": _query("status", "Only events with this delivery status.", {"enum": list(STATUSES)}),
        "contactID": {"name": "contactID", "in": "path", "required": True, "schema": {"type": "string"}},
        "eventId": {"name": "eventId", "in": "path", "required": True, "schema": {"type": "string"}},
        "subscriptionId": {"name": "subscriptionId", "in": "path", "required": True, "schema": {"type": "string"}},
        "campaign": {"name": "campaign", "in": "path", "required": True, "schema": {"type": "string"}},
        "experiment": {"name": "experiment", "in": "path", "required": True, "schema": {"type": "string"}},
        "splitByExperiment": _query("experiment", "Also count per arm of this experiment of the rules.",
                                    {"enum": list(rules.experiments)} if rules.experiments else {"type": "string"}),
        "effect": _query("effect", "The uplift, as a share of customers, that 'too few customers yet' sizes the "
                         "groups for.", {"type": "number", "minimum": 0.001, "maximum": 0.5, "default": 0.05}),
    }


def _schemas() -> Schema:
    return {
        "Error": _object({"error": {"type": "string"},
                          "errors": {"type": "array", "items": {"type": "string"},
                                     "description": "Every problem: each rejected order record or rules line, named"}},
                         required=["error"]),
        "Money": {"type": "string", "pattern": r"^\d+\.\d{2}$", "examples": ["1245.50"]},
        "Timestamp": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
                      "examples": ["2025-10-15T08:30:00.000Z"]},
        "CustomerMetrics": _object({
            "orderCount": {"type": "integer", "minimum": 0},
            "totalSpend": _ref("Money"),
            "firstOrderDate": _nullable(_ref("Timestamp")),
            "lastOrderDate": _nullable(_ref("Timestamp")),
            "lastOrderReference": {"type": ["string", "null"]},
            "segment": {"type": "string"},
            "lastOrderDaysAgo": {"type": ["integer", "null"]},
            "purchaseFrequency": {"type": "string"},
            "rfm": _nullable(_ref("Rfm")),
            "predicted": _nullable(_ref("Predicted")),
        }),
        "Predicted": {**_object({
            "churnRisk": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "P(no order in the next prediction.horizon_days days), BG/NBD"},
            "churnRiskBand": {"type": "string", "enum": ["Low", "Medium", "High"]},
            "pAlive": {"type": "number", "minimum": 0, "maximum": 1},
            "expectedOrders90d": {"type": "number", "minimum": 0},
            "predictedClv12m": _ref("Money"),
            "modelFittedAt": _ref("Timestamp"),
        }), "description": "The churn and value model's figures; null until a model is fitted (see /healthz)"},
        "Rfm": _object({
            "recency": {"type": "integer", "minimum": 1, "maximum": 5},
            "frequency": {"type": "integer", "minimum": 1, "maximum": 5},
            "monetary": {"type": "integer", "minimum": 1, "maximum": 5},
            "group": {"type": "string", "examples": ["Champions", "At risk"]},
        }),
        "Customer": _object({
            "contactID": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "metrics": _ref("CustomerMetrics"),
            "experiments": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "experiment -> arm, for each running threshold experiment: the customer's "
                                           "segment was decided under that arm's threshold"},
        }),
        "CustomerResponse": _object({"data": _ref("Customer")}),
        "CustomerList": _page("Customer", total=_nullable_total(
            "Customers of the filter (not only this page); null where the store cannot count them cheaply")),
        "CustomerEvents": _object({"data": {"type": "array", "items": _ref("Event")},
                                   "count": {"type": "integer", "minimum": 0}}),
        "SegmentSummary": _object({
            "segment": {"type": "string"},
            "customers": {"type": "integer", "minimum": 0},
            "totalSpend": _ref("Money"),
            "share": {"type": "number", "minimum": 0, "maximum": 1},
        }),
        "SegmentsResponse": _object({
            "data": {"type": "array", "items": _ref("SegmentSummary")},
            "customers": {"type": "integer", "minimum": 0},
            "asOf": _ref("Timestamp"),
            "experiment": {"type": "string"},
            "arms": {"type": "array", "items": _object({
                "arm": {"type": "string"}, "data": {"type": "array", "items": _ref("SegmentSummary")},
                "customers": {"type": "integer", "minimum": 0}})},
        }, required=["data", "customers", "asOf"]),
        "Transition": _object({
            "id": {"type": "string"},
            "contactID": {"type": "string"},
            "from": {"type": ["string", "null"]},
            "to": {"type": "string"},
            "occurredAt": _ref("Timestamp"),
            "detectedAt": _ref("Timestamp"),
            "rulesVersion": {"type": "string"},
        }),
        "TransitionList": _object({"data": {"type": "array", "items": _ref("Transition")},
                                   "count": {"type": "integer"}}),
        "Event": _object({
            "id": {"type": "string"},
            "contactID": {"type": "string"},
            "campaign": {"type": "string"},
            "webhook": {"type": "string"},
            "type": {"type": "string"},
            "status": {"enum": list(STATUSES)},
            "attempts": {"type": "integer", "minimum": 0},
            "occurredAt": _ref("Timestamp"),
            "createdAt": _ref("Timestamp"),
            "nextAttemptAt": _nullable(_ref("Timestamp")),
            "deliveredAt": _nullable(_ref("Timestamp")),
            "lastStatus": {"type": ["integer", "null"]},
            "lastError": {"type": ["string", "null"],
                          "description": "the last failure; for a superseded event, why it was not sent"},
            "supersededBy": {"type": ["string", "null"],
                             "description": "the transition that undid the move (superseded events)"},
            "recheck": {"type": "boolean",
                        "description": "false once a superseded event was replayed: it is sent without the re-check"},
        }),
        "Attempt": _object({
            "attemptedAt": _ref("Timestamp"),
            "status": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "durationMs": {"type": "integer", "minimum": 0},
        }),
        "EventList": _page("Event", total={"type": "integer", "minimum": 0,
                                           "description": "Events of the status (all events without one)"}),
        "BulkReplayRequest": _object({
            "status": {"enum": ["dead"], "default": "dead", "description": "Only dead events are replayed in bulk"},
            "campaign": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_CAMPAIGN_CHARS,
                         "description": "Only this campaign's events; absent or null: every campaign"},
            "limit": {"type": "integer", "minimum": 1, "maximum": BULK_REPLAY_LIMIT, "default": BULK_REPLAY_LIMIT},
        }, required=[]),
        "BulkReplayResult": _object({
            "queued": {"type": "integer", "minimum": 0, "description": "Dead events made pending by this call"},
            "remaining": {"type": "integer", "minimum": 0,
                          "description": "Matching events still dead: call again to replay them"},
            "status": {"enum": ["dead"]},
            "campaign": {"type": ["string", "null"]},
        }),
        "EventResponse": _object({"data": _ref("Event")}),
        "SubscriptionRequest": _object({
            "url": {"type": "string", "format": "uri", "maxLength": 2000, "description": "http:// or https://"},
            "campaigns": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "description": {"type": "string", "maxLength": 200}}, required=["url", "campaigns"]),
        "Subscription": _object(_SUBSCRIPTION),
        "SubscriptionCreated": _object({**_SUBSCRIPTION, "secret": {
            "type": "string", "description": "whsec_...: verify each event's Standard Webhooks signature with it"}}),
        "SubscriptionList": _object({"data": {"type": "array", "items": _ref("Subscription")},
                                     "count": {"type": "integer", "minimum": 0}}),
        "CampaignList": _object({"data": {"type": "array", "items": _ref("Campaign")},
                                 "count": {"type": "integer", "minimum": 0},
                                 "experiments": {"type": "array", "items": _ref("Experiment")}}),
        "ExperimentList": _object({"data": {"type": "array", "items": _ref("Experiment")},
                                   "count": {"type": "integer", "minimum": 0}}),
        "Experiment": _object(_experiment_fields()),
        "ExperimentOutcomes": _object({"data": _object({
            **_experiment_fields(), "asOf": _ref("Timestamp"), "currency": {"type": "string"},
            "confidence": {"type": "number"},
            "restarted": {"type": "boolean", "description": "its arms changed (or a winner was withdrawn) once: "
                                                            "measuring began again then"},
            "arms": {"type": "array", "items": _ref("ArmReport")},
            "wholeArms": {"type": "array", "items": _ref("ArmTotals"),
                          "description": "every customer drawn into each arm, over the experiment: the fair "
                                         "comparison of thresholds (empty before it starts)"}})}),
        "ArmTotals": _object({
            "arm": {"type": "string"}, "customers": {"type": "integer", "minimum": 0},
            "buyers": {"type": "integer", "minimum": 0}, "orders": {"type": "integer", "minimum": 0},
            "revenue": _ref("Money"), "conversion": _ref("Interval"),
            "revenuePerCustomer": _object({"value": _nullable(_ref("Money")), "low": _nullable(_ref("Money")),
                                           "high": _nullable(_ref("Money"))}),
            "versusFirstArm": _nullable(_object({
                "difference": _object({k: {"type": ["string", "null"], "pattern": r"^[+-]\d+\.\d{2}$"}
                                       for k in ("value", "low", "high")}),
                "verdict": {"enum": ["more revenue per customer", "less revenue per customer",
                                     "no measurable difference", "too few customers yet"]}})),
        }),
        "ArmReport": _object({
            "arm": {"type": "string"}, "value": {"type": ["string", "number"]}, "share": {"type": "number"},
            "entered": {"type": "integer", "minimum": 0}, "stillOpen": {"type": "integer", "minimum": 0},
            "measured": {"type": "integer", "minimum": 0}, "converted": {"type": "integer", "minimum": 0},
            "orders": {"type": "integer", "minimum": 0}, "revenue": _ref("Money"),
            "conversion": _ref("Interval"), "ordersPerCustomer": _ref("Interval"),
            "spendPerCustomer": _object({"value": _nullable(_ref("Money")), "low": _nullable(_ref("Money")),
                                         "high": _nullable(_ref("Money"))}),
            "note": {"type": "string"},
        }),
        "Interval": _object({"value": {"type": ["number", "null"]}, "low": {"type": ["number", "null"]},
                             "high": {"type": ["number", "null"]}}, ),
        "Campaign": _object({
            "name": {"type": "string"}, "description": {"type": "string"}, "webhook": {"type": "string"},
            "trigger": {"type": "object"}, "segment": {"type": ["string", "null"]},
            "holdoutPercent": {"type": "number", "minimum": 0, "maximum": 50},
            "outcomeDays": {"type": "integer", "minimum": 1},
        }),
        "CampaignOutcomes": _object({"data": _ref("CampaignReport")}),
        "CampaignReport": _object({
            "campaign": {"type": "string"}, "holdoutPercent": {"type": "number"},
            "outcomeDays": {"type": "integer"}, "asOf": _ref("Timestamp"), "currency": {"type": "string"},
            "confidence": {"type": "number"}, "total": _ref("OutcomePeriod"),
            "months": {"type": "array", "items": _ref("OutcomePeriod")},
        }),
        "OutcomePeriod": _object({
            "period": {"type": "string", "examples": ["all", "2026-02"]},
            "sent": _ref("OutcomeGroup"), "heldOut": _ref("OutcomeGroup"),
            "uplift": _object({
                "absolute": {"type": ["number", "null"]},
                "absoluteInterval": {"type": ["array", "null"], "items": {"type": "number"}},
                "relative": {"type": ["number", "null"]},
                "relativeInterval": {"type": ["array", "null"], "items": {"type": "number"}},
            }),
            "verdict": {"enum": ["uplift", "no measurable effect", "negative effect", "too few customers yet",
                                 "no holdout group"]},
            "explanation": {"type": "string"},
            "moreNeeded": {"type": ["object", "null"]},
        }),
        "OutcomeGroup": _object({
            "customers": {"type": "integer", "minimum": 0}, "converted": {"type": "integer", "minimum": 0},
            "conversion": {"type": ["number", "null"]}, "orders": {"type": "integer", "minimum": 0},
            "revenue": _ref("Money"), "revenuePerCustomer": _nullable(_ref("Money")),
            "stillOpen": {"type": "integer", "minimum": 0},
        }),
        "EventDetail": _object({"data": _ref("Event"), "attempts": {"type": "array", "items": _ref("Attempt")}}),
        "OrderInput": _object({
            "contactID": {"type": ["string", "integer"],
                          "description": "any printable text without '/' (it is a path segment of the API's URLs)"},
            "orderReference": {"type": ["string", "integer"]},
            "orderDate": {"type": "string", "description": "ISO 8601 date or datetime; no offset means UTC"},
            "total": {"type": ["string", "number"], "description": "Decimal amount, at most two decimals"},
            "email": {"type": ["string", "null"]},
            "name": {"type": ["string", "null"]},
            "status": {"type": ["string", "null"],
                       "description": "statuses in rules.yaml orders.exclude_statuses (default cancelled, canceled, "
                                      "refunded, void) do not count"},
        }, required=["contactID", "orderReference", "orderDate", "total"]),
        "OrdersRequest": {"oneOf": [
            _ref("OrderInput"),
            {"type": "array", "items": _ref("OrderInput"), "minItems": 1},
            _object({"orders": {"type": "array", "items": _ref("OrderInput"), "minItems": 1}}),
        ]},
        "OrdersResult": _object({
            "imported": {"type": "integer", "minimum": 0},
            "updated": {"type": "integer", "minimum": 0},
            "unchanged": {"type": "integer", "minimum": 0},
            "customers": {"type": "array", "items": _ref("Customer")},
            "transitions": {"type": "integer", "minimum": 0},
        }),
        "PreviewMove": _object({
            "from": {"type": "string"}, "to": {"type": "string"}, "customers": {"type": "integer", "minimum": 1},
            "sample": {"type": "array", "items": {"type": "string"}},
        }),
        "PreviewResponse": _object({"data": _object({
            "asOf": _ref("Timestamp"),
            "currentRulesVersion": {"type": "string"},
            "candidateRulesVersion": {"type": "string"},
            "customers": {"type": "integer", "minimum": 0},
            "moved": {"type": "integer", "minimum": 0},
            "moves": {"type": "array", "items": _ref("PreviewMove")},
            "campaigns": {"type": "object", "additionalProperties": {"type": "integer"}},
            "segments": {"type": "object", "additionalProperties": _object({
                "before": {"type": "integer"}, "after": {"type": "integer"}})},
            "experiments": {"type": "object", "description": "per running experiment of the candidate, each arm's "
                            "customers and moves", "additionalProperties": {"type": "array", "items": _object({
                                "arm": {"type": "string"}, "customers": {"type": "integer", "minimum": 0},
                                "moved": {"type": "integer", "minimum": 0},
                                "moves": {"type": "array", "items": _object({
                                    "from": {"type": "string"}, "to": {"type": "string"},
                                    "customers": {"type": "integer"}})}})}},
        })}),
        "Health": _object({
            "status": {"enum": ["ok", "degraded", "unavailable"]},
            "rulesVersion": {"type": "string"},
            "rulesError": {"type": ["string", "null"]},
            "rulesLoadedAt": _nullable(_ref("Timestamp")),
            "database": {"enum": ["ok", "unavailable"]},
            "delivery": {"enum": ["ok", "disabled"],
                         "description": "disabled while a webhook's ${VAR} is unset: events wait in the outbox"},
            "deliveryProblem": {"type": ["string", "null"], "description": "why delivery is disabled, in one line"},
            "prediction": {**_nullable(_object({
                "status": {"enum": ["fitted", "not_eligible", "failed", "not_fitted", "disabled"]},
                "fittedAt": _nullable(_ref("Timestamp")),
                "reason": {"type": ["string", "null"], "description": "why there is no (new) model, in one line"},
            })), "description": "the churn model: fitted or not, when, and why not (never degrades the status)"},
        }),
    }


def _experiment_fields() -> Schema:
    return {
        "name": {"type": "string"}, "segment": {"type": "string"}, "metric": {"type": "string"},
        "operator": {"enum": ["gt", "gte", "lt", "lte", "eq"]},
        "status": {"enum": ["not started", "running", "ended"]}, "winner": {"type": ["string", "null"]},
        "outcomeDays": {"type": "integer", "minimum": 1},
        "startedAt": _nullable(_ref("Timestamp")), "endedAt": _nullable(_ref("Timestamp")),
        "arms": {"type": "array"},
}


_SUBSCRIPTION: Schema = {"id": {"type": "string"}, "url": {"type": "string"},
                         "campaigns": {"type": "array", "items": {"type": "string"}},
                         "description": {"type": "string"}, "createdAt": {"type": "string", "format": "date-time"}}


def _object(properties: Schema, required: list[str] | None = None) -> Schema:
    """A closed object: every field is listed, so the schema tests catch a field added without documentation."""
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, "additionalProperties": False}


def _page(item: str, total: Schema) -> Schema:
    return _object({"data": {"type": "array", "items": _ref(item)}, "count": {"type": "integer", "minimum": 0},
                    "total": total, "nextCursor": {"type": ["string", "null"]}})


def _nullable_total(description: str) -> Schema:
    return {"type": ["integer", "null"], "minimum": 0, "description": description}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _json(description: str, schema: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}
