"""The console mid-shift: finding a conversation, what the list and a conversation tell, the
Call Handoffs list, and the day's overview (Flask's test client; tests/test_console_browser.py
drives the same pages in Chromium)."""
from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlmodel import select

from gateway.handoffs import handoff
from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent, utcnow
from tests.console_support import PASSWORD_HASH, field_error, post_form, sign_in, text_of
from tests.messaging_support import CUSTOMER, TEXTING, accept_messages, inbound_params
from tests.support import CONFIG_KEY, TEXTING_KEY, call_params, post_signed

ACME_API = "/v1/ws-acme/PROJECT-frontdesk"


def place(client, session, call_sid, to="+14155550199", **extra):
    response = post_signed(client, "/voice/call", call_params(call_sid=call_sid, to=to, **extra))
    assert response.status_code == 200, response.text
    session.expire_all()
    return store.conversation_by_call_sid(session, call_sid)


def start_chat(client, *, shared_id=None, message=None) -> str:
    key = {"x-api-key": CONFIG_KEY}
    body = {"shared_id": shared_id} if shared_id else {}
    conversation_id = client.post(f"{ACME_API}/chat/create", json=body, headers=key).get_json()["conversation_id"]
    if message:
        reply = client.post(f"{ACME_API}/chat/respond", json={"conversation_id": conversation_id, "message": message}, headers=key)
        assert reply.status_code == 200, reply.text
    return conversation_id


def listed_ids(response) -> list[str]:
    return re.findall(r'<tr data-id="([0-9a-f-]{36})">', response.text)


def row_of(response, conversation_id: str) -> str:
    match = re.search(rf'<tr data-id="{conversation_id}">(.*?)</tr>', response.text, re.S)
    assert match, f"no row for {conversation_id}"
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


# --- 1. one search box ---------------------------------------------------------------------


@pytest.fixture
def callers(console_app, session):
    """Two calls from +14155551234 (one with a CRM id), one from +14155559876, and a chat."""
    webhook = console_app.test_client()
    first = place(webhook, session, "CA" + "1" * 32)
    second = place(webhook, session, "CA" + "2" * 32, to="+14155550197", **{"SipHeader_X-Shared-Id": "CRM-1"})
    other = place(webhook, session, "CA" + "3" * 32, From="+14155559876")
    chat = start_chat(webhook, shared_id="CRM-4471", message="where is my refund?")
    return {"first": first, "second": second, "other": other, "chat": chat}


@pytest.mark.parametrize(
    "query,opens",
    [
        ("CRM-4471", "chat"),  # the CRM's id
        ("CA" + "3" * 32, "other"),  # a CallSid
        ("  CA" + "3" * 32 + " ", "other"),  # pasted with spaces
        ("(415) 555-9876", "other"),  # the caller, as people write it
        ("+1 415 555 9876", "other"),
    ],
)
def test_one_match_opens_the_conversation(operator, callers, query, opens):
    response = operator.get("/console/conversations", query_string={"q": query})
    assert response.status_code == 302
    wanted = callers[opens] if isinstance(callers[opens], str) else callers[opens].id
    assert urlsplit(response.location).path == f"/console/conversations/{wanted}"


def test_a_conversation_id_opens_it_too(operator, callers):
    response = operator.get("/console/conversations", query_string={"q": callers["first"].id}, follow_redirects=True)
    assert response.request.path == f"/console/conversations/{callers['first'].id}"
    assert "CA" + "1" * 32 in text_of(response)


def test_several_matches_are_listed_with_the_search_kept(operator, callers):
    response = operator.get("/console/conversations", query_string={"q": "(415) 555-1234"})
    assert response.status_code == 200
    assert listed_ids(response) == [callers["second"].id, callers["first"].id]
    assert 'value="(415) 555-1234"' in response.text
    # The project's own number finds the calls made to it.
    to_front_desk = operator.get("/console/conversations", query_string={"q": "415-555-0199"})
    assert listed_ids(to_front_desk) == [callers["other"].id, callers["first"].id]


def test_the_last_day_of_the_calendar_is_a_day_like_any(operator, callers):
    response = operator.get("/console/conversations", query_string={"date": "9999-12-31"})
    assert response.status_code == 200 and listed_ids(response) == []


def test_no_match_says_so(operator, callers):
    response = operator.get("/console/conversations", query_string={"q": "CRM-0000"})
    assert response.status_code == 200
    assert listed_ids(response) == []
    assert "No conversation matches." in text_of(response)


