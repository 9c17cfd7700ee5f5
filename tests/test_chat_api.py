"""POST /chat/create, /chat/respond, /chat/close (SPEC §5): keywords, the assistant webhook, handoff."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses
from sqlmodel import select

from gateway.storage.models import ChatMessage, Conversation
from tests.messaging_support import BOT, TEXTING, assistant_calls
from tests.support import ASSISTANT_URL, BOT_KEY, CONFIG_KEY, TEXTING_KEY, call_params, post_signed


def post(client, path, payload, *, key=TEXTING_KEY, project=TEXTING):
    return client.post(f"{project}{path}", json=payload, headers={"x-api-key": key})


def create(client, payload=None, **kwargs) -> str:
    response = post(client, "/chat/create", payload or {}, **kwargs)
    assert response.status_code == 201
    return response.get_json()["conversation_id"]


def respond(client, conversation_id, message, **kwargs):
    return post(client, "/chat/respond", {"conversation_id": conversation_id, "message": message}, **kwargs)


def handoff_state(client, conversation_id, *, key=TEXTING_KEY, project=TEXTING):
    response = client.get(f"{project}/handoff_state", query_string={"id": conversation_id}, headers={"x-api-key": key})
    assert response.status_code == 200
    return response.get_json()


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


# --- create ----------------------------------------------------------------------------------

def test_create_returns_201_with_the_conversation(client, twilio_api):
    response = post(client, "/chat/create", {"shared_id": "crm-7", "data": {"plan": "gold"}})
    assert response.status_code == 201
    body = response.get_json()
    assert body["shared_id"] == "crm-7" and body["data"] == {"plan": "gold"} and body["channel"] == "chat"
    state = handoff_state(client, body["conversation_id"])
    assert (state["shared_id"], state["data"], state["state"]) == ("crm-7", {"plan": "gold"}, None)


def test_create_with_an_empty_or_no_body_is_fine(client, twilio_api):
    assert create(client)
    response = client.post(f"{TEXTING}/chat/create", headers={"x-api-key": TEXTING_KEY})
    assert response.status_code == 201


def test_create_with_a_body_that_is_not_json_is_400(client, twilio_api):
    response = client.post(f"{TEXTING}/chat/create", data="shared_id=1", headers={"x-api-key": TEXTING_KEY})
    assert error_of(response) == (400, "invalid_json")


@pytest.mark.parametrize(
    "payload,code", [({"shared_id": 7}, "invalid_shared_id"), ({"shared_id": ""}, "invalid_shared_id"), ({"data": [1]}, "invalid_data")]
)
def test_create_refuses_bad_input(client, twilio_api, payload, code):
    assert error_of(post(client, "/chat/create", payload)) == (400, code)


# --- respond without an assistant: keywords --------------------------------------------------

def test_message_without_a_keyword_gets_a_polite_reply(client, twilio_api):
    conversation_id = create(client)
    response = respond(client, conversation_id, "What are your opening hours?")
    assert response.status_code == 200
    assert response.get_json() == {
        "conversation_id": conversation_id,
        "response": 'Thanks for your message. To talk to a person, reply "agent".',
        "end_conversation": False,
    }


@pytest.mark.parametrize(
    "message,destination,reason",
    [
        ("I want an AGENT now", "Agents", "customer_asked"),
        ("can I talk to a person?", "Agents", "customer_asked"),
        ("my invoice is wrong", "Billing desk", "handoff_requested"),
    ],
)
def test_keyword_hands_off_to_its_destination(client, twilio_api, message, destination, reason):
    conversation_id = create(client)
    response = respond(client, conversation_id, message)
    assert response.status_code == 200
    body = response.get_json()
    assert body["end_conversation"] is True
    assert body["handoff"] == {"destination": destination, "reason": reason}
    state = handoff_state(client, conversation_id)
    assert state["state"] == "handoff_initiated"
    assert state["handoff"]["destination"] == destination
    assert [entry["state"] for entry in state["handoff"]["history"]] == ["handoff_initiated"]


def test_keyword_must_be_a_whole_word(client, twilio_api):
    conversation_id = create(client)
    assert respond(client, conversation_id, "our agency sent it").get_json()["end_conversation"] is False


def test_handoff_reply_is_the_destination_utterance(client, twilio_api):
    conversation_id = create(client)
    body = respond(client, conversation_id, "agent").get_json()
    assert body["response"] == "Connecting you with an agent; they will text you shortly."


def test_project_without_keywords_or_assistant_replies_politely(client, twilio_api):
    response = post(client, "/chat/create", {}, key=CONFIG_KEY, project="/v1/ws-acme/PROJECT-frontdesk")
    conversation_id = response.get_json()["conversation_id"]
    answer = respond(client, conversation_id, "agent please", key=CONFIG_KEY, project="/v1/acme/frontdesk").get_json()
    assert answer["end_conversation"] is True  # Front desk's keywords are "agent" and "human"
    assert answer["handoff"] == {"destination": "Front desk", "reason": "needs_human"}


def test_a_handoff_ends_the_chat_and_later_turns_are_409(client, twilio_api):
    conversation_id = create(client)
    assert respond(client, conversation_id, "agent").get_json()["end_conversation"] is True
    assert error_of(respond(client, conversation_id, "hello?")) == (409, "conversation_handed_off")
    assert conversation(client, conversation_id)["ended_at"] is not None


def test_a_handoff_through_the_api_ends_the_chat_too(client, twilio_api):
    """SPEC §5: POST …/handoff on a chat ends it, with the handoff object."""
    conversation_id = create(client)
    response = post(client, f"/conversations/{conversation_id}/handoff", {"reason": "vip"})
    assert response.status_code == 202
    assert response.get_json()["handoff"]["reason"] == "vip"
    assert conversation(client, conversation_id)["ended_at"] is not None
    assert error_of(respond(client, conversation_id, "still there?")) == (409, "conversation_handed_off")


def test_a_closed_chat_cannot_be_handed_off(client, twilio_api):
    conversation_id = create(client)
    post(client, "/chat/close", {"conversation_id": conversation_id})
    response = post(client, f"/conversations/{conversation_id}/handoff", {})
    assert error_of(response) == (409, "conversation_closed")
    assert handoff_state(client, conversation_id)["state"] is None


def conversation(client, conversation_id) -> dict:
    response = client.get(f"{TEXTING}/conversations/{conversation_id}", headers={"x-api-key": TEXTING_KEY})
    assert response.status_code == 200
    return response.get_json()


# --- respond with an assistant ----------------------------------------------------------------

def test_assistant_answers_the_turn(client, twilio_api):
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": "We open at 9."})
    conversation_id = create(client, key=BOT_KEY, project=BOT)
    body = respond(client, conversation_id, "When do you open?", key=BOT_KEY, project=BOT).get_json()
    assert body == {"conversation_id": conversation_id, "response": "We open at 9.", "end_conversation": False}
    assert assistant_calls(twilio_api) == [{"conversation_id": conversation_id, "message": "When do you open?"}]


def test_assistant_handoff_records_everything_it_said(client, twilio_api):
    twilio_api.add(
        responses.POST,
        ASSISTANT_URL,
        json={
            "response": "Passing you to our refunds team.",
            "handoff": {
                "destination": "Refunds",
                "reason": "refund_over_limit",
                "utterance": "Refund of $120 requested",
                "data": {"order": "A-17", "amount": 120},
                "topic": "customer_refund",
            },
        },
    )
    conversation_id = create(client, {"shared_id": "crm-9", "data": {"tier": "gold"}}, key=BOT_KEY, project=BOT)
    body = respond(client, conversation_id, "I want my money back", key=BOT_KEY, project=BOT).get_json()
    assert body == {
        "conversation_id": conversation_id,
        "response": "Passing you to our refunds team.",
        "end_conversation": True,
        "handoff": {"destination": "Refunds", "reason": "refund_over_limit"},
    }
    state = handoff_state(client, conversation_id, key=BOT_KEY, project=BOT)
    assert state["state"] == "handoff_initiated"
    assert state["topic"] == "customer_refund"
    assert state["shared_id"] == "crm-9"
    assert state["data"] == {"tier": "gold", "order": "A-17", "amount": 120}
    assert state["handoff"]["utterance"] == "Refund of $120 requested"
    assert state["handoff"]["reason"] == "refund_over_limit"
    assert [e["state"] for e in state["handoff"]["history"]] == ["handoff_initiated", "customer_refund"]
    later = respond(client, conversation_id, "hello?", key=BOT_KEY, project=BOT)
    assert error_of(later) == (409, "conversation_handed_off")
    assert len(assistant_calls(twilio_api)) == 1


def test_assistant_handoff_without_destination_goes_to_the_default(client, twilio_api):
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": "", "handoff": {}})
    conversation_id = create(client, key=BOT_KEY, project=BOT)
    body = respond(client, conversation_id, "help", key=BOT_KEY, project=BOT).get_json()
    assert body["handoff"] == {"destination": "Agents", "reason": "needs_human"}
    assert body["response"] == "An agent will text you in a moment."


def test_a_blank_response_with_a_handoff_is_replaced_by_the_utterance(client, twilio_api):
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": "  ", "handoff": {}})
    conversation_id = create(client, key=BOT_KEY, project=BOT)
    body = respond(client, conversation_id, "help", key=BOT_KEY, project=BOT).get_json()
    assert body["response"] == "An agent will text you in a moment."


@pytest.mark.parametrize(
    "mock,words",
    [
        ({"status": 500}, "answered HTTP 500"),
        ({"body": "not json"}, "not JSON"),
        ({"json": {"response": 5}}, "invalid response"),
        ({"json": {}}, "blank `response` without a handoff"),
        ({"json": {"response": " \n "}}, "blank `response` without a handoff"),
        ({"json": {"response": "ok", "handoff": {"topic": "Not Snake"}}}, "invalid handoff.topic"),
        ({"json": {"response": "ok", "handoff": {"destination": "Nobody"}}}, "'Nobody'"),
        ({"body": requests.ConnectTimeout("slow")}, "could not be reached"),
        ({"body": requests.ReadTimeout("slow")}, "did not answer within 5 s"),
    ],
)
def test_assistant_failure_is_502_and_keeps_the_conversation(client, twilio_api, mock, words):
    twilio_api.add(responses.POST, ASSISTANT_URL, **mock)
    conversation_id = create(client, key=BOT_KEY, project=BOT)
    response = respond(client, conversation_id, "hi", key=BOT_KEY, project=BOT)
    assert error_of(response) == (502, "assistant_error")
    assert words in response.get_json()["error"]["message"]
    assert handoff_state(client, conversation_id, key=BOT_KEY, project=BOT)["state"] is None

    twilio_api.replace(responses.POST, ASSISTANT_URL, json={"response": "Sorry about that."})
    again = respond(client, conversation_id, "hi again", key=BOT_KEY, project=BOT)
    assert again.status_code == 200 and again.get_json()["response"] == "Sorry about that."


# --- transcript, close, errors ------------------------------------------------------------------

def test_transcript_keeps_every_line_in_order(client, session, twilio_api):
    conversation_id = create(client)
    respond(client, conversation_id, "hello")
    respond(client, conversation_id, "agent")
    response = client.get(f"{TEXTING}/conversations/{conversation_id}/transcript", headers={"x-api-key": TEXTING_KEY})
    items = response.get_json()["items"]
    assert [(item["role"], item["text"]) for item in items] == [
        ("customer", "hello"),
        ("assistant", 'Thanks for your message. To talk to a person, reply "agent".'),
        ("customer", "agent"),
        ("assistant", "Connecting you with an agent; they will text you shortly."),
    ]
    assert all(item["at"].endswith("Z") for item in items)
    assert len(session.exec(select(ChatMessage)).all()) == 4


def test_close_ends_the_chat_and_is_idempotent(client, twilio_api):
    conversation_id = create(client)
    first = post(client, "/chat/close", {"conversation_id": conversation_id})
    assert first.status_code == 200
    assert first.get_json()["closed"] is True and first.get_json()["ended_at"].endswith("Z")
    assert post(client, "/chat/close", {"conversation_id": conversation_id}).get_json() == first.get_json()
    assert error_of(respond(client, conversation_id, "hello")) == (409, "conversation_closed")


@pytest.mark.parametrize(
    "payload,status,code",
    [
        ({"message": "hi"}, 400, "missing_conversation_id"),
        ({"conversation_id": "nope", "message": "hi"}, 404, "conversation_not_found"),
    ],
)
def test_respond_needs_a_known_conversation(client, twilio_api, payload, status, code):
    assert error_of(post(client, "/chat/respond", payload)) == (status, code)


@pytest.mark.parametrize("message", [None, "", "   ", 42, "x" * 4001])
def test_respond_needs_a_message(client, twilio_api, message):
    conversation_id = create(client)
    assert error_of(respond(client, conversation_id, message)) == (400, "invalid_message")


def test_chat_of_another_project_is_404(client, twilio_api):
    conversation_id = create(client)
    assert error_of(respond(client, conversation_id, "hi", key=BOT_KEY, project=BOT)) == (404, "conversation_not_found")


def test_a_call_is_not_a_chat(client, twilio_api, session):
    post_signed(client, "/voice/call", call_params())
    call = session.exec(select(Conversation).where(Conversation.channel == "voice")).one()
    response = respond(client, call.id, "hi", key=CONFIG_KEY, project="/v1/acme/frontdesk")
    assert error_of(response) == (409, "not_a_chat")
    closing = post(client, "/chat/close", {"conversation_id": call.id}, key=CONFIG_KEY, project="/v1/acme/frontdesk")
    assert error_of(closing) == (409, "not_a_chat")


def test_turns_racing_to_hand_off_hand_off_once(app, twilio_api):
    """SQLite locks no row: the attempt's dedupe key is what lets only one racing turn through."""
    conversation_id = create(app.test_client())
    start = threading.Barrier(3)

    def turn(_n):
        client = app.test_client()
        start.wait()
        return respond(client, conversation_id, "agent please")

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(turn, range(3)))
    handed_off = [a for a in answers if a.status_code == 200]
    assert len(handed_off) == 1 and handed_off[0].get_json()["end_conversation"] is True
    assert sorted(error_of(a) for a in answers if a.status_code != 200) == [(409, "conversation_handed_off")] * 2
    history = handoff_state(app.test_client(), conversation_id)["handoff"]["history"]
    assert [step["state"] for step in history] == ["handoff_initiated"]
