"""After the first <Dial>: results, retries, fallbacks, the call's end, the whisper, assistants."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.twiml.voice_response import Connect, VoiceResponse

from gateway.storage import store
from tests.support import (
    ASSISTANT_NUMBER,
    BASE_URL,
    add_assistant_number,
    call_params,
    post_signed,
    same_twiml,
    twiml_root,
)

CALL_SID = "CA" + "d" * 32


def start_call(client, session, to="+14155550199", **extra):
    response = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to=to, **extra))
    assert response.status_code == 200
    session.expire_all()
    return response, store.conversation_by_call_sid(session, CALL_SID)


def action_path(response) -> str:
    """The path and query of the <Dial>/<Refer> action in a TwiML answer, as Twilio would call it."""
    root = twiml_root(response.data)
    element = root.find("Dial") if root.find("Dial") is not None else root.find("Refer")
    parts = urlsplit(element.get("action"))
    return f"{parts.path}?{parts.query}"


def report(client, path, **form):
    params = {"CallSid": CALL_SID, "AccountSid": "AC" + "0" * 32, **form}
    response = post_signed(client, path, params)
    assert response.status_code in (200, 204), response.text
    return response


def just_hangup() -> VoiceResponse:
    response = VoiceResponse()
    response.hangup()
    return response


def states(session, conversation):
    return [(e.state, e.destination) for e in store.history(session, conversation.id)]


def fresh(session, conversation):
    session.expire_all()
    return store.find_by_id(session, conversation.id)


def test_an_answered_dial_completes_the_handoff_and_hangs_up(client, session):
    first, conversation = start_call(client, session)
    response = report(client, action_path(first), DialCallStatus="completed", DialCallSid="CA" + "e" * 32)

    assert same_twiml(response.data, just_hangup())
    conversation = fresh(session, conversation)
    assert conversation.state == "handoff_completed"
    assert states(session, conversation) == [
        ("handoff_initiated", "Front desk"),
        ("handoff_completed", "Front desk"),
    ]
    assert store.history(session, conversation.id)[-1].detail == "DialCallStatus=completed"


def test_an_answered_dials_talk_time_is_kept_in_its_history(client, session):
    """Twilio's DialCallDuration lets the console's overview work out how long the agent took to answer."""
    first, conversation = start_call(client, session)
    report(client, action_path(first), DialCallStatus="completed", DialCallDuration="42", DialCallSid="CA" + "e" * 32)
    assert store.history(session, conversation.id)[-1].detail == "DialCallStatus=completed DialCallDuration=42"


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_a_failed_dial_falls_back_to_the_numbers_fallback(client, session, status):
    first, conversation = start_call(client, session)
    response = report(client, action_path(first), DialCallStatus=status)

    conversation = fresh(session, conversation)
    assert conversation.state == "handoff_initiated"
    assert conversation.attempts == 2
    assert conversation.destination == "Billing"
    sip = twiml_root(response.data).find("Dial/Sip").text
    assert sip.startswith("sip:billing@pbx.acme.test?")
    assert parse_qs(urlsplit(action_path(response)).query)["attempt"] == ["2"]
    history = store.history(session, conversation.id)
    assert [(e.state, e.destination) for e in history] == [
        ("handoff_initiated", "Front desk"),
        ("handoff_failed", "Front desk"),
        ("handoff_initiated", "Billing"),
    ]
    assert history[1].detail == f"DialCallStatus={status}"


def test_fallbacks_then_the_default_then_an_apology_at_max_attempts(client, session):
    # +14155550197: Billing, fallback Tier 2 then Secure desk; max_attempts = 3.
    first, conversation = start_call(client, session, to="+14155550197")
    second = report(client, action_path(first), DialCallStatus="busy", DialSipResponseCode="486")
    assert twiml_root(second.data).find("Refer/Sip").text.startswith("sip:2001@pbx.acme.test?")
    third = report(client, action_path(second), ReferSipResponseCode="603")
    assert twiml_root(third.data).find("Refer/Sip").text.startswith("sips:desk@pbx.acme.test;transport=tls?")
    last = report(client, action_path(third), ReferCallStatus="failed", ReferSipResponseCode="202", NotifySipResponseCode="480")

    root = twiml_root(last.data)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    conversation = fresh(session, conversation)
    assert conversation.state == "handoff_failed"
    assert conversation.attempts == 3
    history = store.history(session, conversation.id)
    assert [e.state for e in history] == ["handoff_initiated", "handoff_failed"] * 3
    assert [e.detail for e in history if e.state == "handoff_failed"] == [
        "DialCallStatus=busy SIP 486",
        "ReferCallStatus=absent SIP 603",
        "ReferCallStatus=failed SIP 202 SIP 480",
    ]


def test_without_fallbacks_the_default_destination_is_retried(make_app, session):
    client = make_app().test_client()
    # +14155550198 routes to "Extension desk" with no fallback: next is the default, Front desk.
    first, conversation = start_call(client, session, to="+14155550198")
    second = report(client, action_path(first), DialCallStatus="no-answer")
    assert twiml_root(second.data).find("Dial/Number").text == "+14155550100"
    assert fresh(session, conversation).destination == "Front desk"


def test_a_successful_refer_completes(client, session):
    first, conversation = start_call(client, session, to="+14155550196")
    response = report(
        client, action_path(first), ReferCallStatus="in-progress", ReferSipResponseCode="202", NotifySipResponseCode="200"
    )
    assert same_twiml(response.data, just_hangup())
    assert fresh(session, conversation).state == "handoff_completed"


def test_a_repeated_or_late_result_changes_nothing(client, session):
    first, conversation = start_call(client, session)
    path = action_path(first)
    retry_twiml = report(client, path, DialCallStatus="busy").data
    again = report(client, path, DialCallStatus="busy")
    late_success = report(client, path, DialCallStatus="completed")

    assert again.data == retry_twiml
    assert late_success.data == retry_twiml
    conversation = fresh(session, conversation)
    assert conversation.attempts == 2
    assert len(store.history(session, conversation.id)) == 3


def test_a_result_for_an_unknown_conversation_still_gets_valid_twiml(client):
    response = report(client, "/voice/dial-status?conversation_id=nope&attempt=1", DialCallStatus="busy")
    assert [child.tag for child in twiml_root(response.data)] == ["Say", "Hangup"]


def test_call_status_records_the_end_and_never_goes_backwards(client, session):
    _, conversation = start_call(client, session)
    report(client, "/voice/status", CallStatus="in-progress", SequenceNumber="1")
    done = report(client, "/voice/status", CallStatus="completed", CallDuration="42", SequenceNumber="2")
    assert done.status_code == 204
    report(client, "/voice/status", CallStatus="ringing", SequenceNumber="0")
    report(client, "/voice/status", CallStatus="in-progress")

    conversation = fresh(session, conversation)
    assert conversation.call_status == "completed"
    assert conversation.duration_seconds == 42
    assert conversation.ended_at is not None


def test_status_callbacks_are_signed(client, session):
    _, conversation = start_call(client, session)
    forged = client.post("/voice/status", data={"CallSid": CALL_SID, "CallStatus": "completed"})
    assert forged.status_code == 403
    assert fresh(session, conversation).ended_at is None


def test_the_whisper_tells_the_agent_the_reason(client, session):
    first, conversation = start_call(client, session)
    whisper_url = twiml_root(first.data).find("Dial/Number").get("url")
    parts = urlsplit(whisper_url)
    response = report(client, f"{parts.path}?{parts.query}")

    expected = VoiceResponse()
    expected.say("Incoming transferred call. Reason: needs human.")
    assert same_twiml(response.data, expected)




@pytest.fixture
def assistant_client(make_app, config_path):
    add_assistant_number(config_path)
    return make_app().test_client()


def test_an_assistant_number_connects_the_stream_first(assistant_client, session):
    response, conversation = start_call(assistant_client, session, to=ASSISTANT_NUMBER)

    expected = VoiceResponse()
    connect = Connect(action=f"{BASE_URL}/voice/stream-ended?conversation_id={conversation.id}")
    stream = connect.stream(url="wss://bot.acme.test/stream")
    stream.parameter(name="conversation_id", value=conversation.id)
    stream.parameter(name="caller", value="+14155551234")
    stream.parameter(name="called", value=ASSISTANT_NUMBER)
    expected.append(connect)
    assert same_twiml(response.data, expected)
    assert conversation.state is None


def test_a_stream_that_ends_without_handoff_goes_to_the_default(assistant_client, session):
    _, conversation = start_call(assistant_client, session, to=ASSISTANT_NUMBER)
    response = report(assistant_client, f"/voice/stream-ended?conversation_id={conversation.id}")

    assert twiml_root(response.data).find("Dial/Number").text == "+14155550100"
    conversation = fresh(session, conversation)
    assert (conversation.state, conversation.destination) == ("handoff_initiated", "Front desk")


def test_a_bye_handoff_completes_when_twilio_reports_the_call_completed(client, session):
    """<Hangup> has no action callback: the call's end is the word that the SBC has it."""
    _, conversation = start_call(client, session, to="+14155550195")  # SBC: method bye
    report(client, "/voice/status", CallStatus="in-progress", SequenceNumber="1")
    assert fresh(session, conversation).state == "handoff_initiated"

    report(client, "/voice/status", CallStatus="completed", CallDuration="4", SequenceNumber="2")
    report(client, "/voice/status", CallStatus="completed", CallDuration="4", SequenceNumber="2")  # a retry

    conversation = fresh(session, conversation)
    assert conversation.state == "handoff_completed"
    history = store.history(session, conversation.id)
    assert [(e.state, e.destination, e.detail) for e in history] == [
        ("handoff_initiated", "SBC", None),
        ("handoff_completed", "SBC", "CallStatus=completed"),
    ]