# --- 2. the list tells the story -----------------------------------------------------------


def test_each_row_says_who_the_customer_is_and_how_the_call_went(operator, console_app, session):
    webhook = console_app.test_client()
    call = place(webhook, session, "CA" + "4" * 32, to="+14155550197")
    handoff.transition(session, call, handoff.FAILED, detail="busy")
    handoff.initiate(session, call, destination="Tier 2", reason=call.reason, utterance=None)
    call.call_status, call.duration_seconds, call.ended_at = "completed", 185, utcnow()
    session.add(call)
    session.commit()
    chat_opened = start_chat(webhook, message="Hello, I was charged twice for my order last week and want it back")
    chat_with_crm_id = start_chat(webhook, shared_id="CRM-77")

    page = operator.get("/console/conversations")
    assert "Customer" in text_of(page) and "Attempts" in text_of(page)
    assert row_of(page, call.id).endswith(
        "voice +14155551234 → +14155550197 handoff_initiated — Tier 2 billing_question 2 completed 3 min 05 s"
    )
    assert " chat Hello, I was charged twice for my order … — " in row_of(page, chat_opened)
    assert row_of(page, chat_with_crm_id).endswith("chat shared_id CRM-77 — — — 0 open")
    assert "— → —" not in text_of(page)


def test_an_sms_row_shows_the_texters_number(make_app, session, twilio_api):
    # The texting project's console: the SMS thread's row names the customer by number.
    app = make_app(console_password_hash=PASSWORD_HASH)
    accept_messages(twilio_api)
    assert post_signed(app.test_client(), "/sms/inbound", inbound_params("where is my order")).status_code == 200
    texter = session.exec(select(Conversation).where(Conversation.channel == "sms")).one()
    client = app.test_client()
    sign_in(client)
    post_form(client, "/console/project", {"project": texter.project_key, "next": "/console/conversations"})
    page = client.get("/console/conversations")
    assert row_of(page, texter.id).startswith(f"{store.as_utc(texter.started_at):%Y-%m-%d %H:%M:%S} UTC sms {CUSTOMER} texting +14155550399")


# --- 3. what the customer said -------------------------------------------------------------


def turns_of(response) -> list[str]:
    match = re.search(r'id="transcript"[^>]*>(.*?)</ol>', response.text, re.S)
    assert match, "no transcript on the page"
    items = re.findall(r"<li[^>]*>(.*?)</li>", match.group(1), re.S)
    return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", item))).strip() for item in items]


def test_a_chat_shows_its_transcript_beside_the_handoff_timeline(operator, console_app):
    conversation_id = start_chat(console_app.test_client(), message="where is my refund?")
    key = {"x-api-key": CONFIG_KEY}
    handed = console_app.test_client().post(
        f"{ACME_API}/chat/respond", json={"conversation_id": conversation_id, "message": "I want a human agent"}, headers=key
    )
    assert handed.get_json()["end_conversation"] is True

    page = operator.get(f"/console/conversations/{conversation_id}")
    turns = turns_of(page)
    assert [turn.split(" ", 1)[0] for turn in turns] == ["Customer", "Assistant", "Customer", "Assistant"]
    assert re.fullmatch(r"Customer \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC where is my refund\?", turns[0])
    assert turns[2].endswith("I want a human agent")
    assert turns[3].endswith(handed.get_json()["response"])
    timeline = re.search(r'id="timeline"[^>]*>(.*?)</ol>', page.text, re.S).group(1)
    assert "Handoff initiated" in timeline and "where is my refund" not in timeline


def test_an_sms_thread_shows_the_agents_texts_as_the_agents(make_app, session, twilio_api):
    app = make_app(console_password_hash=PASSWORD_HASH)
    accept_messages(twilio_api)
    webhook = app.test_client()
    post_signed(webhook, "/sms/inbound", inbound_params("I need an agent please"))
    agent = webhook.post(
        f"{TEXTING}/sms", json={"to": CUSTOMER, "body": "Hi, Sam here from billing."}, headers={"x-api-key": TEXTING_KEY}
    )
    assert agent.status_code == 201, agent.text
    post_signed(webhook, "/sms/inbound", inbound_params("thanks Sam"))
    texter = session.exec(select(Conversation).where(Conversation.channel == "sms")).one()

    client = app.test_client()
    sign_in(client)
    post_form(client, "/console/project", {"project": texter.project_key, "next": "/"})
    turns = turns_of(client.get(f"/console/conversations/{texter.id}"))
    speakers = [turn.split(" ", 1)[0] for turn in turns]
    assert speakers[0] == "Customer" and speakers[-2:] == ["Agent", "Customer"], turns
    assert "Hi, Sam here from billing. text queued" in turns[-2]


