"""Conversations and live handoffs under /v1/{account_id}/{project_id} (SPEC §5)."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from flask import g, jsonify, request
from pydantic import ValidationError

from gateway import presenters
from gateway.storage import search, store
from gateway.web.api import openapi
from gateway.handoffs.handoff import LIFECYCLE_STATES
from gateway.errors import GatewayError
from gateway.handoff_requests import HandoffRequest, request_handoff
from gateway.web import current_gateway, db
from gateway.web.api import bp, conversation_or_404, json_body, validation_error
from gateway.web.callbacks import call_flow

DEFAULT_PAGE = 50
MAX_PAGE = 200


@bp.post("/conversations/<conversation_id>/handoff")
def handoff(conversation_id: str):
    """Hand the conversation to a destination, with reason, utterance, data and topic."""
    conversation_or_404(conversation_id=conversation_id)
    try:
        handoff_request = HandoffRequest.model_validate(json_body(optional=True))
    except ValidationError as error:
        raise validation_error(error) from None
    conversation = request_handoff(
        db(),
        g.project,
        conversation_id,
        handoff_request,
        twilio=current_gateway().twilio,
        flow=call_flow(),
    )
    return jsonify(presenters.handoff_state(conversation, store.history(db(), conversation.id))), 202


@bp.get("/conversations")
def list_conversations():
    """Newest first, filtered, paged with an opaque cursor."""
    args = request.args
    filters = store.ConversationFilter(
        call_sid=args.get("call_sid"),
        shared_id=args.get("shared_id"),
        state=args.get("state"),
        topic=args.get("topic"),
        from_number=args.get("from"),
        to_number=args.get("to"),
        since=_timestamp_arg("since"),
        until=_timestamp_arg("until"),
        search=search.terms_for(args.get("q", ""), (number.number for number in g.project.numbers)),
    )
    limit = _limit_arg()
    rows = store.list_conversations(db(), g.project.key, filters, limit=limit + 1, after=_cursor_arg())
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]) if more else None
    return jsonify({"items": [presenters.conversation(row) for row in page], "next_cursor": next_cursor})


@bp.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    conversation = conversation_or_404(conversation_id=conversation_id)
    return jsonify(presenters.conversation_detail(conversation, store.history(db(), conversation.id)))


def _timestamp_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return _in_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved past the calendar's end by its offset
        raise GatewayError(400, "invalid_parameter", f"{name} must be an ISO 8601 time such as 2026-11-23T16:00:00Z.") from None


def _in_utc(moment: datetime) -> datetime:
    """Times are stored in UTC, and SQLite compares them as text: an offset must become UTC first."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _limit_arg() -> int:
    value = request.args.get("limit", str(DEFAULT_PAGE))
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise GatewayError(400, "invalid_parameter", f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return int(value)


def _encode_cursor(row) -> str:
    started_at = store.as_utc(row.started_at).isoformat()
    return base64.urlsafe_b64encode(json.dumps([started_at, row.id]).encode()).decode().rstrip("=")


def _cursor_arg() -> tuple[datetime, str] | None:
    value = request.args.get("cursor")
    if not value:
        return None
    try:
        started_at, conversation_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        return _in_utc(datetime.fromisoformat(started_at)), str(conversation_id)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise GatewayError(400, "invalid_cursor", "cursor is not one this API gave out; start again without it.") from None


#: Surrounding spaces are trimmed, so a value must hold something else.
_NOT_BLANK = "^[^\\u0000]*\\S[^\\u0000]*$"

OPENAPI_SCHEMAS = {
    "Conversation": {
        "type": "object",
        "required": ["id", "shared_id", "channel", "call_sid", "from", "to", "state", "topic", "started_at"],
        "properties": {
            "id": {"type": "string"},
            "shared_id": openapi.nullable("string"),
            "channel": {"type": "string", "enum": ["voice", "sms", "chat"]},
            "call_sid": openapi.nullable("string"),
            "from": openapi.nullable("string"),
            "to": openapi.nullable("string"),
            "state": openapi.nullable("string"),
            "topic": openapi.nullable("string"),
            "destination": openapi.nullable("string"),
            "reason": openapi.nullable("string"),
            "attempts": {"type": "integer"},
            "call_status": openapi.nullable("string"),
            "duration_seconds": openapi.nullable("integer"),
            "started_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "ended_at": openapi.nullable("string", format="date-time"),
        },
    },
    "ConversationPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": openapi.ref("Conversation")},
            "next_cursor": openapi.nullable("string"),
        },
    },
    "ConversationDetail": {
        "allOf": [
            openapi.ref("Conversation"),
            {
                "type": "object",
                "required": ["data", "handoff"],
                "properties": {
                    "data": {"type": "object", "additionalProperties": True},
                    "handoff": {"type": "object"},
                },
            },
        ]
    },
    "HandoffRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "destination": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "pattern": _NOT_BLANK,
                "description": "Defaults to the project's default_destination.",
            },
            "reason": openapi.text(maxLength=200),
            "utterance": openapi.text(maxLength=1000),
            "data": {"type": "object", "additionalProperties": True, "description": "Free-form; no string in it may hold NUL."},
            "topic": {
                "type": "string",
                "maxLength": 64,
                "pattern": "^[a-z][a-z0-9]*(_[a-z0-9]+)*$",
                "not": {"enum": list(LIFECYCLE_STATES)},
                "description": "A snake_case topic state; not one of the lifecycle states.",
            },
            "shared_id": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NOT_BLANK},
        },
    },
}