def test_an_invite_still_waiting_when_the_call_ends_is_not_called_completed(client, session):
    _, conversation = start_call(client, session)
    report(client, "/voice/status", CallStatus="completed", CallDuration="4")
    assert fresh(session, conversation).state == "handoff_initiated"


def test_a_failed_result_after_the_call_ended_tries_nobody_else(client, session):
    """Callbacks can arrive out of order: the caller has hung up, so no retry is started."""
    first, conversation = start_call(client, session)
    report(client, "/voice/status", CallStatus="completed", CallDuration="9")
    response = report(client, action_path(first), DialCallStatus="canceled")

    assert twiml_root(response.data).find("Dial") is None
    conversation = fresh(session, conversation)
    assert (conversation.state, conversation.attempts) == ("handoff_failed", 1)
    assert states(session, conversation) == [("handoff_initiated", "Front desk"), ("handoff_failed", "Front desk")]


def test_a_caller_who_hangs_up_while_the_agent_rings_gets_no_second_attempt(client, session):
    """The action request itself says the call is over (CallStatus=completed): nobody to retry for."""
    first, conversation = start_call(client, session)
    response = report(client, action_path(first), DialCallStatus="canceled", CallStatus="completed")

    assert twiml_root(response.data).find("Dial") is None
    conversation = fresh(session, conversation)
    assert (conversation.state, conversation.attempts) == ("handoff_failed", 1)
    report(client, "/voice/status", CallStatus="completed", CallDuration="30", SequenceNumber="3")
    assert fresh(session, conversation).state == "handoff_failed"