def test_a_voice_call_has_no_transcript_panel(operator, console_app, session):
    call = place(console_app.test_client(), session, "CA" + "5" * 32)
    page = operator.get(f"/console/conversations/{call.id}")
    assert 'id="transcript"' not in page.text and 'id="timeline"' in page.text


# --- 4. live -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/conversations", "/console/overview"])
def test_live_pages_say_when_they_were_read_and_how_often_they_refresh(operator, path):
    page = operator.get(path)
    assert 'data-live-every="5"' in page.text
    assert re.search(r"Updated \d\d:\d\d:\d\d UTC ?; refreshes every 5 s", text_of(page))
    with operator.get("/console/static/console.js") as script:
        assert script.status_code == 200 and "data-live" in script.text


# --- 5. what a transfer will do ------------------------------------------------------------


def handoff_row(response, name: str) -> str:
    match = re.search(rf'<tr data-name="{re.escape(name)}">(.*?)</tr>', response.text, re.S)
    assert match, f"no row for {name}"
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


def test_each_destination_says_what_its_transfer_does(operator):
    page = operator.get("/console/handoffs")
    assert handoff_row(page, "Front desk").startswith(
        "Front desk Operators default INVITE +14155550100 20 s Let me transfer you to someone who can help. "
        "reason needs_human — +14155550199 1st"
    )
    billing = handoff_row(page, "Billing")
    assert billing.startswith(
        "Billing INVITE sip:billing@pbx.acme.test 25 s says nothing reason billing_question "
        "X-Caller-ID: $caller_id X-Reason: $reason X-Account: $account_number"
    )
    assert "+14155550199 2nd" in billing and "+14155550197 1st" in billing
    assert "INVITE +14155550101;ext=1234 30 s (Twilio's default) says nothing" in handoff_row(page, "Extension desk")
    assert handoff_row(page, "Tier 2").startswith("Tier 2 REFER 2001 — says nothing no default reason")


def test_each_numbers_order_of_destinations_is_shown(operator):
    page = operator.get("/console/handoffs")
    orders = dict(re.findall(r'<tr data-number="([^"]+)">.*?<ol class="order">(.*?)</ol>', page.text, re.S))
    names = {number: re.findall(r"<li>(.*?)</li>", items) for number, items in orders.items()}
    # max_attempts = 3: the number's destination, its fallbacks, then the default.
    assert names["+14155550197"] == ["Billing", "Tier 2", "Secure desk"]
    assert names["+14155550199"] == ["Front desk", "Billing", "Front desk"]
    assert names["+14155550196"] == ["Tier 2", "Front desk", "Front desk"]


@pytest.mark.parametrize(
    "field,changes",
    [
        ("name", {"name": "Front desk"}),  # taken by the config file
        ("route", {"route": "call bob"}),
        ("route", {"method": "invite", "route": ""}),
        ("timeout", {"timeout": "2"}),
        ("timeout", {"timeout": "soon"}),
        ("timeout", {"timeout": "\u00b2"}),  # str.isdigit() takes '²', int() refuses it: was a 500
        ("sip_headers", {"header_name": "Caller", "header_value": "$caller_id"}),
    ],
)
def test_the_cores_refusal_is_shown_next_to_its_field(operator, field, changes):
    form = {"name": "Escalations", "method": "refer", "route": "sip:esc@pbx.acme.test", **changes}
    response = post_form(operator, "/console/handoffs/new", form)
    assert response.status_code in (400, 409)
    assert field_error(response, field), response.text
    marked = re.search(rf'aria-describedby="{field}-error"', response.text)
    assert marked, f"the {field} input is not marked invalid"


@pytest.mark.parametrize(
    "field,changes",
    [("name", {"name": "front desk"}), ("name", {"name": "Front\u00a0desk"}), ("route", {"method": "invite", "route": "+1415"})],
)
def test_look_alike_names_and_unreal_numbers_are_refused_beside_the_field(operator, field, changes):
    form = {"name": "Escalations", "method": "refer", "route": "sip:esc@pbx.acme.test", **changes}
    response = post_form(operator, "/console/handoffs/new", form)
    assert response.status_code in (400, 409)
    assert field_error(response, field)


# --- 6. the day's overview -----------------------------------------------------------------


