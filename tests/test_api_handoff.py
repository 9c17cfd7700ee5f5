"""POST /conversations/{id}/handoff: context stored, live call redirected through Twilio's REST API."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import pytest
import requests
import responses

from gateway.storage import store
from tests.support import (
    ACCOUNT_SID,
    ASSISTANT_NUMBER,
    CONFIG_KEY,
    add_assistant_number,
    call_params,
    post_signed,
    twiml_root,
)

CALL_SID = "CA" + "f" * 32
TWILIO_CALL_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
BASE = "/v1/acme/frontdesk"


@pytest.fixture
def client(make_app, config_path):
    """The test config plus a number answered by an assistant first."""
    add_assistant_number(config_path)
    return make_app().test_client()


@pytest.fixture
def live_call(client, session):
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to=ASSISTANT_NUMBER))
    return store.conversation_by_call_sid(session, CALL_SID)


def hand_off(client, conversation_id, body):
    return client.post(
        f"{BASE}/conversations/{conversation_id}/handoff", json=body, headers={"x-api-key": CONFIG_KEY}
    )


def twilio_call_update(body: dict | None = None, status: int = 200):
    return responses.add(
        responses.POST,
        TWILIO_CALL_URL,
        json=body or {"sid": CALL_SID, "status": "in-progress"},
        status=status,
    )


@responses.activate
def test_a_live_call_is_redirected_to_the_destinations_twiml(client, live_call, session):
    twilio_call_update()
    response = hand_off(
        client,
        live_call.id,
        {
            "destination": "Billing",
            "reason": "customer_refund_request",
            "utterance": "I'll get you to billing.",
            "data": {"account_number": "991", "vip": True},
            "topic": "customer_refund",
            "shared_id": "crm-77",
        },
    )
    assert response.status_code == 202, response.text
    state = response.get_json()
    assert state["state"] == "handoff_initiated"
    assert state["topic"] == "customer_refund"
    assert state["shared_id"] == "crm-77"
    assert state["data"] == {"account_number": "991", "vip": True}
    assert state["handoff"]["destination"] == "Billing"
    assert state["handoff"]["reason"] == "customer_refund_request"
    assert state["handoff"]["utterance"] == "I'll get you to billing."

    assert len(responses.calls) == 1
    sent = parse_qs(responses.calls[0].request.body)
    twiml = twiml_root(sent["Twiml"][0])
    assert twiml.find("Say").text == "I'll get you to billing."
    sip = twiml.find("Dial/Sip").text
    assert "X-Account=991" in sip
    assert "X-Reason=customer_refund_request" in sip
    assert f"X-Conversation-Id={live_call.id}" in sip
    assert "X-Shared-Id=crm-77" in sip

    # The desktop reads the same context back by shared_id.
    screen_pop = client.get(f"{BASE}/handoff_state", query_string={"shared_id": "crm-77"}, headers={"x-api-key": CONFIG_KEY})
    assert screen_pop.get_json()["handoff"]["reason"] == "customer_refund_request"
    assert [h["state"] for h in screen_pop.get_json()["handoff"]["history"]] == ["customer_refund", "handoff_initiated"]


@responses.activate
def test_twilio_refusing_is_502_and_recorded_as_failed(client, live_call, session):
    twilio_call_update({"code": 21220, "message": "Call is not in-progress", "status": 400}, status=400)
    response = hand_off(client, live_call.id, {"reason": "needs_human"})

    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "twilio_error"
    assert "21220" in error["message"]
    session.expire_all()
    conversation = store.find_by_id(session, live_call.id)
    assert conversation.state == "handoff_failed"
    assert "21220" in store.history(session, conversation.id)[-1].detail


@responses.activate
def test_twilio_timing_out_is_502_and_a_retry_can_follow(client, live_call, session):
    responses.add(responses.POST, TWILIO_CALL_URL, body=requests.exceptions.ReadTimeout("slow"))
    response = hand_off(client, live_call.id, {})
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "twilio_unreachable"

    responses.replace(responses.POST, TWILIO_CALL_URL, json={"sid": CALL_SID})
    retry = hand_off(client, live_call.id, {})
    assert retry.status_code == 202
    assert retry.get_json()["handoff"]["attempts"] == 2
    assert [h["state"] for h in retry.get_json()["handoff"]["history"]] == [
        "handoff_initiated",
        "handoff_failed",
        "handoff_initiated",
    ]


@responses.activate
def test_bad_requests_name_what_to_fix(client, live_call):
    assert hand_off(client, live_call.id, {"destination": "Nowhere"}).status_code == 404
    bad_topic = hand_off(client, live_call.id, {"topic": "Customer Refund"})
    assert bad_topic.status_code == 400
    # What to write, not the regex that refused it.
    assert "must be a snake_case name such as customer_refund" in bad_topic.get_json()["error"]["message"]
    assert "should match pattern" not in bad_topic.get_json()["error"]["message"]
    lifecycle = hand_off(client, live_call.id, {"topic": "handoff_failed"}).get_json()["error"]["message"]
    assert "handoff_failed is a lifecycle state, not a topic" in lifecycle
    assert hand_off(client, live_call.id, {"data": ["not", "an", "object"]}).status_code == 400
    assert hand_off(client, live_call.id, {"colour": "red"}).status_code == 400
    assert hand_off(client, "no-such-conversation", {}).status_code == 404
    assert len(responses.calls) == 0


@responses.activate
def test_a_handoff_with_no_body_at_all_goes_to_the_default_destination(client, live_call):
    twilio_call_update()
    response = client.post(f"{BASE}/conversations/{live_call.id}/handoff", headers={"x-api-key": CONFIG_KEY})
    assert response.status_code == 202, response.text
    handoff = response.get_json()["handoff"]
    assert handoff["destination"] == "Front desk"
    # `detail` is Twilio's status for a step; starting one has none.
    assert [(step["state"], step["detail"]) for step in handoff["history"]] == [("handoff_initiated", None)]


@responses.activate
def test_a_second_handoff_while_one_is_in_progress_is_409(client, live_call):
    twilio_call_update()
    assert hand_off(client, live_call.id, {}).status_code == 202
    again = hand_off(client, live_call.id, {})
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "handoff_in_progress"


def test_an_ended_call_cannot_be_handed_off(client, live_call):
    post_signed(client, "/voice/status", {"CallSid": CALL_SID, "AccountSid": ACCOUNT_SID, "CallStatus": "completed", "CallDuration": "9"})
    response = hand_off(client, live_call.id, {})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "call_ended"


@responses.activate
def test_two_racing_api_handoffs_start_one_attempt(client, live_call):
    twilio_call_update()
    start = threading.Barrier(2)

    def hand_off_now(_n):
        start.wait()
        return hand_off(client.application.test_client(), live_call.id, {})

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(response.status_code for response in pool.map(hand_off_now, range(2)))
    assert statuses == [202, 409]
    state = client.get(f"{BASE}/handoff_state", query_string={"id": live_call.id}, headers={"x-api-key": CONFIG_KEY})
    assert [step["state"] for step in state.get_json()["handoff"]["history"]] == ["handoff_initiated"]


@responses.activate
def test_a_redirect_that_times_out_after_it_took_effect_leaves_twilios_result_alone(client, live_call):
    """The redirect can apply, and its <Dial> can complete, before Twilio's answer to us times out."""
    def applied_then_timed_out(request):
        action = f"/voice/dial-status?conversation_id={live_call.id}&attempt=1"
        result = {"CallSid": CALL_SID, "AccountSid": ACCOUNT_SID, "DialCallStatus": "completed"}
        assert post_signed(client.application.test_client(), action, result).status_code == 200
        raise requests.exceptions.ReadTimeout("slow")

    responses.add_callback(responses.POST, TWILIO_CALL_URL, callback=applied_then_timed_out)
    response = hand_off(client, live_call.id, {})
    assert (response.status_code, response.get_json()["error"]["code"]) == (502, "twilio_unreachable")
    state = client.get(f"{BASE}/handoff_state", query_string={"id": live_call.id}, headers={"x-api-key": CONFIG_KEY})
    assert [step["state"] for step in state.get_json()["handoff"]["history"]] == ["handoff_initiated", "handoff_completed"]


