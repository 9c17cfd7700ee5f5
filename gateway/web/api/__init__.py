"""The HTTP API for assistants and integrators: /v1/{account_id}/{project_id}/... (SPEC §5)."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import ValidationError

from gateway import presenters
from gateway.infra import strict_json
from gateway.storage import store
from gateway.web.api import openapi
from gateway.storage.apikeys import KeyCheck, check_key
from gateway.infra.safe_text import is_storable
from gateway.web import current_gateway, db
from gateway.errors import GatewayError


bp = Blueprint("api", __name__, url_prefix="/v1/<account_id>/<project_id>")


@bp.url_value_preprocessor
def _resolve_project(_endpoint, values):
    """Authenticate first (401), then find the project named by either id form (404), then the
    key's scope (403): without a real key, nothing tells which projects exist."""
    account_id, project_id = values.pop("account_id"), values.pop("project_id")
    key = request.headers.get("x-api-key", "")
    if not key:
        raise GatewayError(401, "missing_api_key", "Send your API key in the x-api-key header.")
    config = current_gateway().config
    project = config.find_project(account_id, project_id)
    verdict = check_key(db(), config, project, key)
    if verdict is KeyCheck.UNKNOWN:
        raise GatewayError(401, "invalid_api_key", "This API key is not known; create one with `gateway api-key create`.")
    if project is None:
        raise GatewayError(404, "project_not_found", f"No project {account_id}/{project_id} is configured.")
    if verdict is KeyCheck.OTHER_PROJECT:
        raise GatewayError(403, "forbidden", f"This API key belongs to another project, not {project.key}.")
    g.project = project
    for name, value in [*values.items(), *request.args.items(multi=True)]:
        if not is_storable(value):
            raise GatewayError(400, "invalid_parameter", f"{name} holds a NUL character; remove it.")


def _json_problem(value: object) -> str | None:
    """Why a JSON value can't be stored, or None: too deep, or text with NUL or a lone surrogate.

    Refused at the edge on every backend alike. One walk, not recursion: JSON nests deep.
    """
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return f"The JSON nests deeper than {MAX_JSON_DEPTH} levels; flatten it."
        if isinstance(item, str):
            if not is_storable(item):
                return "The JSON holds a NUL character (\\u0000) or a lone surrogate (\\ud800-\\udfff); remove it."
        elif isinstance(item, dict):
            pending.extend((child, depth + 1) for child in (*item.keys(), *item.values()))
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return None


#: Handoff data is a screen-pop's context, not a document store; this is far past any real use.
MAX_JSON_DEPTH = 32


def json_body(*, optional: bool = False) -> dict:
    """The request's JSON object, or a 400 that says what is wrong with it.

    `optional`: for endpoints whose every field is optional, no body at all means {}.
    """
    if optional and not request.get_data():
        return {}
    try:
        body = strict_json.loads(request.get_data()) if request.is_json else None
    except RecursionError:
        raise GatewayError(400, "invalid_json", f"The JSON nests deeper than {MAX_JSON_DEPTH} levels; flatten it.") from None
    except strict_json.NonStandardJson as error:
        raise GatewayError(400, "invalid_json", f"The JSON holds {error}.") from None
    except ValueError:  # not JSON at all, or not UTF-8
        body = None
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "Send a JSON object with Content-Type: application/json.")
    problem = _json_problem(body)
    if problem:
        raise GatewayError(400, "invalid_json", problem)
    return body


def validation_error(error: ValidationError) -> GatewayError:
    """The first problem pydantic found, as a 400 naming the field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field; check the spelling"
    return GatewayError(400, "invalid_request", f"{field}: {message}")


def conversation_or_404(*, conversation_id: str | None = None, shared_id: str | None = None):
    conversation = store.find_conversation(
        db(), g.project.key, conversation_id=conversation_id, shared_id=shared_id
    )
    if conversation is None:
        which = f"shared_id {shared_id!r}" if shared_id is not None else f"id {conversation_id!r}"
        raise GatewayError(404, "conversation_not_found", f"No conversation with {which} in this project.")
    return conversation


@bp.get("/handoff_state")
def handoff_state():
    """Screen-pop: the handoff state by id or shared_id (shared_id wins when both are given)."""
    conversation_id = request.args.get("id") or None
    shared_id = request.args.get("shared_id") or None
    if conversation_id is None and shared_id is None:
        raise GatewayError(400, "missing_identifier", "Give ?id=<conversation id> or ?shared_id=<your id>.")
    conversation = conversation_or_404(conversation_id=conversation_id, shared_id=shared_id)
    return jsonify(presenters.handoff_state(conversation, store.history(db(), conversation.id)))


@bp.get("/openapi.json")
def openapi_document():
    """The API's description where SPEC §5 lists it, under the base (so with a key)."""
    return jsonify(current_app.extensions["openapi"])


def register(app, modules: list) -> None:
    """The blueprint (its routes come from `modules`) and /openapi.json."""
    app.register_blueprint(bp)
    document = app.extensions["openapi"] = openapi.build(modules)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(document))

OPENAPI_SCHEMAS = {
    "HistoryEntry": {
        "type": "object",
        "required": ["state", "at", "destination", "detail"],
        "properties": {
            "state": {"type": "string", "description": "handoff_initiated, handoff_completed, handoff_failed or a topic"},
            "at": {"type": "string", "format": "date-time"},
            "destination": openapi.nullable("string"),
            "detail": openapi.nullable("string", description="Twilio's status and SIP code for this step"),
        },
    },
    "HandoffState": {
        "type": "object",
        "required": ["id", "shared_id", "data", "state", "topic", "handoff"],
        "properties": {
            "id": {"type": "string"},
            "shared_id": openapi.nullable("string"),
            "data": {"type": "object", "additionalProperties": True},
            "state": openapi.nullable("string", enum=["handoff_initiated", "handoff_completed", "handoff_failed", None]),
            "topic": openapi.nullable("string"),
            "handoff": {
                "type": "object",
                "required": ["destination", "reason", "utterance", "attempts", "updated_at", "history"],
                "properties": {
                    "destination": openapi.nullable("string"),
                    "reason": openapi.nullable("string"),
                    "utterance": openapi.nullable("string"),
                    "attempts": {"type": "integer", "minimum": 0},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "history": {"type": "array", "items": openapi.ref("HistoryEntry")},
                },
            },
        },
    },
}

OPENAPI_PATHS = {
    "/openapi.json": {
        "get": openapi.operation(
            "This document (also served at /openapi.json without a key).",
            {"200": {"description": "The OpenAPI document.", **openapi.json_content({"type": "object"})}},
        )
    },
    "/handoff_state": {
        "get": openapi.operation(
            "Read a conversation's handoff state (screen-pop); shared_id wins over id.",
            {
                "200": {"description": "The handoff state.", **openapi.json_content(openapi.ref("HandoffState"))},
                "400": openapi.error("Neither id nor shared_id given (missing_identifier)."),
            },
            parameters=[
                openapi.query("id", "The conversation id the gateway made."),
                openapi.query("shared_id", "Your own identifier for the conversation."),
            ],
        )
    }
}
