"""POST /voice/call answered in front of Flask (gateway/web/inbound_call.py): the same TwiML and
rows as the Flask view, and every request it does not answer reaches Flask unchanged."""
from __future__ import annotations

from contextlib import contextmanager

from flask import request, request_started
from sqlmodel import select

from gateway.storage.models import Conversation, HandoffEvent
from tests.support import BASE_URL, call_params, post_signed, same_twiml, sign, twiml_root

FRONT_DESK = "+14155550199"


@contextmanager
def requests_flask_handled(app):
    """The paths of the requests that went through Flask's request handling during the block."""
    handled: list[str] = []

    def record(_sender, **_extra):
        handled.append(request.path)

    request_started.connect(record, app)
    try:
        yield handled
    finally:
        request_started.disconnect(record, app)


def stored(session, call_sid):
    session.expire_all()
    conversations = session.exec(select(Conversation).where(Conversation.call_sid == call_sid)).all()
    events = session.exec(select(HandoffEvent).where(HandoffEvent.conversation_id.in_([c.id for c in conversations]))).all()
    return [(c.state, c.destination, c.attempts) for c in conversations], [(e.state, e.dedupe_key) for e in events]


def test_a_signed_call_is_answered_before_flask_exactly_as_the_view_answers_it(app, client, session):
    fast_sid, view_sid = "CA" + "1" * 32, "CA" + "2" * 32
    with requests_flask_handled(app) as handled:
        fast = post_signed(client, "/voice/call", call_params(call_sid=fast_sid, to=FRONT_DESK))
    assert handled == []
    assert (fast.status_code, fast.mimetype) == (200, "text/xml")

    # The same call as multipart form data is not the fast path's: Flask's view answers it.
    params = call_params(call_sid=view_sid, to=FRONT_DESK)
    with requests_flask_handled(app) as handled:
        view = client.post(
            "/voice/call",
            data=params,
            content_type="multipart/form-data",
            headers={"X-Twilio-Signature": sign(BASE_URL + "/voice/call", params)},
        )
    assert handled == ["/voice/call"]
    assert view.status_code == 200

    fast_id = twiml_root(fast.data).find("Dial").get("action")
    view_id = twiml_root(view.data).find("Dial").get("action")
    assert same_twiml(fast.data, view.data.decode().replace(_id(view_id), _id(fast_id)))
    assert stored(session, fast_sid) == stored(session, view_sid) == (
        [("handoff_initiated", "Front desk", 1)],
        [("handoff_initiated", "attempt:1")],
    )


def _id(action_url: str) -> str:
    return action_url.split("conversation_id=")[1].split("&")[0]


def test_what_the_fast_path_does_not_answer_reaches_flask(app, client):
    with requests_flask_handled(app) as handled:
        forged = post_signed(client, "/voice/call", call_params(), token="not-the-token")
        unknown = post_signed(client, "/voice/call", call_params(to="+14155550000"))
        unsigned_fields = post_signed(client, "/voice/call", {"CallSid": "CA" + "3" * 32})
        health = client.get("/healthz")
    assert [forged.status_code, unknown.status_code, unsigned_fields.status_code, health.status_code] == [403, 200, 403, 200]
    # The fast path read that body first: Flask verified the signature over the same bytes again.
    assert twiml_root(unknown.data).find("Say").text.startswith("Sorry, this number is not set up")
    assert handled == ["/voice/call", "/voice/call", "/voice/call", "/healthz"]

