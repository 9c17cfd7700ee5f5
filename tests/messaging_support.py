"""Twilio's REST API and the assistant as `responses` mocks, and the forms Twilio's SMS webhooks post."""
from __future__ import annotations

import itertools
import json
from urllib.parse import parse_qs

import pytest
import responses

from tests.support import ACCOUNT_SID, ASSISTANT_URL, MESSAGING_SERVICE_SID

MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
USA2P_URL = f"https://messaging.twilio.com/v1/Services/{MESSAGING_SERVICE_SID}/Compliance/Usa2p"
STATUS_CALLBACK = "http://localhost/sms/status"

TEXTING = "/v1/ws-initech/PROJECT-texting"
BOT = "/v1/ws-initech/PROJECT-bot"
CUSTOMER = "+14155551234"

_sids = itertools.count(1)


@pytest.fixture
def twilio_api():
    """Every HTTP call the app makes goes to these mocks; an unmocked one fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def accept_messages(mock: responses.RequestsMock) -> None:
    """Twilio's Messages resource, answering each create as Twilio does (201, a new SM sid)."""

    def create(request):
        form = form_of(request)
        sid = "SM" + f"{next(_sids):032x}"
        answer = {
            "sid": sid,
            "account_sid": ACCOUNT_SID,
            "to": form["To"],
            "from": form.get("From"),
            "body": form["Body"],
            "status": "queued",
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "num_segments": "1",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
        }
        return 201, {"Content-Type": "application/json"}, json.dumps(answer)

    mock.add_callback(responses.POST, MESSAGES_URL, callback=create)


def refuse_messages(mock: responses.RequestsMock, code: int, message: str, status: int = 400) -> None:
    mock.add(
        responses.POST,
        MESSAGES_URL,
        json={"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status=status,
    )


def campaigns(mock: responses.RequestsMock, *statuses: str) -> None:
    """The service's US A2P compliance list, in the page shape twilio-python reads."""
    mock.add(
        responses.GET,
        USA2P_URL,
        json={
            "compliance": [
                {
                    "sid": f"QE{index:032x}",
                    "messaging_service_sid": MESSAGING_SERVICE_SID,
                    "campaign_status": status,
                    "us_app_to_person_usecase": "CUSTOMER_CARE",
                }
                for index, status in enumerate(statuses)
            ],
            "meta": {
                "key": "compliance",
                "page": 0,
                "page_size": 50,
                "first_page_url": USA2P_URL + "?PageSize=50&Page=0",
                "previous_page_url": None,
                "next_page_url": None,
                "url": USA2P_URL + "?PageSize=50&Page=0",
            },
        },
    )


def form_of(request) -> dict[str, str]:
    """What Twilio would receive: the form body, parsed by the standard library."""
    body = request.body if isinstance(request.body, str) else (request.body or b"").decode()
    return {name: values[0] for name, values in parse_qs(body).items()}


def sent(mock: responses.RequestsMock) -> list[dict[str, str]]:
    """The forms of every Messages create the app made."""
    return [form_of(call.request) for call in mock.calls if call.request.url == MESSAGES_URL]


def assistant_calls(mock: responses.RequestsMock) -> list[dict]:
    return [json.loads(call.request.body) for call in mock.calls if call.request.url == ASSISTANT_URL]


def inbound_params(body: str, *, from_: str = CUSTOMER, to: str = "+14155550399", sid: str | None = None) -> dict:
    """The form Twilio posts to /sms/inbound."""
    return {
        "MessageSid": sid or "SM" + f"{next(_sids):032x}",
        "SmsSid": "",
        "AccountSid": ACCOUNT_SID,
        "MessagingServiceSid": "",
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }


def status_params(sid: str, status: str, error_code: int | None = None) -> dict:
    """The form Twilio posts to a message's StatusCallback."""
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "MessageStatus": status,
        "SmsStatus": status,
        "From": "+14155550399",
        "To": CUSTOMER,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params
