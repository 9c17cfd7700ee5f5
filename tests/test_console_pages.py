"""The console's Numbers page, its route test, and conversation review."""
from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from gateway.handoffs import handoff
from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent
from tests.console_support import PASSWORD_HASH, post_form, sign_in, text_of
from tests.support import ACME, CONFIG_TOML, call_params, post_signed, same_twiml, twiml_root
from tests.test_ops import samples

MESSAGING_SERVICE = "MG" + "a" * 32


@pytest.fixture
def console_app(make_app, config_path):
    # This module's own extra: an SMS sender and a pending 10DLC status on one number.
    config_path.write_text(
        CONFIG_TOML.replace(
            'number = "+14155550198"\n',
            f'number = "+14155550198"\nmessaging_service_sid = "{MESSAGING_SERVICE}"\na2p_10dlc = "pending"\n',
        )
    )
    return make_app(console_password_hash=PASSWORD_HASH)


def row_text(response, attribute: str, value: str) -> str:
    match = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', response.text, re.S)
    assert match, f"no row for {value}"
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


def shown_twiml(response) -> str:
    match = re.search(r'<pre class="twiml" id="twiml">(.*?)</pre>', response.text, re.S)
    assert match, response.text
    return html.unescape(match.group(1))


# --- Numbers -------------------------------------------------------------------------------


def test_numbers_shows_routes_fallbacks_sms_sender_and_10dlc(operator):
    page = operator.get("/console/numbers")
    assert page.status_code == 200
    assert row_text(page, "data-number", "+14155550199").startswith(
        "+14155550199 Front desk INVITE → +14155550100 Billing the number itself registered"
    )
    assert row_text(page, "data-number", "+14155550198").startswith(
        f"+14155550198 Extension desk INVITE → +14155550101;ext=1234 — {MESSAGING_SERVICE} pending"
    )
    assert row_text(page, "data-number", "+14155550197").startswith(
        "+14155550197 Billing INVITE → sip:billing@pbx.acme.test Tier 2, Secure desk the number itself unknown"
    )
    assert "+14155550299" not in page.text  # another project's number


# --- the route test ------------------------------------------------------------------------


def count(session, table) -> int:
    session.expire_all()
    return len(session.exec(select(table)).all())


def test_route_test_shows_the_twiml_a_real_call_gets_and_keeps_nothing(operator, console_app, session):
    response = post_form(operator, "/console/numbers/test", {"number": "+14155550199", "from": "+14155551234"})
    assert response.status_code == 200
    twiml = shown_twiml(response)
    assert count(session, Conversation) == 0
    assert count(session, HandoffEvent) == 0

    # The same TwiML as a real signed call to that number, but for its conversation id.
    real = post_signed(console_app.test_client(), "/voice/call", call_params(to="+14155550199"))
    real_id = store.conversation_by_call_sid(session, call_params()["CallSid"]).id
    simulated_id = re.search(r"conversation_id=([0-9a-f-]{36})", twiml).group(1)
    assert simulated_id != real_id
    assert same_twiml(twiml.replace(simulated_id, real_id), real.text)
    root = twiml_root(twiml)
    assert root.find("Dial/Number").text == "+14155550100"
    assert "A call from +14155551234 gets this TwiML now (200)" in text_of(response)


def test_route_test_of_a_sip_destination_shows_the_headers(operator, session):
    response = post_form(operator, "/console/numbers/test", {"number": "+14155550197"})
    sip = twiml_root(shown_twiml(response)).find("Dial/Sip").text
    assert sip.startswith("sip:billing@pbx.acme.test?")
    assert "X-Caller-ID=%2B15005550006" in sip  # the default test caller
    assert count(session, Conversation) == 0


def test_route_test_signs_for_the_public_url_behind_a_proxy(make_app, session):
    app = make_app(console_password_hash=PASSWORD_HASH, public_url="https://gw.example.com")
    client = app.test_client()
    sign_in(client)
    response = post_form(client, "/console/numbers/test", {"number": "+14155550199"})
    twiml = shown_twiml(response)
    assert "(200)" in text_of(response)
    assert "https://gw.example.com/voice/dial-status?conversation_id=" in twiml
    assert count(session, Conversation) == 0


def test_route_test_makes_no_bypass_for_real_requests(operator, console_app, session):
    post_form(operator, "/console/numbers/test", {"number": "+14155550199"})
    webhook = console_app.test_client()
    assert webhook.post("/voice/call", data=call_params()).status_code == 403
    forged = post_signed(webhook, "/voice/call", call_params(), token="not-the-token")
    assert forged.status_code == 403
    assert count(session, Conversation) == 0


def test_route_test_counts_in_no_metric(operator, console_app):
    """Dashboards counted a handoff and a /voice/call for each test, though the call never was."""
    before = samples(console_app.test_client())
    assert "(200)" in text_of(post_form(operator, "/console/numbers/test", {"number": "+14155550199"}))
    after = samples(console_app.test_client())
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    counted = {(name, dict(labels).get("route")) for name, labels in changed}
    assert {name for name, route in counted if route not in ("/metrics", "/console/numbers/test")} == set(), counted