def at_offsets(session, conversation, *seconds):
    """Move the conversation's history entries to these seconds after its start (a call of our own pace)."""
    events = store.history(session, conversation.id)
    start = store.as_utc(conversation.started_at)
    for event, offset in zip(events, seconds, strict=True):
        event.at = start + timedelta(seconds=offset)
        session.add(event)
    session.commit()


def dial_result(client, conversation, attempt, **form):
    params = {"CallSid": conversation.call_sid, "AccountSid": "AC" + "0" * 32, **form}
    path = f"/voice/dial-status?conversation_id={conversation.id}&attempt={attempt}"
    assert post_signed(client, path, params).status_code == 200


def test_the_overview_counts_todays_handoffs_from_their_history(operator, console_app, session):
    webhook = console_app.test_client()
    # Answered at once through a REFER (Tier 2), 12 s after the handoff started.
    refer = place(webhook, session, "CA" + "6" * 32, to="+14155550196")
    dial_result(webhook, refer, 1, ReferCallStatus="in-progress", ReferSipResponseCode="202")
    at_offsets(session, refer, 0, 12)
    # Billing busy, then Tier 2 answered 30 s after the start: a fail-over.
    failover = place(webhook, session, "CA" + "7" * 32, to="+14155550197")
    dial_result(webhook, failover, 1, DialCallStatus="busy")
    dial_result(webhook, failover, 2, ReferCallStatus="in-progress", ReferSipResponseCode="202")
    at_offsets(session, failover, 0, 20, 21, 30)
    # Front desk answered, and the dial result carries the talk time: 200 s, 150 of them talking.
    dialed = place(webhook, session, "CA" + "8" * 32)
    dial_result(webhook, dialed, 1, DialCallStatus="completed")
    events = store.history(session, dialed.id)
    events[-1].detail = "DialCallStatus=completed DialCallDuration=150"
    session.add(events[-1])
    session.commit()
    at_offsets(session, dialed, 0, 200)
    # Still ringing, and every attempt failing; and yesterday's call is not today's.
    place(webhook, session, "CA" + "9" * 32, to="+14155550198")
    failing = place(webhook, session, "CA" + "a" * 32, to="+14155550196")
    for attempt in (1, 2, 3):
        dial_result(webhook, failing, attempt, ReferCallStatus="failed")
    yesterday = place(webhook, session, "CA" + "b" * 32)
    yesterday.started_at = utcnow() - timedelta(days=1)
    session.add(yesterday)
    session.commit()
    before = session.exec(select(HandoffEvent)).all()

    page = operator.get("/console/overview")
    assert page.status_code == 200
    tiles = dict(re.findall(r'<section class="card tile[^"]*" id="tile-([a-z_]+)"><h2>[^<]*</h2>\s*<p class="figure">([^<]*)</p>', page.text))
    assert tiles == {
        "handoffs": "5",
        "handoff_completed": "3",
        "handoff_failed": "1",
        "handoff_initiated": "1",
        "failover": "40%",  # the fail-over and the call that tried all three
        "answer": "30 s",  # the median of 12, 30 and 200 - 150
    }
    assert "from 3 of 3 answered handoffs" in text_of(page)
    rows = dict(re.findall(r'<tr data-destination="([^"]+)">(.*?)</tr>', page.text, re.S))
    figures = {name: re.findall(r">(\d+)<", cells) for name, cells in rows.items()}
    assert figures["Tier 2"] == ["3", "2", "1"]  # attempts, answered, failed
    assert figures["Front desk"] == ["3", "1", "2"]
    assert figures["Billing"] == ["1", "0", "1"]
    assert figures["Extension desk"] == ["1", "0", "0"]
    session.expire_all()
    assert len(session.exec(select(HandoffEvent)).all()) == len(before)  # reading wrote nothing

    previous = operator.get("/console/overview", query_string={"day": (utcnow() - timedelta(days=1)).date().isoformat()})
    assert re.search(r'id="tile-handoffs"><h2>Handoffs</h2><p class="figure">1<', previous.text)


@pytest.mark.parametrize(
    "day,explained",
    [("monday", "write the day as YYYY-MM-DD"), ("9999-12-31", "that day has not come yet"), ("0001-01-01", "Handoffs 0")],
)
def test_a_day_that_cannot_be_shown_is_explained(operator, day, explained):
    page = operator.get("/console/overview", query_string={"day": day})
    assert page.status_code == 200
    assert explained in text_of(page)
