"""The API's texting and chat routes (SPEC §5): /sms, /messages/{sid}, /chat/*, on the API blueprint."""
from __future__ import annotations

from flask import g, jsonify

from gateway import presenters
from gateway.storage import message_store
from gateway.texting import chat, messaging
from gateway.web.api import openapi
from gateway.errors import GatewayError
from gateway.web import db
from gateway.web.api import bp, conversation_or_404, json_body
from gateway.web.outbox import outbox

MAX_SHARED_ID_LENGTH = 200


@bp.post("/sms")
def send_sms():
    """Send a text from one of the project's numbers, after the opt-out and A2P 10DLC checks."""
    body = json_body()
    message = messaging.send_sms(
        db(), outbox(), g.project, to=body.get("to"), body=body.get("body"), from_number=body.get("from")
    )
    return jsonify(_message_view(message)), 201


@bp.get("/messages/<sid>")
def get_message(sid: str):
    """A text's delivery status, with Twilio's error code explained."""
    message = message_store.message_by_sid(db(), sid, g.project.key)
    if message is None:
        raise GatewayError(404, "message_not_found", f"No message with SID {sid!r} in this project.")
    return jsonify(_message_view(message))


def _message_view(message) -> dict:
    statuses = message_store.status_events(db(), message.sid)
    return presenters.message(message, statuses, messaging.explain(message.error_code))


@bp.post("/chat/create")
def chat_create():
    """Open a web chat; `shared_id` and `data` travel with any handoff it ends in. No body is fine."""
    body = json_body(optional=True)
    shared_id, data = body.get("shared_id"), body.get("data", {})
    if shared_id is not None and (not isinstance(shared_id, str) or not 0 < len(shared_id) <= MAX_SHARED_ID_LENGTH):
        raise GatewayError(400, "invalid_shared_id", f"`shared_id` must be text of 1 to {MAX_SHARED_ID_LENGTH} characters.")
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_data", "`data` must be a JSON object.")
    conversation = chat.start(db(), g.project, shared_id=shared_id, data=data)
    return (
        jsonify(
            {
                "conversation_id": conversation.id,
                "shared_id": conversation.shared_id,
                "channel": conversation.channel,
                "data": conversation.data,
                "started_at": presenters.timestamp(conversation.started_at),
            }
        ),
        201,
    )


@bp.post("/chat/respond")
def chat_respond():
    """One turn: the assistant's (or the keywords') reply, or the handoff that ends the chat."""
    body = json_body()
    conversation = _conversation(body)
    turn = chat.respond(db(), g.project, conversation, body.get("message"))
    answer = {"conversation_id": conversation.id, "response": turn.response, "end_conversation": turn.handoff is not None}
    if turn.handoff is not None:
        answer["handoff"] = {"destination": turn.handoff.name, "reason": conversation.reason}
    return jsonify(answer)


@bp.post("/chat/close")
def chat_close():
    """End a chat or SMS thread (idempotent); the transcript stays."""
    conversation = _conversation(json_body())
    chat.close(db(), conversation)
    return jsonify(
        {"conversation_id": conversation.id, "closed": True, "ended_at": presenters.timestamp(conversation.ended_at)}
    )


@bp.get("/conversations/<conversation_id>/transcript")
def transcript(conversation_id: str):
    """A chat's or SMS thread's messages, oldest first."""
    conversation = conversation_or_404(conversation_id=conversation_id)
    lines = message_store.transcript(db(), conversation.id)
    return jsonify({"conversation_id": conversation.id, "items": [presenters.chat_line(line) for line in lines]})


