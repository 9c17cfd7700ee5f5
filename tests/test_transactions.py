"""One transaction rule: storage functions stage, the caller commits.

Each write of the storage modules is undone by the caller's rollback and kept by its commit, on
SQLite and PostgreSQL; and a use-case that talks to an assistant commits what it has before it
asks, so no write lock is held while the assistant thinks.
"""
from __future__ import annotations

import pytest
import responses
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from gateway.storage import message_store, project_store, store
from gateway.storage.models import new_id, utcnow
from tests.support import ACME, ASSISTANT_URL, BOT_KEY

TEXTER = "+14155551234"
OUR_NUMBER = "+14155550399"


def _given(session: Session) -> dict:
    """Rows the writes below act on, committed before each test."""
    call, _made = store.insert_call(
        session, call_sid="CA" + "8" * 32, project_key=ACME, from_number=TEXTER, to_number="+14155550199", shared_id=None
    )
    chat_conversation = message_store.create_conversation(session, project_key=ACME, channel="chat")
    message_store.opt_out(session, ACME, "+14155559999", keyword="STOP")
    session.commit()
    return {"call_sid": call.call_sid, "chat": chat_conversation}


WRITES = {
    "record_inbound": lambda s, g: message_store.record_inbound(
        s, sid="SM" + "2" * 32, project_key=ACME, from_number=TEXTER, to_number=OUR_NUMBER, body="hello"
    ),
    "add_outbound": lambda s, g: message_store.add_outbound(
        s, sid="SM" + "3" * 32, project_key=ACME, conversation_id=None, from_number=OUR_NUMBER, to_number=TEXTER,
        body="hi", status="queued", error_code=None,
    ),
    "record_status": lambda s, g: message_store.record_status(s, sid="SM" + "4" * 32, status="delivered", error_code=None),
    "opt_out": lambda s, g: message_store.opt_out(s, ACME, TEXTER, keyword="STOP"),
    "opt_in": lambda s, g: message_store.opt_in(s, ACME, "+14155559999"),
    "create_conversation": lambda s, g: message_store.create_conversation(s, project_key=ACME, channel="chat"),
    "open_thread": lambda s, g: message_store.open_thread(s, ACME, TEXTER, OUR_NUMBER),
    "close_conversation": lambda s, g: message_store.close_conversation(s, s.merge(g["chat"])),
    "add_chat_message": lambda s, g: message_store.add_chat_message(s, s.merge(g["chat"]), role="customer", text="hi"),
    "add_destination": lambda s, g: project_store.add_destination(s, ACME, "Night desk", {"name": "Night desk", "method": "bye"}),
    "add_api_key": lambda s, g: project_store.add_api_key(s, ACME, "b" * 64, "crm"),
    "delete_call": lambda s, g: store.delete_call(s, g["call_sid"]),
    "add_new_calls": lambda s, g: store.add_new_calls(store.dbapi_connection(s), s.get_bind().dialect, [_new_call_row()]),
}


def _new_call_row() -> dict:
    now = utcnow()
    return {
        "id": new_id(), "project_key": ACME, "channel": "voice", "call_sid": "CA" + "9" * 32, "data": {},
        "attempts": 0, "started_at": now, "updated_at": now,
    }


def _everything(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {
            table.name: sorted(map(repr, connection.execute(table.select())))
            for table in SQLModel.metadata.sorted_tables
        }


@pytest.mark.parametrize("write", WRITES)
def test_a_storage_write_is_staged_until_the_caller_commits(app, write):
    engine = app.extensions["gateway"].engine
    with Session(engine, expire_on_commit=False) as session:
        given = _given(session)
    before = _everything(engine)

    with Session(engine, expire_on_commit=False) as session:
        WRITES[write](session, given)
        session.rollback()
    assert _everything(engine) == before, f"{write} wrote without the caller's commit"

    with Session(engine, expire_on_commit=False) as session:
        WRITES[write](session, given)
        session.commit()
    assert _everything(engine) != before, f"{write} changed nothing once committed"


@responses.activate
def test_a_chat_turn_commits_the_customers_message_before_asking_the_assistant(make_app):
    """The assistant is asked with nothing of ours uncommitted: another connection sees the turn."""
    app = make_app()
    client = app.test_client()
    engine = app.extensions["gateway"].engine
    seen_by_the_assistant = []

    def assistant(request):
        with engine.connect() as connection:
            seen_by_the_assistant.extend(connection.execute(text("SELECT role, text FROM chat_messages")).all())
        return 200, {}, '{"response": "How can I help?"}'

    responses.add_callback(responses.POST, ASSISTANT_URL, callback=assistant, content_type="application/json")
    base = "/v1/ws-initech/PROJECT-bot"
    created = client.post(f"{base}/chat/create", headers={"x-api-key": BOT_KEY}).get_json()
    answered = client.post(
        f"{base}/chat/respond", json={"conversation_id": created["conversation_id"], "message": "my order"},
        headers={"x-api-key": BOT_KEY},
    )

    assert answered.status_code == 200, answered.get_json()
    assert seen_by_the_assistant == [("customer", "my order")]
