"""Conversations and live handoffs under /v1/{account_id}/{project_id} (SPEC §5)."""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

from flask import g, jsonify, request
from pydantic import ValidationError

from gateway import presenters, store
from gateway.handoff_requests import HandoffRefused, HandoffRequest, request_handoff
from gateway.web import current_gateway, db
from gateway.web.api import bp, conversation_or_404, json_body, validation_error
from gateway.web.callbacks import call_flow
from gateway.web.errors import ApiError, error_response

DEFAULT_PAGE = 50
MAX_PAGE = 200


@bp.errorhandler(HandoffRefused)
def _handoff_refused(error: HandoffRefused):
    return error_response(error.status, error.code, error.message)


@bp.post("/conversations/<conversation_id>/handoff")
def handoff(conversation_id: str):
    """Hand the conversation to a destination, with reason, utterance, data and topic."""
    conversation_or_404(conversation_id=conversation_id)
    try:
        handoff_request = HandoffRequest.model_validate(json_body())
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
        state=args.get("state"),
        topic=args.get("topic"),
        from_number=args.get("from"),
        to_number=args.get("to"),
        since=_timestamp_arg("since"),
        until=_timestamp_arg("until"),
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
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an ISO 8601 time such as 2026-11-23T16:00:00Z.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _limit_arg() -> int:
    value = request.args.get("limit", str(DEFAULT_PAGE))
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit must be a whole number from 1 to {MAX_PAGE}.")
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
        return datetime.fromisoformat(started_at), str(conversation_id)
    except (ValueError, TypeError, binascii.Error):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API gave out; start again without it.") from None
