"""JSON that every parser reads: NaN and Infinity are refused on the way in and never sent out.

Python's json reads and writes `NaN`, `Infinity` and `-Infinity`; JavaScript's JSON.parse and
PostgreSQL do not. Every JSON response of every test is also parsed strictly (see
tests/openapi_conformance.py, installed by the `make_app` fixture).
"""
from __future__ import annotations

import json

import pytest
import responses
from sqlmodel import select

from gateway.infra import strict_json
from gateway.storage import store
from gateway.storage.models import ChatMessage, Conversation, StoredDestination
from tests.messaging_support import BOT, TEXTING
from tests.support import ASSISTANT_URL, BOT_KEY, CONFIG_KEY, TEXTING_KEY, call_params, post_signed

ACME = "/v1/acme/frontdesk"
TOKENS = ["NaN", "Infinity", "-Infinity"]


def post_raw(client, path: str, body: str, key: str):
    return client.post(path, data=body, content_type="application/json", headers={"x-api-key": key})


@pytest.fixture
def conversation_id(client, session):
    assert post_signed(client, "/voice/call", call_params()).status_code == 200
    session.expire_all()
    return store.conversation_by_call_sid(session, call_params()["CallSid"]).id


def bodies(conversation_id: str, token: str) -> list[tuple[str, str, str]]:
    """(path, raw body, key) for every API operation that takes a JSON body, each holding `token`."""
    return [
        (f"{ACME}/conversations/{conversation_id}/handoff", f'{{"data": {{"a": {token}}}}}', CONFIG_KEY),
        (f"{ACME}/conversations/{conversation_id}/handoff", f'{{"data": {{"deep": [1, {{"b": {token}}}]}}}}', CONFIG_KEY),
        (f"{ACME}/handoff_destinations", f'{{"name": "Desk", "method": "invite", "route": "+14155550100", "timeout": {token}}}', CONFIG_KEY),
        (f"{TEXTING}/sms", f'{{"to": "+14155551234", "body": "hi", "x": {token}}}', TEXTING_KEY),
        (f"{TEXTING}/chat/create", f'{{"data": {{"score": {token}}}}}', TEXTING_KEY),
        (f"{TEXTING}/chat/respond", f'{{"conversation_id": "x", "message": "hi", "n": {token}}}', TEXTING_KEY),
        (f"{TEXTING}/chat/close", f'{{"conversation_id": "x", "n": {token}}}', TEXTING_KEY),
    ]


@pytest.mark.parametrize("token", TOKENS)
def test_nan_and_infinity_in_any_api_body_are_a_400_and_nothing_is_stored(client, session, conversation_id, twilio_api, token):
    for path, body, key in bodies(conversation_id, token):
        response = post_raw(client, path, body, key)
        assert response.status_code == 400, (path, body, response.status_code)
        error = response.get_json()["error"]
        assert error["code"] == "invalid_json"
        assert token.lstrip("-") in error["message"] and "null or a finite number" in error["message"]
    session.expire_all()
    assert session.exec(select(Conversation)).one().data == {}
    assert session.exec(select(StoredDestination)).all() == []
    assert len(twilio_api.calls) == 0  # no SMS sent, no call redirected


def test_a_stored_nan_is_sent_as_null_so_strict_parsers_read_the_answer(client, session, conversation_id, database_url):
    """A row written before the edge refused NaN (possible on SQLite only; PostgreSQL never took one)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json type never stored a NaN")
    conversation = session.get(Conversation, conversation_id)
    conversation.data = {"score": float("nan"), "limit": float("inf"), "ok": 1.5}
    session.add(conversation)
    session.commit()

    response = client.get(f"{ACME}/handoff_state", query_string={"id": conversation_id}, headers={"x-api-key": CONFIG_KEY})
    assert response.status_code == 200
    assert strict_json.loads(response.get_data())["data"] == {"score": None, "limit": None, "ok": 1.5}


def test_an_assistant_answering_nan_is_a_502_and_nothing_of_it_is_stored(client, session, twilio_api):
    twilio_api.add(
        responses.POST, ASSISTANT_URL, body='{"response": "ok", "handoff": {"data": {"x": NaN}}}', content_type="application/json"
    )
    created = post_raw(client, f"{BOT}/chat/create", "{}", BOT_KEY)
    conversation_id = created.get_json()["conversation_id"]
    response = post_raw(client, f"{BOT}/chat/respond", json.dumps({"conversation_id": conversation_id, "message": "hi"}), BOT_KEY)
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "assistant_error"
    session.expire_all()
    assert session.get(Conversation, conversation_id).data == {}
    assert [m.role for m in session.exec(select(ChatMessage))] == ["customer"]


def test_strict_json_refuses_what_python_json_accepts():
    for token in TOKENS:
        assert json.loads(f"[{token}]")  # Python's own parser takes it
        with pytest.raises(ValueError):
            strict_json.loads(f"[{token}]")