@responses.activate
def test_each_handoffs_event_shows_the_context_of_its_own_moment(client, live_call):
    """Published after both handoffs, the first one's events still show its own shared_id, data,
    reason and utterance (SPEC §5: the document at that moment). Found by an outside review:
    events read those four from the conversation as it was at publication."""
    twilio_call_update({"code": 21220, "message": "Call is not in-progress", "status": 400}, status=400)
    first = {"reason": "first", "utterance": "one moment", "shared_id": "s1", "data": {"v": 1}}
    assert hand_off(client, live_call.id, first).status_code == 502  # Twilio refused: handoff_failed
    responses.replace(responses.POST, TWILIO_CALL_URL, json={"sid": CALL_SID, "status": "in-progress"})
    second = {"reason": "second", "utterance": "connecting you", "shared_id": "s2", "data": {"v": 2}}
    assert hand_off(client, live_call.id, second).status_code == 202

    events = client.get(f"{BASE}/events", headers={"x-api-key": CONFIG_KEY}).get_json()["items"]
    moments = [
        (event["type"], event["data"]["shared_id"], event["data"]["data"], event["data"]["handoff"]["reason"],
         event["data"]["handoff"]["utterance"])
        for event in events
    ]
    assert moments == [
        ("handoff.initiated", "s1", {"v": 1}, "first", "one moment"),
        ("handoff.failed", "s1", {"v": 1}, "first", "one moment"),
        ("handoff.retrying", "s2", {"v": 2}, "second", "connecting you"),
    ]


@responses.activate
def test_the_stream_ending_after_a_failed_redirect_goes_to_the_next_destination(client, live_call, session):
    """The API handoff's redirect failed (handoff_failed, attempt 1) with the caller still in the
    assistant's stream; when the stream ends, the caller goes on to the next destination as after
    a failed dial, not to the apology. Found by an outside review."""
    responses.add(responses.POST, TWILIO_CALL_URL, body=requests.exceptions.ConnectionError("Twilio unreachable"))
    assert hand_off(client, live_call.id, {"destination": "Billing"}).status_code in (502, 503)
    session.expire_all()
    assert store.find_by_id(session, live_call.id).state == "handoff_failed"

    params = call_params(call_sid=CALL_SID, to=ASSISTANT_NUMBER, CallStatus="in-progress")
    answer = post_signed(client, f"/voice/stream-ended?conversation_id={live_call.id}", params)
    root = twiml_root(answer.data)
    transfer = root.find("Dial") if root.find("Dial") is not None else root.find("Refer")
    assert transfer is not None, answer.data
    assert "attempt=2" in transfer.get("action")
    session.expire_all()
    conversation = store.find_by_id(session, live_call.id)
    assert (conversation.state, conversation.attempts) == ("handoff_initiated", 2)
    assert [entry.state for entry in store.history(session, live_call.id)] == [
        "handoff_initiated", "handoff_failed", "handoff_initiated",
    ]
