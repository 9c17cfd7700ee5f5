"""Conversations and live handoffs under /v1/{account_id}/{project_id} (SPEC §5)."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from flask import g, jsonify, request

from gateway import presenters
from gateway.infra.safe_text import is_storable
from gateway.storage import search, store
from gateway.storage.models import CONVERSATION_ID_LENGTH
from gateway.errors import GatewayError
from gateway.handoff_requests import request_handoff
from gateway.web import current_gateway, db
from gateway.web.api import MAX_PAGE, bp, conversation_or_404, openapi, operation, page_limit, schemas
from gateway.web.callbacks import call_flow
from gateway.web.outbox import outbox



@bp.post("/conversations/<conversation_id>/handoff")
@operation(
    "Hand the conversation to a destination; a live call is redirected through Twilio.",
    body=schemas.HandoffRequest,
    body_required=False,
    responses={
        202: (schemas.HandoffState, "Handoff initiated."),
        400: "Malformed body (invalid_json, invalid_request).",
        404: "No such conversation or destination (conversation_not_found, destination_not_found).",
        409: "A handoff already in progress or done (handoff_in_progress), a call that ended "
        "(call_ended) or a chat or SMS thread closed without one (conversation_closed).",
        502: "Twilio refused or did not answer; handoff_failed is recorded.",
        503: "Twilio credentials are not configured (twilio_not_configured).",
    },
)
def handoff(conversation_id: str, body: schemas.HandoffRequest):
    """Hand the conversation to a destination, with reason, utterance, data and topic."""
    conversation_or_404(conversation_id=conversation_id)
    conversation = request_handoff(
        db(),
        g.project,
        conversation_id,
        body,
        twilio=current_gateway().twilio,
        flow=call_flow(),
        outbox=outbox(),
    )
    return jsonify(presenters.handoff_state(conversation, store.history(db(), conversation.id))), 202


#: How `from` and `to` read a number (gateway/storage/search.py), as `q` does.
_NUMBER_FORMS = (
    " In any form q takes (`(415) 555-1234`, `+1 415 555 1234`, a `+` left unencoded that arrives as a space);"
    " text that is not a phone number is matched exactly."
)

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
    openapi.query("from", "The caller's number." + _NUMBER_FORMS),
    openapi.query("to", "The number called." + _NUMBER_FORMS),
    openapi.query("since", "Started at or after (ISO 8601).", {"type": "string", "format": "date-time"}),
    openapi.query("until", "Started before (ISO 8601).", {"type": "string", "format": "date-time"}),
    openapi.query("limit", f"Page size, 1 to {MAX_PAGE}.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    openapi.query(
        "cursor",
        "Opaque: the next_cursor of the previous page, as given; any other value is 400 invalid_cursor.",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    ),
]


@bp.get("/conversations")
@operation(
    "List conversations, newest first.",
    description="Filters combine; a blank one (`?state=`) is left out, as a blank q is.",
    responses={
        200: (schemas.ConversationPage, "A page of conversations."),
        400: "A filter, limit or cursor is malformed (invalid_parameter, invalid_cursor).",
    },
    parameters=_LIST_PARAMETERS,
)
def list_conversations():
    """Newest first, filtered, paged with an opaque cursor."""
    own_numbers = [number.number for number in g.project.numbers]
    filters = store.ConversationFilter(
        call_sid=_filter_arg("call_sid"),
        shared_id=_filter_arg("shared_id"),
        state=_filter_arg("state"),
        topic=_filter_arg("topic"),
        from_number=_number_arg("from", own_numbers),
        to_number=_number_arg("to", own_numbers),
        since=_timestamp_arg("since"),
        until=_timestamp_arg("until"),
        search=search.terms_for(request.args.get("q", ""), own_numbers),
    )
    limit = page_limit()
    rows = store.list_conversations(db(), g.project.key, filters, limit=limit + 1, after=_cursor_arg())
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]) if more else None
    return jsonify({"items": [presenters.conversation(row) for row in page], "next_cursor": next_cursor})


@bp.get("/conversations/<conversation_id>")
@operation(
    "One conversation with its handoff state.",
    responses={
        200: (schemas.ConversationDetail, "The conversation."),
        404: "No such conversation (conversation_not_found).",
    },
)
def get_conversation(conversation_id: str):
    conversation = conversation_or_404(conversation_id=conversation_id)
    return jsonify(presenters.conversation_detail(conversation, store.history(db(), conversation.id)))


def _filter_arg(name: str) -> str | None:
    """A filter's value; a blank one (`?state=`) is no filter, as a blank q is, not "equals empty"."""
    value = request.args.get(name, "")
    return value if value.strip() else None


def _number_arg(name: str, own_numbers: list[str]) -> str | None:
    value = _filter_arg(name)
    return None if value is None else search.as_stored_number(value, own_numbers)


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


def _encode_cursor(row) -> str:
    started_at = store.as_utc(row.started_at).isoformat()
    return base64.urlsafe_b64encode(json.dumps([started_at, row.id]).encode()).decode().rstrip("=")


def _cursor_arg() -> tuple[datetime, str] | None:
    """The (started_at, id) a cursor names. Its id goes to the database as it is, so one no id
    could be (NUL, a lone surrogate, too long) is refused here, not failed by the database."""
    value = request.args.get("cursor")
    if not value:
        return None
    try:
        started_at, conversation_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if not _could_be_an_id(conversation_id):
            raise ValueError(conversation_id)
        return _in_utc(datetime.fromisoformat(started_at)), conversation_id
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise GatewayError(400, "invalid_cursor", "cursor is not one this API gave out; start again without it.") from None


def _could_be_an_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= CONVERSATION_ID_LENGTH and is_storable(value)