_LIST_PARAMETERS = [
    openapi.query("call_sid", "Twilio's CallSid."),
    openapi.query("shared_id", "Your own identifier for the conversation."),
    openapi.query(
        "q",
        "One search box: a shared_id, CallSid or conversation id (exact), or a phone number in any common "
        "form (`(415) 555-1234`, `+1 415 555 1234`) matched as the caller or the project number called. "
        "A number without a country code is read as one of the country of the project's numbers.",
    ),
    openapi.query("state", "A lifecycle state."),
    openapi.query("topic", "A topic state."),
    openapi.query("from", "The caller's number."),
    openapi.query("to", "The called number."),
    openapi.query("since", "Started at or after (ISO 8601).", {"type": "string", "format": "date-time"}),
    openapi.query("until", "Started before (ISO 8601).", {"type": "string", "format": "date-time"}),
    openapi.query("limit", f"Page size, 1 to {MAX_PAGE}.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    openapi.query(
        "cursor",
        "Opaque: the next_cursor of the previous page, as given; any other value is 400 invalid_cursor.",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    ),
]

OPENAPI_PATHS = {
    "/conversations": {
        "get": openapi.operation(
            "List conversations, newest first.",
            {
                "200": {"description": "A page of conversations.", **openapi.json_content(openapi.ref("ConversationPage"))},
                "400": openapi.error("A filter, limit or cursor is malformed."),
            },
            parameters=_LIST_PARAMETERS,
        )
    },
    "/conversations/{conversation_id}": {
        "parameters": [openapi.path_param("account_id"), openapi.path_param("project_id"), openapi.path_param("conversation_id")],
        "get": openapi.operation(
            "One conversation with its handoff state.",
            {"200": {"description": "The conversation.", **openapi.json_content(openapi.ref("ConversationDetail"))}},
        ),
    },
    "/conversations/{conversation_id}/handoff": {
        "parameters": [openapi.path_param("account_id"), openapi.path_param("project_id"), openapi.path_param("conversation_id")],
        "post": openapi.operation(
            "Hand the conversation to a destination; a live call is redirected through Twilio.",
            {
                "202": {"description": "Handoff initiated.", **openapi.json_content(openapi.ref("HandoffState"))},
                "400": openapi.error("Malformed body (invalid_json, invalid_request)."),
                "409": openapi.error(
                    "A handoff already in progress or done (handoff_in_progress), a call that ended "
                    "(call_ended) or a chat closed without one (conversation_closed)."
                ),
                "502": openapi.error("Twilio refused or did not answer; handoff_failed is recorded."),
                "503": openapi.error("Twilio credentials are not configured."),
            },
            body=openapi.ref("HandoffRequest"),
        ),
    },
}
