"""The HTTP API for assistants and integrators: /v1/{account_id}/{project_id}/... (SPEC §5)."""
from __future__ import annotations

import functools

from flask import Blueprint, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError

from gateway import presenters
from gateway.infra import strict_json
from gateway.storage import store
from gateway.storage.apikeys import KeyCheck, check_key
from gateway.infra.safe_text import is_storable, whole_number
from gateway.web import current_gateway, db
from gateway.web.api import openapi, schemas
from gateway.errors import GatewayError, invalid_input


bp = Blueprint("api", __name__, url_prefix="/v1/<account_id>/<project_id>")

#: Listings' page size: when `limit` is absent, and at most.
DEFAULT_PAGE = 50
MAX_PAGE = 200


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


def operation(
    summary: str,
    *,
    responses: dict,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    refused_as: str = "invalid_request",
    description: str | None = None,
    parameters: list[dict] | None = None,
):
    """Declare a /v1 view for /openapi.json (see `openapi.Operation` for the fields).

    With `body`, the view is called with `body=`: the JSON body validated by that model, the one
    the document shows. A body it refuses is a 400: its field's own `Refusal`, or `refused_as`.
    """

    def declare(view):
        if body is None:
            declared = view
        else:

            @functools.wraps(view)
            def declared(**values):
                return view(body=_validated_body(body, body_required, refused_as), **values)

        declared.openapi_operation = openapi.Operation(
            summary, responses, body, body_required, description, tuple(parameters or ())
        )
        return declared

    return declare


def _validated_body(model: type[BaseModel], required: bool, refused_as: str) -> BaseModel:
    try:
        return model.model_validate(json_body(optional=not required))
    except ValidationError as error:
        raise invalid_input(error, model, refused_as) from None


def page_limit() -> int:
    """The `limit` argument of a listing, DEFAULT_PAGE when absent."""
    limit = whole_number(request.args.get("limit", str(DEFAULT_PAGE)))
    if limit is None or not 1 <= limit <= MAX_PAGE:
        raise GatewayError(400, "invalid_parameter", f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return limit


def conversation_or_404(*, conversation_id: str | None = None, shared_id: str | None = None):
    conversation = store.find_conversation(
        db(), g.project.key, conversation_id=conversation_id, shared_id=shared_id
    )
    if conversation is None:
        which = f"shared_id {shared_id!r}" if shared_id is not None else f"id {conversation_id!r}"
        raise GatewayError(404, "conversation_not_found", f"No conversation with {which} in this project.")
    return conversation


@bp.get("/handoff_state")
@operation(
    "Read a conversation's handoff state (screen-pop); shared_id wins over id.",
    responses={
        200: (schemas.HandoffState, "The handoff state."),
        400: "Neither id nor shared_id given (missing_identifier).",
        404: "No such conversation (conversation_not_found).",
    },
    parameters=[
        openapi.query("id", "The conversation id the gateway made."),
        openapi.query("shared_id", "Your own identifier for the conversation."),
    ],
)
def handoff_state():
    """Screen-pop: the handoff state by id or shared_id (shared_id wins when both are given)."""
    conversation_id = request.args.get("id") or None
    shared_id = request.args.get("shared_id") or None
    if conversation_id is None and shared_id is None:
        raise GatewayError(400, "missing_identifier", "Give ?id=<conversation id> or ?shared_id=<your id>.")
    conversation = conversation_or_404(conversation_id=conversation_id, shared_id=shared_id)
    return jsonify(presenters.handoff_state(conversation, store.history(db(), conversation.id)))


@bp.get("/openapi.json")
@operation(
    "This document (also served at /openapi.json without a key).",
    responses={200: (schemas.OpenApiDocument, "The OpenAPI document.")},
)
def openapi_document():
    """The API's description where SPEC §5 lists it, under the base (so with a key)."""
    return jsonify(current_app.extensions["openapi"])


def register(app) -> None:
    """The blueprint, with the routes every API module gave it, and /openapi.json made from them."""
    app.register_blueprint(bp)
    document = app.extensions["openapi"] = openapi.build(app, bp.name)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(document))