def _conversation(body: dict):
    conversation_id = body.get("conversation_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise GatewayError(400, "missing_conversation_id", "Give the `conversation_id` that chat/create returned.")
    return conversation_or_404(conversation_id=conversation_id)


_error = openapi.error


def _json(schema: str, description: str) -> dict:
    return {"description": description, **openapi.json_content(openapi.ref(schema))}


def _body(schema: str) -> dict:
    return {"required": True, **openapi.json_content(openapi.ref(schema))}


_AUTH_ERRORS = {status: openapi.AUTH_ERRORS[status] for status in ("401", "403")}

OPENAPI_PATHS = {
    "/sms": {
        "post": {
            "summary": "Send a text from one of the project's numbers",
            "description": "Checks in order: input (400), recipient opted out (422 `recipient_opted_out`), "
            "A2P 10DLC for US long-code senders (422 `a2p_10dlc_unregistered`). Refused means nothing is sent.",
            "requestBody": _body("SmsRequest"),
            "responses": {
                "201": _json("Message", "Sent to Twilio; `sid` is Twilio's message SID."),
                "400": _error("Bad input: `invalid_json`, `invalid_to`, `invalid_body`, `invalid_from`."),
                **_AUTH_ERRORS,
                "404": _error("Unknown project."),
                "422": _error(
                    "Refused by a rule: `recipient_opted_out`, `a2p_10dlc_unregistered`, `no_sender`, or "
                    "`twilio_error` (Twilio refused it; `twilio_code` and `explanation` say why)."
                ),
                "502": _error("`twilio_error`: Twilio failed or could not check the A2P 10DLC campaign."),
                "503": _error("`twilio_not_configured` (no Twilio credentials) or `twilio_unreachable` (nothing sent)."),
                "504": _error("`twilio_no_answer`: the message may have been sent; it was not retried."),
            },
        }
    },
    "/messages/{sid}": {
        "get": {
            "summary": "A text's delivery status, with its error code explained",
            "parameters": [{"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json("Message", "The message."),
                **_AUTH_ERRORS,
                "404": _error("`message_not_found`."),
            },
        }
    },
    "/chat/create": {
        "post": {
            "summary": "Open a web chat",
            "requestBody": _body("ChatCreateRequest"),
            "responses": {
                "201": _json("ChatCreated", "The new chat."),
                "400": _error("`invalid_json`, `invalid_shared_id`, `invalid_data`."),
                **_AUTH_ERRORS,
                "404": _error("Unknown project."),
            },
        }
    },
    "/chat/respond": {
        "post": {
            "summary": "Take one turn of a chat",
            "description": "The project's assistant_webhook answers (or, without one, the destinations' "
            "handoff_keywords decide). A handoff ends the chat; later turns get 409.",
            "requestBody": _body("ChatRespondRequest"),
            "responses": {
                "200": _json("ChatTurn", "The reply, and the handoff when the chat ends in one."),
                "400": _error("`invalid_json`, `missing_conversation_id`, `invalid_message`."),
                **_AUTH_ERRORS,
                "404": _error("`conversation_not_found`."),
                "409": _error("`conversation_handed_off`, `conversation_closed` or `not_a_chat`."),
                "502": _error("`assistant_error`: the assistant failed; the conversation stays open."),
            },
        }
    },
    "/chat/close": {
        "post": {
            "summary": "Close a chat or SMS thread",
            "requestBody": _body("ChatCloseRequest"),
            "responses": {
                "200": _json("ChatClosed", "Closed (closing twice is fine)."),
                "400": _error("`invalid_json`, `missing_conversation_id`."),
                **_AUTH_ERRORS,
                "404": _error("`conversation_not_found`."),
                "409": _error("`not_a_chat`."),
            },
        }
    },
    "/conversations/{conversation_id}/transcript": {
        "get": {
            "summary": "A chat's or SMS thread's messages, oldest first",
            "parameters": [{"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json("Transcript", "The transcript."),
                **_AUTH_ERRORS,
                "404": _error("`conversation_not_found`."),
            },
        }
    },
}

_NULLABLE_STRING = {"type": "string", "nullable": True}
_TIMESTAMP = {"type": "string", "format": "date-time"}

OPENAPI_SCHEMAS = {
    "SmsRequest": {
        "type": "object",
        "required": ["to", "body"],
        "properties": {
            "to": {"type": "string", "description": "E.164", "pattern": "^\\+[1-9][0-9]{1,14}$", "example": "+14155550123"},
            "body": {"type": "string", "minLength": 1, "maxLength": messaging.MAX_BODY_LENGTH},
            "from": {"type": "string", "description": "One of the project's numbers; default: the first that can send."},
        },
    },
    "Message": {
        "type": "object",
        "properties": {
            "sid": {"type": "string"},
            "conversation_id": _NULLABLE_STRING,
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "body": {"type": "string"},
            "status": {"type": "string", "example": "delivered"},
            "error_code": {"type": "integer", "nullable": True},
            "error_explanation": _NULLABLE_STRING,
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "status_history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string"},
                        "error_code": {"type": "integer", "nullable": True},
                        "at": _TIMESTAMP,
                    },
                },
            },
        },
    },
    "ChatCreateRequest": {
        "type": "object",
        "properties": {
            "shared_id": {"type": "string", "maxLength": MAX_SHARED_ID_LENGTH},
            "data": {"type": "object", "additionalProperties": True},
        },
    },
    "ChatCreated": {
        "type": "object",
        "properties": {
            "conversation_id": {"type": "string"},
            "shared_id": _NULLABLE_STRING,
            "channel": {"type": "string", "enum": ["chat"]},
            "data": {"type": "object", "additionalProperties": True},
            "started_at": _TIMESTAMP,
        },
    },
    "ChatRespondRequest": {
        "type": "object",
        "required": ["conversation_id", "message"],
        "properties": {
            "conversation_id": {"type": "string", "minLength": 1},
            "message": {"type": "string", "minLength": 1, "maxLength": chat.MAX_MESSAGE_LENGTH},
        },
    },
    "ChatTurn": {
        "type": "object",
        "required": ["conversation_id", "response", "end_conversation"],
        "properties": {
            "conversation_id": {"type": "string"},
            "response": {"type": "string"},
            "end_conversation": {"type": "boolean"},
            "handoff": {
                "type": "object",
                "description": "Only when the chat was handed off.",
                "properties": {"destination": {"type": "string"}, "reason": _NULLABLE_STRING},
            },
        },
    },
    "ChatCloseRequest": {
        "type": "object",
        "required": ["conversation_id"],
        "properties": {"conversation_id": {"type": "string", "minLength": 1}},
    },
    "ChatClosed": {
        "type": "object",
        "properties": {"conversation_id": {"type": "string"}, "closed": {"type": "boolean"}, "ended_at": _TIMESTAMP},
    },
    "Transcript": {
        "type": "object",
        "properties": {
            "conversation_id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "enum": ["customer", "assistant"]},
                        "text": {"type": "string"},
                        "at": _TIMESTAMP,
                    },
                },
            },
        },
    },
}
