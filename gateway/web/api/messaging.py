"""The API's texting and chat routes (SPEC §5): /sms, /messages/{sid}, /chat/*, on the API blueprint."""
from __future__ import annotations

from flask import g, jsonify

from gateway import presenters
from gateway.storage import message_store
from gateway.texting import chat, messaging
from gateway.errors import GatewayError
from gateway.web import db
from gateway.web.api import bp, conversation_or_404, operation, schemas
from gateway.web.outbox import outbox


@bp.post("/sms")
@operation(
    "Send a text from one of the project's numbers",
    description="Checks in order: input (400), recipient opted out (422 `recipient_opted_out`), "
    "A2P 10DLC for US long-code senders (422 `a2p_10dlc_unregistered`). Refused means nothing is sent.",
    body=schemas.SmsRequest,
    responses={
        201: (schemas.Message, "Sent to Twilio; `sid` is Twilio's message SID."),
        400: "Bad input: `invalid_json`, `invalid_to`, `invalid_body`, `invalid_from`.",
        422: "Refused by a rule: `recipient_opted_out`, `a2p_10dlc_unregistered`, `no_sender`, or "
        "`twilio_error` (Twilio refused it; `twilio_code` and `explanation` say why).",
        502: "`twilio_error`: Twilio failed or could not check the A2P 10DLC campaign.",
        503: "`twilio_not_configured` (no Twilio credentials) or `twilio_unreachable` (nothing sent).",
        504: "`twilio_no_answer`: the message may have been sent; it was not retried.",
    },
)
def send_sms(body: schemas.SmsRequest):
    """Send a text from one of the project's numbers, after the opt-out and A2P 10DLC checks."""
    message = messaging.send_sms(
        db(), outbox(), g.project, to=body.to, body=body.body, from_number=body.from_number
    )
    return jsonify(_message_view(message)), 201


@bp.get("/messages/<sid>")
@operation(
    "A text's delivery status, with its error code explained",
    responses={200: (schemas.Message, "The message."), 404: "`message_not_found`."},
)
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
@operation(
    "Open a web chat",
    body=schemas.ChatCreateRequest,
    body_required=False,
    responses={
        201: (schemas.ChatCreated, "The new chat."),
        400: "`invalid_json`, `invalid_shared_id`, `invalid_data`.",
    },
)
def chat_create(body: schemas.ChatCreateRequest):
    """Open a web chat; `shared_id` and `data` travel with any handoff it ends in. No body is fine."""
    conversation = chat.start(db(), g.project, shared_id=body.shared_id, data=body.data)
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
@operation(
    "Take one turn of a chat",
    description="The project's assistant_webhook answers (or, without one, the destinations' "
    "handoff_keywords decide). A handoff ends the chat; later turns get 409.",
    body=schemas.ChatRespondRequest,
    responses={
        200: (schemas.ChatTurn, "The reply, and the handoff when the chat ends in one."),
        400: "`invalid_json`, `missing_conversation_id`, `invalid_message`.",
        404: "`conversation_not_found`.",
        409: "`conversation_handed_off`, `conversation_closed` or `not_a_chat`.",
        502: "`assistant_error`: the assistant failed (or answered a blank response without a handoff); "
        "the conversation stays open.",
    },
)
def chat_respond(body: schemas.ChatRespondRequest):
    """One turn: the assistant's (or the keywords') reply, or the handoff that ends the chat."""
    conversation = conversation_or_404(conversation_id=body.conversation_id)
    turn = chat.respond(db(), g.project, conversation, body.message)
    answer = {"conversation_id": conversation.id, "response": turn.response, "end_conversation": turn.handoff is not None}
    if turn.handoff is not None:
        answer["handoff"] = {"destination": turn.handoff.name, "reason": conversation.reason}
    return jsonify(answer)


@bp.post("/chat/close")
@operation(
    "Close a chat or SMS thread",
    body=schemas.ChatCloseRequest,
    responses={
        200: (schemas.ChatClosed, "Closed (closing twice is fine)."),
        400: "`invalid_json`, `missing_conversation_id`.",
        404: "`conversation_not_found`.",
        409: "`not_a_chat`.",
    },
)
def chat_close(body: schemas.ChatCloseRequest):
    """End a chat or SMS thread (idempotent); the transcript stays."""
    conversation = conversation_or_404(conversation_id=body.conversation_id)
    chat.close(db(), conversation)
    return jsonify(
        {"conversation_id": conversation.id, "closed": True, "ended_at": presenters.timestamp(conversation.ended_at)}
    )


@bp.get("/conversations/<conversation_id>/transcript")
@operation(
    "A chat's or SMS thread's messages, oldest first",
    responses={200: (schemas.Transcript, "The transcript."), 404: "`conversation_not_found`."},
)
def transcript(conversation_id: str):
    """A chat's or SMS thread's messages, oldest first."""
    conversation = conversation_or_404(conversation_id=conversation_id)
    lines = message_store.transcript(db(), conversation.id)
    return jsonify({"conversation_id": conversation.id, "items": [presenters.chat_line(line) for line in lines]})
