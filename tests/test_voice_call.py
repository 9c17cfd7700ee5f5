"""POST /voice/call: the TwiML Twilio receives for each method and route, and what is stored."""
from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

from sqlmodel import select
from twilio.twiml.voice_response import Dial, Hangup, Refer, VoiceResponse

from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent
from tests.support import ACME, BASE_URL, call_params, post_signed, same_twiml, twiml_root

CALL_SID = "CA" + "a" * 32


def place_call(client, to, call_sid=CALL_SID, **extra):
    response = post_signed(client, "/voice/call", call_params(call_sid=call_sid, to=to, **extra))
    assert response.status_code == 200, response.text
    assert response.mimetype == "text/xml"
    return response


def conversation_of(session, call_sid=CALL_SID) -> Conversation:
    session.expire_all()
    return store.conversation_by_call_sid(session, call_sid)


def action_url(conversation_id):
    return f"{BASE_URL}/voice/dial-status?conversation_id={conversation_id}&attempt=1"


def sip_headers_of(uri: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True))


def test_invite_to_a_number_dials_it_with_a_whisper_after_the_utterance(client, session):
    response = place_call(client, "+14155550199")
    conversation = conversation_of(session)

    expected = VoiceResponse()
    expected.say("Let me transfer you to someone who can help.")
    dial = Dial(action=action_url(conversation.id), timeout=20)
    dial.number(
        "+14155550100", url=f"{BASE_URL}/voice/whisper?conversation_id={conversation.id}"
    )
    expected.append(dial)
    assert same_twiml(response.data, expected)


def test_invite_to_a_number_with_an_extension_sends_the_digits(client, session):
    response = place_call(client, "+14155550198")
    conversation = conversation_of(session)

    expected = VoiceResponse()
    dial = Dial(action=action_url(conversation.id))
    dial.number(
        "+14155550101",
        send_digits="ww1234",
        url=f"{BASE_URL}/voice/whisper?conversation_id={conversation.id}",
    )
    expected.append(dial)
    assert same_twiml(response.data, expected)


def test_invite_to_a_sip_uri_carries_filled_headers_as_uri_parameters(client, session):
    response = place_call(client, "+14155550197")
    conversation = conversation_of(session)
    sip_uri = twiml_root(response.data).find("Dial/Sip").text

    assert sip_headers_of(sip_uri) == {
        "X-Caller-ID": "+14155551234",
        "X-Reason": "billing_question",
        "X-Account": "",
        "X-Conversation-Id": conversation.id,
    }
    expected = VoiceResponse()
    dial = Dial(action=action_url(conversation.id), timeout=25)
    dial.sip(
        "sip:billing@pbx.acme.test?X-Caller-ID=%2B14155551234&X-Reason=billing_question"
        f"&X-Account=&X-Conversation-Id={conversation.id}"
    )
    expected.append(dial)
    assert same_twiml(response.data, expected)


def test_refer_to_a_bare_extension_uses_the_project_sip_domain(client, session):
    response = place_call(client, "+14155550196", **{"SipHeader_X-Shared-Id": "crm-42"})
    conversation = conversation_of(session)

    assert conversation.shared_id == "crm-42"
    expected = VoiceResponse()
    refer = Refer(action=action_url(conversation.id))
    refer.sip(
        "sip:2001@pbx.acme.test?X-Topic=&X-Called=%2B14155550196"
        f"&X-Conversation-Id={conversation.id}&X-Shared-Id=crm-42"
    )
    expected.append(refer)
    assert same_twiml(response.data, expected)


def test_refer_to_a_sips_uri_keeps_its_uri_parameters(client, session):
    response = place_call(client, "+14155550194")
    conversation = conversation_of(session)

    expected = VoiceResponse()
    refer = Refer(action=action_url(conversation.id))
    refer.sip(f"sips:desk@pbx.acme.test;transport=tls?X-Conversation-Id={conversation.id}")
    expected.append(refer)
    assert same_twiml(response.data, expected)


def test_bye_hangs_up_with_the_headers_as_parameters(client, session):
    response = place_call(client, "+14155550195")
    conversation = conversation_of(session)

    expected = VoiceResponse()
    expected.say("Returning you to the main line.")
    hangup = Hangup()
    hangup.parameter(name="X-Handoff-Reason", value="")
    hangup.parameter(name="X-Call", value=CALL_SID)
    hangup.parameter(name="X-Conversation-Id", value=conversation.id)
    expected.append(hangup)
    assert same_twiml(response.data, expected)


def test_the_call_is_recorded_as_handoff_initiated(client, session):
    place_call(client, "+14155550199")
    conversation = conversation_of(session)

    assert conversation.project_key == ACME
    assert conversation.channel == "voice"
    assert conversation.from_number == "+14155551234"
    assert conversation.to_number == "+14155550199"
    assert conversation.state == "handoff_initiated"
    assert conversation.destination == "Front desk"
    assert conversation.reason == "needs_human"
    assert conversation.utterance == "Let me transfer you to someone who can help."
    assert conversation.attempts == 1
    events = store.history(session, conversation.id)
    assert [(e.state, e.destination) for e in events] == [("handoff_initiated", "Front desk")]


def test_a_repeated_webhook_returns_the_same_twiml_and_keeps_one_conversation(client, session):
    first = place_call(client, "+14155550197")
    second = place_call(client, "+14155550197")

    assert second.data == first.data
    assert len(session.exec(select(Conversation)).all()) == 1
    assert len(session.exec(select(HandoffEvent)).all()) == 1


def test_an_unknown_number_gets_an_apology_and_a_hangup(client, session, caplog):
    caplog.set_level(logging.WARNING)
    response = place_call(client, "+19995550000")

    root = twiml_root(response.data)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert "not set up" in root.find("Say").text
    assert "+19995550000" in caplog.text
    assert session.exec(select(Conversation)).all() == []


def test_utterance_text_is_xml_escaped(make_app, config_path, session):
    config_path.write_text(
        config_path.read_text().replace(
            "Let me transfer you to someone who can help.", "Fish & <chips> \\\"now\\\""
        )
    )
    client = make_app().test_client()
    response = place_call(client, "+14155550199")

    assert twiml_root(response.data).find("Say").text == 'Fish & <chips> "now"'
