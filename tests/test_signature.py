"""X-Twilio-Signature: forged, missing and tampered requests are refused and change nothing."""
from __future__ import annotations

import logging

import pytest
from sqlmodel import select
from werkzeug.datastructures import MultiDict

from gateway.storage.models import Conversation
from tests.support import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, call_params, post_signed, sign


def stored_conversations(session):
    session.expire_all()
    return session.exec(select(Conversation)).all()


def test_a_genuine_request_is_accepted(client, session):
    assert post_signed(client, "/voice/call", call_params()).status_code == 200
    assert len(stored_conversations(session)) == 1


def test_a_missing_signature_is_refused(client, session):
    response = client.post("/voice/call", data=call_params())
    assert response.status_code == 403
    assert stored_conversations(session) == []


def test_a_signature_made_with_another_token_is_refused(client, session):
    response = post_signed(client, "/voice/call", call_params(), token="not-the-token")
    assert response.status_code == 403
    assert stored_conversations(session) == []


@pytest.mark.parametrize("field", ["CallSid", "From", "To", "AccountSid", "CallStatus"])
def test_any_tampered_field_is_refused(client, session, field):
    params = call_params()
    signature = sign(BASE_URL + "/voice/call", params)
    params[field] = params[field] + "0"
    response = client.post("/voice/call", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert stored_conversations(session) == []


def test_an_added_field_is_refused(client, session):
    params = call_params()
    signature = sign(BASE_URL + "/voice/call", params)
    response = client.post(
        "/voice/call", data={**params, "SipHeader_X-Shared-Id": "forged"}, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 403
    assert stored_conversations(session) == []


def test_a_changed_url_is_refused(client, session):
    params = call_params()
    signature = sign(BASE_URL + "/voice/call?extra=1", params)
    response = client.post("/voice/call", data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert stored_conversations(session) == []


def test_a_missing_auth_token_answers_503_and_says_why(make_app, session, caplog):
    caplog.set_level(logging.ERROR)
    client = make_app(twilio_auth_token=None).test_client()
    response = post_signed(client, "/voice/call", call_params())
    assert response.status_code == 503
    assert "TWILIO_AUTH_TOKEN is not set" in caplog.text
    assert stored_conversations(session) == []


PUBLIC = "https://gateway.example.com"


def test_behind_a_tls_proxy_the_public_url_setting_is_what_is_checked(make_app, session):
    client = make_app(public_url=PUBLIC + "/").test_client()
    # The proxy forwards to http://localhost; Twilio signed the public https URL.
    assert post_signed(client, "/voice/call", call_params(), base_url=PUBLIC).status_code == 200
    assert post_signed(client, "/voice/call", call_params(), base_url=BASE_URL).status_code == 403


def test_forwarded_headers_count_only_from_trusted_proxies(make_app, session):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gateway.example.com"}
    trusting = make_app(trusted_proxies=1).test_client()
    response = post_signed(trusting, "/voice/call", call_params(), base_url=PUBLIC, headers=forwarded)
    assert response.status_code == 200

    untrusting = make_app(trusted_proxies=0).test_client()
    # Without trusted proxies a client cannot make us check a URL of its choosing.
    response = post_signed(untrusting, "/voice/call", call_params(), base_url=PUBLIC, headers=forwarded)
    assert response.status_code == 403


def test_callback_urls_use_the_public_url(make_app, session):
    client = make_app(public_url=PUBLIC).test_client()
    response = post_signed(client, "/voice/call", call_params(), base_url=PUBLIC)
    assert f'action="{PUBLIC}/voice/dial-status?conversation_id=' in response.text
    assert AUTH_TOKEN not in response.text


def recut(params: dict, name: str) -> dict:
    """Glue the field after `name` (in signing order) onto its value: the signature stays the same."""
    names = sorted(params)
    following = names[names.index(name) + 1]
    recut_params = {key: value for key, value in params.items() if key != following}
    recut_params[name] = params[name] + following + params[following]
    return recut_params


@pytest.mark.parametrize("field", ["CallSid", "From", "Direction", "ApiVersion"])
def test_a_recut_form_with_the_genuine_signature_is_refused(client, session, field):
    genuine = call_params(call_sid="CA" + "7" * 32)
    forged = recut(genuine, field)
    signature = sign(BASE_URL + "/voice/call", genuine)
    assert sign(BASE_URL + "/voice/call", forged) == signature  # the forgery really verifies

    response = client.post("/voice/call", data=forged, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert stored_conversations(session) == []


def test_a_recut_dial_result_is_refused(client, session):
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "7" * 32)).status_code == 200
    conversation = stored_conversations(session)[0]
    path = f"/voice/dial-status?conversation_id={conversation.id}&attempt=1"
    genuine = {"CallSid": "CA" + "7" * 32, "AccountSid": ACCOUNT_SID, "DialCallSid": "CA" + "8" * 32, "DialCallStatus": "completed"}
    forged = recut(genuine, "DialCallSid")
    signature = sign(BASE_URL + path, genuine)
    assert sign(BASE_URL + path, forged) == signature

    assert client.post(path, data=forged, headers={"X-Twilio-Signature": signature}).status_code == 403
    session.expire_all()
    assert stored_conversations(session)[0].state == "handoff_initiated"


def test_another_accounts_sid_is_refused(client, session):
    params = call_params(AccountSid="AC" + "9" * 32)
    assert post_signed(client, "/voice/call", params).status_code == 403
    assert stored_conversations(session) == []


def test_a_custom_sip_header_named_like_a_sid_is_the_callers_own_value(client, session):
    """SIP calls bring their X- headers as SipHeader_X-… fields; only Twilio's own SIDs are checked."""
    params = call_params(**{"SipHeader_X-Session-Sid": "abc123", "SipHeader_X-Shared-Id": "crm-9"})
    assert post_signed(client, "/voice/call", params).status_code == 200
    assert [c.shared_id for c in stored_conversations(session)] == ["crm-9"]


@pytest.mark.parametrize("blank", [" ", "   ", "\t", " \n "])
def test_a_whitespace_only_auth_token_is_refused_like_an_empty_one(make_app, session, caplog, blank):
    """A token of spaces would let anyone sign webhooks: it is treated as no token at all."""
    caplog.set_level(logging.ERROR)
    client = make_app(twilio_auth_token=blank).test_client()
    response = post_signed(client, "/voice/call", call_params(), token=blank)
    assert response.status_code == 503
    assert "TWILIO_AUTH_TOKEN is not set" in caplog.text
    assert stored_conversations(session) == []


@pytest.mark.parametrize(
    "extra",
    [{"callSid2": "x"}, {"Jane RoeDirection": "inbound"}, {"SipHeader_": "x"}, {"To ": "+14155550199"}, {"X-Custom": "1"}, {"": "x"}],
)
def test_a_field_name_outside_twilios_grammar_is_refused(client, session, extra):
    assert post_signed(client, "/voice/call", call_params(**extra)).status_code == 403
    assert stored_conversations(session) == []


@pytest.mark.parametrize("extra", [{"Called": "+14155550299"}, {"Caller": "+15005550006"}, {"Called": ""}])
def test_a_field_that_disagrees_with_its_twin_is_refused(client, session, extra):
    assert post_signed(client, "/voice/call", call_params(**extra)).status_code == 403
    assert stored_conversations(session) == []


def test_a_voice_form_without_the_twins_is_refused(client, session):
    params = call_params()
    del params["Called"], params["Caller"]
    assert post_signed(client, "/voice/call", params).status_code == 403
    assert stored_conversations(session) == []


def test_new_twilio_fields_and_sip_headers_of_any_case_are_accepted(client, session):
    """Twilio adds fields over time: a name in its grammar is never refused for being new."""
    params = call_params(StirVerstat="TN-Validation-Passed-A", CallToken="%7B%22parentCallInfoToken%22%7D",
                         MediaUrl0="x", **{"SipHeader_x-lower": "1", "SipHeader_User-to-User": "56a390f3"})
    assert post_signed(client, "/voice/call", params).status_code == 200


def test_a_caller_written_sip_from_re_cut_into_repeated_twins_is_refused(client, session):
    """From one captured call whose SIP From the caller wrote, a form with the same signature
    that repeats `Called` and `To`, another project's number first: the signature covers each
    name's values sorted, the gateway routes on the first. Found by an outside review."""
    acme, globex = "+14155550199", "+14155550299"
    sip_from = "sip:x@example.com"
    swallowed = "Called" + globex + "Called" + "z" + "To" + acme + "Caller" + sip_from
    header = swallowed + "CallerName"
    tail = "To" + acme + "Caller" + sip_from + "SipHeader_X" + "To" + globex + "To" + "z"
    written = sip_from + "SipHeader_X" + header + tail  # what the caller put in its SIP From
    genuine = call_params(to=acme, From=written)  # Twilio copies From into Caller too
    middle, last = acme + "Caller" + sip_from + "SipHeader_X", "zTo" + acme
    forged = MultiDict([
        ("AccountSid", genuine["AccountSid"]), ("ApiVersion", genuine["ApiVersion"]),
        ("CallSid", genuine["CallSid"]), ("CallStatus", "ringing"),
        ("Called", globex), ("Called", middle), ("Called", last), ("Caller", sip_from), ("CallerName", tail),
        ("Direction", "inbound"), ("From", sip_from), ("SipHeader_X", header),
        ("To", globex), ("To", middle), ("To", last),
    ])
    signature = sign(BASE_URL + "/voice/call", genuine)
    assert sign(BASE_URL + "/voice/call", forged) == signature  # the re-cut keeps the signature
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):  # the fast path, then Flask's
        response = client.post("/voice/call", data=forged, content_type=content_type,
                               headers={"X-Twilio-Signature": signature})
        assert response.status_code == 403
    assert stored_conversations(session) == []


@pytest.mark.parametrize("host", ["LOCALHOST", "xn--bcher-kva.example"])
def test_a_host_is_checked_as_sent_on_every_path(client, session, host):
    """Twilio signs the URL as it calls it; Werkzeug's `host_url` would lower-case the host and
    decode punycode, so the Flask views refused what the /voice/call endpoint accepted."""
    params = call_params(call_sid="CA" + "a" * 32)
    headers = {"X-Twilio-Signature": sign(f"http://{host}/voice/call", params), "Host": host}
    fast = client.post("/voice/call", data=params, headers=headers)
    through_flask = client.post("/voice/call", data=params, content_type="multipart/form-data", headers=headers)
    assert (fast.status_code, through_flask.status_code) == (200, 200)
    assert f"http://{host}/voice/dial-status" in fast.data.decode()  # callbacks on the host Twilio used

    status = {"CallSid": "CA" + "a" * 32, "AccountSid": ACCOUNT_SID, "CallStatus": "completed"}
    answer = client.post("/voice/status", data=status,
                         headers={"X-Twilio-Signature": sign(f"http://{host}/voice/status", status), "Host": host})
    assert answer.status_code == 204
