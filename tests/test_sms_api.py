"""POST /v1/{account}/{project}/sms and GET /messages/{sid}: checks in SPEC order, then one send."""
from __future__ import annotations

import pytest
import responses
from sqlmodel import select

from gateway.storage.models import SmsMessage, SmsOptOut
from tests.messaging_support import (
    CUSTOMER,
    MESSAGES_URL,
    STATUS_CALLBACK,
    TEXTING,
    USA2P_URL,
    accept_messages,
    campaigns,
    refuse_messages,
    sent,
)
from tests.support import BOT_KEY, MESSAGING_SERVICE_SID, TEXTING_KEY


def send(client, payload, *, key=TEXTING_KEY, project=TEXTING):
    return client.post(f"{project}/sms", json=payload, headers={"x-api-key": key})


def refusal(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_sends_once_with_the_exact_form_twilio_expects_and_stores_it(client, twilio_api, session):
    accept_messages(twilio_api)
    response = send(client, {"to": CUSTOMER, "body": "Your table is ready."})

    assert response.status_code == 201
    body = response.get_json()
    assert body["sid"].startswith("SM")
    assert sent(twilio_api) == [
        {"To": CUSTOMER, "From": "+14155550399", "Body": "Your table is ready.", "StatusCallback": STATUS_CALLBACK}
    ]
    row = session.exec(select(SmsMessage)).one()
    assert (row.sid, row.direction, row.from_number, row.to_number, row.status) == (
        body["sid"], "outbound", "+14155550399", CUSTOMER, "queued"
    )
    assert row.project_key == "ws-initech/PROJECT-texting"
    assert body["status"] == "queued" and body["error_code"] is None


def test_status_callback_uses_the_public_url(make_app, twilio_api):
    client = make_app(public_url="https://gateway.example.com").test_client()
    accept_messages(twilio_api)
    assert send(client, {"to": CUSTOMER, "body": "hi"}).status_code == 201
    assert sent(twilio_api)[0]["StatusCallback"] == "https://gateway.example.com/sms/status"


def test_named_sender_is_used(client, twilio_api):
    accept_messages(twilio_api)
    assert send(client, {"to": CUSTOMER, "body": "hi", "from": "+18885550399"}).status_code == 201
    assert sent(twilio_api)[0]["From"] == "+18885550399"


def test_default_sender_skips_numbers_that_cannot_send(client, twilio_api):
    """The bot project's first number has no 10DLC answer at all; its toll-free number can send."""
    accept_messages(twilio_api)
    response = send(client, {"to": CUSTOMER, "body": "hi"}, key=BOT_KEY, project="/v1/ws-initech/PROJECT-bot")
    assert response.status_code == 201
    assert sent(twilio_api)[0]["From"] == "+18885550499"


@pytest.mark.parametrize(
    "payload,code",
    [
        ({"body": "hi"}, "invalid_to"),
        ({"to": "4155551234", "body": "hi"}, "invalid_to"),
        ({"to": 14155551234, "body": "hi"}, "invalid_to"),
        ({"to": CUSTOMER}, "invalid_body"),
        ({"to": CUSTOMER, "body": "   "}, "invalid_body"),
        ({"to": CUSTOMER, "body": "x" * 1601}, "invalid_body"),
        ({"to": CUSTOMER, "body": "hi", "from": "+14155550100"}, "invalid_from"),
        ({"to": CUSTOMER, "body": "hi", "from": "not a number"}, "invalid_from"),
    ],
)
def test_bad_input_is_400_and_nothing_is_sent(client, twilio_api, payload, code):
    response = send(client, payload)
    assert refusal(response) == (400, code)
    assert response.get_json()["error"]["message"]
    assert sent(twilio_api) == []


def test_body_of_exactly_1600_characters_is_sent(client, twilio_api):
    accept_messages(twilio_api)
    assert send(client, {"to": CUSTOMER, "body": "x" * 1600}).status_code == 201


def test_not_json_is_400(client, twilio_api):
    response = client.post(f"{TEXTING}/sms", data="to=+1", headers={"x-api-key": TEXTING_KEY})
    assert refusal(response) == (400, "invalid_json")


def test_without_api_key_is_401(client, twilio_api):
    assert refusal(client.post(f"{TEXTING}/sms", json={"to": CUSTOMER, "body": "hi"})) == (401, "missing_api_key")


def test_opted_out_recipient_is_422_and_nothing_is_sent(client, twilio_api, session):
    session.add(SmsOptOut(project_key="ws-initech/PROJECT-texting", number=CUSTOMER, keyword="STOP"))
    session.commit()
    response = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(response) == (422, "recipient_opted_out")
    assert "START" in response.get_json()["error"]["message"]
    assert sent(twilio_api) == []


def test_refusals_are_counted_in_metrics_by_reason(client, twilio_api, session):
    session.add(SmsOptOut(project_key="ws-initech/PROJECT-texting", number=CUSTOMER, keyword="STOP"))
    session.commit()
    send(client, {"to": CUSTOMER, "body": "hi"})
    send(client, {"to": "+14155559999", "body": "hi", "from": "+14155550398"})
    send(client, {"to": CUSTOMER, "body": ""})  # bad input is not a refusal

    exposition = client.get("/metrics").text
    assert 'gateway_sms_refused_total{reason="recipient_opted_out"} 1.0' in exposition
    assert 'gateway_sms_refused_total{reason="a2p_10dlc_unregistered"} 1.0' in exposition
    assert "invalid_body" not in exposition


def test_input_is_checked_before_opt_out_and_opt_out_before_10dlc(client, twilio_api, session):
    session.add(SmsOptOut(project_key="ws-initech/PROJECT-texting", number=CUSTOMER, keyword="STOP"))
    session.commit()
    assert refusal(send(client, {"to": CUSTOMER, "body": ""})) == (400, "invalid_body")
    assert refusal(send(client, {"to": CUSTOMER, "body": "hi", "from": "+14155550398"})) == (422, "recipient_opted_out")


@pytest.mark.parametrize(
    "sender,hint",
    [
        ("+14155550398", "register a brand and campaign"),  # a2p_10dlc = "unregistered"
        ("+14155550397", "pending"),  # a2p_10dlc = "pending"
        ("+14155550395", "set its a2p_10dlc"),  # neither a2p_10dlc nor messaging_service_sid
    ],
)
def test_unregistered_us_long_code_is_422_with_the_next_step(client, twilio_api, sender, hint):
    response = send(client, {"to": CUSTOMER, "body": "hi", "from": sender})
    assert refusal(response) == (422, "a2p_10dlc_unregistered")
    message = response.get_json()["error"]["message"]
    assert hint in message and "Nothing was sent" in message
    assert sent(twilio_api) == []


@pytest.mark.parametrize("sender", ["+18885550399", "+447700900399"])
def test_toll_free_and_non_us_senders_skip_the_check(client, twilio_api, sender):
    accept_messages(twilio_api)
    assert send(client, {"to": CUSTOMER, "body": "hi", "from": sender}).status_code == 201
    assert [call.request.url for call in twilio_api.calls] == [MESSAGES_URL]


def test_messaging_service_with_a_verified_campaign_sends(client, twilio_api):
    campaigns(twilio_api, "VERIFIED")
    accept_messages(twilio_api)
    response = send(client, {"to": CUSTOMER, "body": "hi", "from": "+14155550396"})
    assert response.status_code == 201
    assert twilio_api.calls[0].request.url.startswith(USA2P_URL)
    assert sent(twilio_api) == [
        {"To": CUSTOMER, "From": "+14155550396", "Body": "hi", "StatusCallback": STATUS_CALLBACK}
    ]


def test_campaign_answer_is_cached(client, twilio_api):
    campaigns(twilio_api, "VERIFIED")
    accept_messages(twilio_api)
    for _ in range(3):
        assert send(client, {"to": CUSTOMER, "body": "hi", "from": "+14155550396"}).status_code == 201
    lookups = [call for call in twilio_api.calls if call.request.url.startswith(USA2P_URL)]
    assert len(lookups) == 1
    assert len(sent(twilio_api)) == 3


@pytest.mark.parametrize(
    "statuses,hint",
    [(("IN_PROGRESS",), "IN_PROGRESS, not VERIFIED"), (("FAILED",), "FAILED"), ((), "has no A2P 10DLC campaign")],
)
def test_messaging_service_without_a_verified_campaign_is_422(client, twilio_api, statuses, hint):
    campaigns(twilio_api, *statuses)
    response = send(client, {"to": CUSTOMER, "body": "hi", "from": "+14155550396"})
    assert refusal(response) == (422, "a2p_10dlc_unregistered")
    assert hint in response.get_json()["error"]["message"]
    assert MESSAGING_SERVICE_SID in response.get_json()["error"]["message"]
    assert sent(twilio_api) == []


def test_campaign_lookup_failure_is_502_and_nothing_is_sent(client, twilio_api):
    twilio_api.add(
        responses.GET, USA2P_URL, status=404,
        json={"code": 20404, "message": "The requested resource was not found", "status": 404},
    )
    response = send(client, {"to": CUSTOMER, "body": "hi", "from": "+14155550396"})
    assert refusal(response) == (502, "twilio_error")
    assert response.get_json()["error"]["twilio_code"] == 20404
    assert sent(twilio_api) == []


def test_without_twilio_credentials_is_503(make_app, twilio_api):
    client = make_app(twilio_account_sid=None).test_client()
    response = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(response) == (503, "twilio_not_configured")
    assert "TWILIO_ACCOUNT_SID" in response.get_json()["error"]["message"]
    assert len(twilio_api.calls) == 0


@pytest.mark.parametrize(
    "code,words",
    [(21211, "not a valid phone number"), (21408, "Geo permissions"), (21614, "not a mobile number"), (30034, "A2P 10DLC")],
)
def test_twilio_refusal_comes_back_with_its_code_and_explanation(client, twilio_api, session, code, words):
    refuse_messages(twilio_api, code, "Twilio's own words")
    response = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(response) == (422, "twilio_error")
    error = response.get_json()["error"]
    assert error["twilio_code"] == code
    assert words in error["explanation"] and words in error["message"]
    assert session.exec(select(SmsMessage)).all() == []


def test_twilio_21610_also_records_the_opt_out(client, twilio_api):
    refuse_messages(twilio_api, 21610, "Attempt to send to unsubscribed recipient")
    first = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(first) == (422, "twilio_error")
    assert first.get_json()["error"]["twilio_code"] == 21610
    second = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(second) == (422, "recipient_opted_out")
    assert len(sent(twilio_api)) == 1


def test_twilio_server_error_is_502_and_not_retried(client, twilio_api):
    """A 5xx means the request reached Twilio: retrying could send the text twice."""
    refuse_messages(twilio_api, 20500, "Internal Server Error", status=500)
    response = send(client, {"to": CUSTOMER, "body": "hi"})
    assert refusal(response) == (502, "twilio_error")
    assert len(sent(twilio_api)) == 1


def test_message_view_explains_the_error_code(client, twilio_api, session):
    accept_messages(twilio_api)
    sid = send(client, {"to": CUSTOMER, "body": "hi"}).get_json()["sid"]
    row = session.exec(select(SmsMessage).where(SmsMessage.sid == sid)).one()
    row.status, row.error_code = "undelivered", 30003
    session.add(row)
    session.commit()

    response = client.get(f"{TEXTING}/messages/{sid}", headers={"x-api-key": TEXTING_KEY})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["sid"], body["status"], body["error_code"]) == (sid, "undelivered", 30003)
    assert "unreachable" in body["error_explanation"]


def test_message_of_another_project_is_404(client, twilio_api):
    accept_messages(twilio_api)
    sid = send(client, {"to": CUSTOMER, "body": "hi"}).get_json()["sid"]
    response = client.get(f"/v1/ws-initech/PROJECT-bot/messages/{sid}", headers={"x-api-key": BOT_KEY})
    assert refusal(response) == (404, "message_not_found")


def test_a_text_to_a_number_outside_plus_one_needs_no_10dlc_registration(client, twilio_api):
    """TWILIO.md: A2P 10DLC covers US long codes texting US recipients."""
    accept_messages(twilio_api)
    response = send(client, {"to": "+447700900123", "body": "hi", "from": "+14155550398"})  # unregistered sender
    assert response.status_code == 201, response.text
    assert sent(twilio_api)[0]["To"] == "+447700900123"