def test_route_test_without_an_auth_token_says_why(make_app):
    client = make_app(console_password_hash=PASSWORD_HASH, twilio_auth_token=None).test_client()
    sign_in(client)
    response = post_form(client, "/console/numbers/test", {"number": "+14155550199"}, follow_redirects=True)
    assert "TWILIO_AUTH_TOKEN is not set" in text_of(response)


@pytest.mark.parametrize("number", ["+14155550299", "+19999999999"])
def test_route_test_only_for_this_projects_numbers(operator, number):
    assert post_form(operator, "/console/numbers/test", {"number": number}).status_code == 404


# --- conversations -------------------------------------------------------------------------


def place(client, session, call_sid, to):
    assert post_signed(client, "/voice/call", call_params(call_sid=call_sid, to=to)).status_code == 200
    return store.conversation_by_call_sid(session, call_sid)


@pytest.fixture
def calls(console_app, session):
    """Three calls: one still initiated, one failed with a topic, one to another number."""
    webhook = console_app.test_client()
    first = place(webhook, session, "CA" + "1" * 32, "+14155550199")
    failed = place(webhook, session, "CA" + "2" * 32, "+14155550197")
    handoff.transition(session, failed, handoff.FAILED, detail="busy (SIP 486)")
    handoff.set_topic(session, failed, "customer_refund")
    session.commit()
    other = place(webhook, session, "CA" + "3" * 32, "+14155550198")
    return first, failed, other


def listed_ids(response) -> list[str]:
    return re.findall(r'href="/console/conversations/([0-9a-f-]{36})"', response.text)


def test_conversations_lists_newest_first(operator, calls):
    first, failed, other = calls
    page = operator.get("/console/conversations")
    assert page.status_code == 200
    assert listed_ids(page) == [other.id, failed.id, first.id]


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"state": "handoff_failed"}, ["failed"]),
        ({"state": "handoff_initiated"}, ["other", "first"]),
        ({"topic": "customer_refund"}, ["failed"]),
        ({"number": "+14155550198"}, ["other"]),
        ({"caller": "+14155551234", "number": "+14155550199"}, ["first"]),
        ({"date": datetime.now(timezone.utc).date().isoformat()}, ["other", "failed", "first"]),
        ({"date": (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()}, []),
    ],
)
def test_conversations_filter(operator, calls, query, expected):
    names = dict(zip(("first", "failed", "other"), calls))
    page = operator.get("/console/conversations", query_string=query)
    assert listed_ids(page) == [names[name].id for name in expected]


def test_a_bad_filter_is_explained_not_a_500(operator, calls):
    page = operator.get("/console/conversations", query_string={"date": "yesterday", "state": "weird"})
    assert page.status_code == 200
    text = text_of(page)
    assert "write the date as YYYY-MM-DD" in text and "choose a state from the list" in text


def test_conversations_page_through_with_filters_kept(operator, console_app, session):
    for index in range(27):
        store.insert_call(
            session, call_sid=f"CA{index:032d}", project_key=ACME,
            from_number="+14155551234", to_number="+14155550199", shared_id=None,
        )
        session.commit()
    first_page = operator.get("/console/conversations", query_string={"number": "+14155550199"})
    first_ids = listed_ids(first_page)
    assert len(first_ids) == 25
    older = html.unescape(re.search(r'<a href="([^"]+)" class="older">', first_page.text).group(1))
    assert "number=%2B14155550199" in older
    second_page = operator.get(older)
    second_ids = listed_ids(second_page)
    assert len(second_ids) == 2 and not set(first_ids) & set(second_ids)
    assert "Older" not in text_of(second_page) and "Newest" in text_of(second_page)


def test_conversation_detail_shows_the_handoff_and_its_timeline(operator, calls, session):
    _, failed, _ = calls
    failed.data = {"account_number": "A-77", "items": [1, 2]}
    session.add(failed)
    session.commit()
    page = operator.get(f"/console/conversations/{failed.id}")
    assert page.status_code == 200
    text = text_of(page)
    for shown in (
        "State handoff_failed",
        "Topic customer_refund",
        "Destination Billing",
        "Reason billing_question",
        "Attempts 1",
        "account_number A-77",
        "items [1, 2]",
    ):
        assert shown in text
    timeline = text_of_section(page, "timeline")
    assert re.search(
        r"Handoff initiated → Billing .*Handoff failed → Billing busy \(SIP 486\) .*Topic: customer_refund → Billing",
        timeline,
    ), timeline


def text_of_section(response, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</ol>', response.text, re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


def test_another_projects_conversation_is_not_found(operator, console_app, session):
    other = place(console_app.test_client(), session, "CA" + "9" * 32, "+14155550299")
    assert operator.get(f"/console/conversations/{other.id}").status_code == 404
    assert operator.get("/console/conversations/no-such-id").status_code == 404


