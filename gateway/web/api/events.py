"""The events feed under /v1/{account_id}/{project_id} (SPEC §5 Events): pull instead of, or after, push."""
from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import event_types
from gateway.events import journal
from gateway.web import current_gateway, db
from gateway.web.api import MAX_PAGE, bp, openapi, operation, page_limit, schemas
from gateway.errors import GatewayError
from gateway.infra.safe_text import whole_number


#: What `types` documents: each type, and the globs integrators use most (any glob works).
TYPE_CHOICES = [*event_types.EVENT_TYPES, "handoff.*", "conversation.*", "*"]


@bp.get("/events")
@operation(
    "List the project's handoff events in order, after a cursor (the pull side of event_webhooks).",
    responses={
        200: (schemas.EventPage, "A page of events."),
        400: "after, types or limit is malformed (invalid_cursor, invalid_parameter).",
    },
    parameters=[
        openapi.query(
            "after",
            "The next_cursor of the previous page; leave out to start from the oldest event kept.",
            {"type": "string", "pattern": "^[0-9]{1,18}$"},
        ),
        {
            **openapi.query(
                "types",
                "Comma-separated event types or globs, e.g. handoff.*,conversation.ended; all types when absent.",
                {"type": "array", "minItems": 1, "items": {"type": "string", "enum": TYPE_CHOICES}},
            ),
            "style": "form",
            "explode": False,
        },
        openapi.query("limit", f"Page size, 1 to {MAX_PAGE}.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    ],
)
def list_events():
    """Events after a cursor, oldest first; `next_cursor` is where to continue (the same when nothing is new)."""
    after = _after_arg()
    types = _types_arg()
    limit = page_limit()
    session = db()
    try:
        journal.publish(session, [project.key for project in current_gateway().config.projects])
    except SQLAlchemyError:
        session.rollback()  # another publisher's conflict: what is in the journal is still right
    page = journal.feed(session, g.project.key, after=after, types=types, limit=limit)
    next_cursor = str(page[-1].seq) if page else str(after)
    return jsonify({"items": [journal.body(event) for event in page], "next_cursor": next_cursor})


def _after_arg() -> int:
    value = request.args.get("after", "0")
    after = whole_number(value)
    if after is None or len(value) > 18:
        raise GatewayError(400, "invalid_cursor", "after must be a next_cursor this API gave out; leave it out to start from the oldest.")
    return after


def _types_arg() -> list[str]:
    if "types" not in request.args:
        return list(event_types.EVENT_TYPES)
    patterns = [part.strip() for value in request.args.getlist("types") for part in value.split(",")]
    if not all(patterns):
        raise GatewayError(400, "invalid_parameter", "types: name at least one type between the commas, or leave types out.")
    for pattern in patterns:
        if not event_types.types_matching([pattern]):
            raise GatewayError(
                400,
                "invalid_parameter",
                f"types: {pattern!r} matches no event type; use globs of {', '.join(event_types.EVENT_TYPES)}.",
            )
    return event_types.types_matching(patterns)
