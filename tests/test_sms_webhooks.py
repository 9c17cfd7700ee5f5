"""POST /sms/inbound and /sms/status: keywords, SMS threads through the chat engine, delivery status."""
from __future__ import annotations

import pytest
import responses
from sqlmodel import select
from twilio.twiml.messaging_response import MessagingResponse

from gateway.storage import message_store
from gateway.storage.models import ChatMessage, Conversation, SmsMessage, SmsOptOut, SmsStatusEvent
from tests.messaging_support import (
    CUSTOMER,
    STATUS_CALLBACK,
    TEXTING,
    accept_messages,
    assistant_calls,
    campaigns,
    inbound_params,
    sent,
    status_params,
)
from tests.support import ASSISTANT_URL, BOT_KEY, TEXTING_KEY, post_signed, same_twiml, sign, twiml_root

TEXTING_PROJECT = "ws-initech/PROJECT-texting"


def reply(*texts: str) -> MessagingResponse:
    response = MessagingResponse()
    for text in texts:
        response.message(text)
    return response


def text_in(client, body, **kwargs):
    response = post_signed(client, "/sms/inbound", inbound_params(body, **kwargs))
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    return response


def opted_out(session, number=CUSTOMER) -> bool:
    session.expire_all()
    return message_store.is_opted_out(session, TEXTING_PROJECT, number)


# --- signatures ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
def test_unsigned_or_badly_signed_requests_are_403_and_change_nothing(client, session, twilio_api, path):
    params = inbound_params("STOP") if path == "/sms/inbound" else status_params("SM" + "1" * 32, "delivered")
    assert client.post(path, data=params).status_code == 403
    forged = {"X-Twilio-Signature": sign("http://localhost" + path, params, token="wrong")}
    assert client.post(path, data=params, headers=forged).status_code == 403
    assert session.exec(select(SmsMessage)).all() == []
    assert session.exec(select(SmsOptOut)).all() == []
    assert session.exec(select(SmsStatusEvent)).all() == []


def test_without_auth_token_webhooks_answer_503(make_app, twilio_api):
    client = make_app(twilio_auth_token=None).test_client()
    assert post_signed(client, "/sms/inbound", inbound_params("hi")).status_code == 503


# --- keywords --------------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["STOP", " Stop. ", "STOP ALL", "unsubscribe"])  # every word: test_messaging_policy
def test_opt_out_words_opt_the_sender_out_and_answer_nothing(client, session, twilio_api, word):
    response = text_in(client, word)
    assert same_twiml(response.data, reply())
    assert opted_out(session)
    assert session.exec(select(Conversation)).all() == []


@pytest.mark.parametrize("word", ["START", "unstop", "Yes"])
def test_opt_in_words_opt_back_in(client, session, twilio_api, word):
    text_in(client, "STOP")
    response = text_in(client, word)
    assert same_twiml(response.data, reply())
    assert not opted_out(session)


def test_a_sentence_with_stop_in_it_is_not_an_opt_out(client, session, twilio_api):
    text_in(client, "please stop calling me, I want an agent")
    assert not opted_out(session)


def test_opt_out_then_send_is_refused_and_opt_in_allows_it_again(client, session, twilio_api):
    accept_messages(twilio_api)
    text_in(client, "STOP")
    api = dict(json={"to": CUSTOMER, "body": "hi"}, headers={"x-api-key": TEXTING_KEY})
    refused = client.post(f"{TEXTING}/sms", **api)
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "recipient_opted_out"
    assert sent(twilio_api) == []
    text_in(client, "START")
    assert client.post(f"{TEXTING}/sms", **api).status_code == 201


def test_opt_out_is_per_project(client, session, twilio_api):
    text_in(client, "STOP", to="+14155550399")
    session.expire_all()
    assert message_store.is_opted_out(session, TEXTING_PROJECT, CUSTOMER)
    assert not message_store.is_opted_out(session, "ws-initech/PROJECT-bot", CUSTOMER)


@pytest.mark.parametrize("word", ["HELP", "info"])
def test_help_answers_with_the_project_help_text(client, twilio_api, word):
    response = text_in(client, word)
    assert same_twiml(response.data, reply("Initech texting. Reply STOP to opt out."))


def test_help_without_help_text_answers_a_default(client, twilio_api):
    response = text_in(client, "HELP", to="+14155550299")
    assert same_twiml(response.data, reply("Reply STOP to stop receiving messages, START to receive them again."))


def test_text_from_an_opted_out_number_is_kept_but_not_answered(client, session, twilio_api):
    text_in(client, "STOP")
    response = text_in(client, "hello?")
    assert same_twiml(response.data, reply())
    assert [m.body for m in session.exec(select(SmsMessage).order_by(SmsMessage.id))] == ["STOP", "hello?"]


# --- unknown numbers and odd requests --------------------------------------------------------

def test_unknown_to_number_gets_an_empty_response_and_a_log_line(client, session, twilio_api, caplog):
    response = text_in(client, "hello", to="+19995550000")
    assert same_twiml(response.data, reply())
    assert "+19995550000" in caplog.text and "not in the config" in caplog.text
    assert session.exec(select(SmsMessage)).all() == []


def test_missing_fields_get_an_empty_response(client, twilio_api):
    params = inbound_params("hello")
    del params["From"]
    response = post_signed(client, "/sms/inbound", params)
    assert response.status_code == 200
    assert same_twiml(response.data, reply())


def test_reply_text_is_xml_escaped(client, twilio_api):
    response = text_in(client, "Tell me about <b>&things</b>")
    assert same_twiml(response.data, reply('Thanks for your message. To talk to a person, reply "agent".'))


# --- SMS threads -----------------------------------------------------------------------------

def test_a_text_is_a_turn_of_the_customer_thread(client, session, twilio_api):
    first = text_in(client, "hello")
    assert same_twiml(first.data, reply('Thanks for your message. To talk to a person, reply "agent".'))
    text_in(client, "still there?")
    conversations = session.exec(select(Conversation)).all()
    assert len(conversations) == 1
    thread = conversations[0]
    assert (thread.channel, thread.from_number, thread.to_number, thread.project_key) == (
        "sms", CUSTOMER, "+14155550399", TEXTING_PROJECT
    )
    lines = session.exec(select(ChatMessage).order_by(ChatMessage.id)).all()
    assert [(line.role, line.text) for line in lines] == [
        ("customer", "hello"),
        ("assistant", 'Thanks for your message. To talk to a person, reply "agent".'),
        ("customer", "still there?"),
        ("assistant", 'Thanks for your message. To talk to a person, reply "agent".'),
    ]
    inbound = session.exec(select(SmsMessage)).all()
    assert {m.conversation_id for m in inbound} == {thread.id}


def mms_params(body: str, *media: tuple[str, str]) -> dict:
    params = inbound_params(body)
    params["NumMedia"] = str(len(media))
    for index, (content_type, url) in enumerate(media):
        params[f"MediaUrl{index}"], params[f"MediaContentType{index}"] = url, content_type
    return params


def test_a_picture_without_words_is_a_turn_kept_in_the_transcript(client, session, twilio_api):
    """It was refused as a blank message: answered with the outage apology and not kept."""
    picture = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    response = post_signed(client, "/sms/inbound", mms_params("", ("image/jpeg", picture)))
    assert same_twiml(response.data, reply('Thanks for your message. To talk to a person, reply "agent".'))
    lines = session.exec(select(ChatMessage).order_by(ChatMessage.id)).all()
    assert [(line.role, line.text) for line in lines][0] == ("customer", f"[media image/jpeg: {picture}]")


def test_a_caption_and_its_pictures_are_one_customer_line(client, session, twilio_api):
    params = mms_params("my receipt", ("image/png", "https://api.twilio.com/ME1"), ("application/pdf", "https://api.twilio.com/ME2"))
    post_signed(client, "/sms/inbound", params)
    customer = session.exec(select(ChatMessage).where(ChatMessage.role == "customer")).one()
    assert customer.text == (
        "my receipt\n[media image/png: https://api.twilio.com/ME1]\n[media application/pdf: https://api.twilio.com/ME2]"
    )


def test_each_customer_number_has_its_own_thread(client, session, twilio_api):
    text_in(client, "hello")
    text_in(client, "hello", from_="+14155554321")
    assert len(session.exec(select(Conversation)).all()) == 2


def test_a_retried_webhook_is_answered_once(client, session, twilio_api):
    params = inbound_params("hello")
    post_signed(client, "/sms/inbound", params)
    again = post_signed(client, "/sms/inbound", params)
    assert same_twiml(again.data, reply())
    assert len(session.exec(select(ChatMessage)).all()) == 2


def test_keyword_hands_off_replies_with_the_utterance_and_texts_the_agent(client, session, twilio_api):
    accept_messages(twilio_api)
    response = text_in(client, "Can I talk to a person please")
    assert same_twiml(response.data, reply("Connecting you with an agent; they will text you shortly."))

    thread = session.exec(select(Conversation)).one()
    assert (thread.state, thread.destination, thread.reason) == ("handoff_initiated", "Agents", "customer_asked")
    [note] = sent(twilio_api)
    assert note["To"] == "+14155550300" and note["From"] == "+14155550399"
    assert note["StatusCallback"] == STATUS_CALLBACK
    assert thread.id in note["Body"] and CUSTOMER in note["Body"] and "talk to a person" in note["Body"]
    stored = session.exec(select(SmsMessage).where(SmsMessage.direction == "outbound")).one()
    assert stored.conversation_id == thread.id

    state = client.get(
        f"{TEXTING}/handoff_state", query_string={"id": thread.id}, headers={"x-api-key": TEXTING_KEY}
    ).get_json()
    assert state["state"] == "handoff_initiated"
    assert state["handoff"]["destination"] == "Agents"


def test_handoff_to_a_sip_destination_texts_nobody(client, session, twilio_api):
    response = text_in(client, "question about my invoice")
    assert same_twiml(response.data, reply("Let me connect you with someone from our team."))
    assert session.exec(select(Conversation)).one().destination == "Billing desk"
    assert sent(twilio_api) == []


def test_failed_context_note_still_answers_the_customer(client, session, twilio_api, caplog):
    twilio_api.add(
        responses.POST,
        f"https://api.twilio.com/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages.json",
        json={"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400},
        status=400,
    )
    response = text_in(client, "agent")
    assert same_twiml(response.data, reply("Connecting you with an agent; they will text you shortly."))
    assert "could not text Agents" in caplog.text


def test_texts_after_the_handoff_are_kept_and_not_answered(client, session, twilio_api):
    accept_messages(twilio_api)
    text_in(client, "agent")
    response = text_in(client, "hello? anyone?")
    assert same_twiml(response.data, reply())
    thread = session.exec(select(Conversation)).one()
    assert message_store.transcript(session, thread.id)[-1].text == "hello? anyone?"
    assert len(sent(twilio_api)) == 1


def test_closing_a_thread_makes_the_next_text_start_a_new_one(client, session, twilio_api):
    accept_messages(twilio_api)
    text_in(client, "agent")
    first = session.exec(select(Conversation)).one()
    closed = client.post(
        f"{TEXTING}/chat/close", json={"conversation_id": first.id}, headers={"x-api-key": TEXTING_KEY}
    )
    assert closed.status_code == 200
    response = text_in(client, "hello again")
    assert same_twiml(response.data, reply('Thanks for your message. To talk to a person, reply "agent".'))
    assert len(session.exec(select(Conversation)).all()) == 2


def test_an_api_handoff_of_an_sms_thread_texts_the_agent_the_same_note(client, session, twilio_api):
    """Found by an outside review: only keyword and assistant handoffs told the agent, so a
    thread handed off by a desktop's API call waited for an agent who never heard of it."""
    accept_messages(twilio_api)
    text_in(client, "my parcel never came")
    thread = session.exec(select(Conversation)).one()
    handed = client.post(
        f"{TEXTING}/conversations/{thread.id}/handoff",
        json={"destination": "Agents", "reason": "lost_parcel"},
        headers={"x-api-key": TEXTING_KEY},
    )
    assert handed.status_code == 202, handed.get_json()
    [note] = sent(twilio_api)
    assert (note["To"], note["From"]) == ("+14155550300", "+14155550399")
    assert thread.id in note["Body"] and "lost_parcel" in note["Body"] and "my parcel never came" in note["Body"]


def test_a_closed_sms_thread_cannot_be_handed_off_through_the_api(client, session, twilio_api):
    text_in(client, "hello")
    thread = session.exec(select(Conversation)).one()
    headers = {"x-api-key": TEXTING_KEY}
    assert client.post(f"{TEXTING}/chat/close", json={"conversation_id": thread.id}, headers=headers).status_code == 200
    handed = client.post(f"{TEXTING}/conversations/{thread.id}/handoff", json={}, headers=headers)
    assert handed.status_code == 409
    assert handed.get_json()["error"]["code"] == "conversation_closed"
    session.refresh(thread)
    assert thread.state is None


def test_sms_thread_with_an_assistant(client, session, twilio_api):
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": "Your order ships Monday."})
    response = text_in(client, "where is my order", to="+18885550499")
    assert same_twiml(response.data, reply("Your order ships Monday."))
    thread = session.exec(select(Conversation)).one()
    assert assistant_calls(twilio_api) == [{"conversation_id": thread.id, "message": "where is my order"}]


def test_assistant_handoff_over_sms_texts_the_destination_from_the_texted_number(client, session, twilio_api):
    accept_messages(twilio_api)
    twilio_api.add(
        responses.POST,
        ASSISTANT_URL,
        json={"response": "", "handoff": {"reason": "angry_customer", "data": {"order": "A-17"}, "topic": "complaint_escalation"}},
    )
    response = text_in(client, "this is unacceptable", to="+18885550499")
    assert same_twiml(response.data, reply("An agent will text you in a moment."))
    [note] = sent(twilio_api)
    assert (note["To"], note["From"]) == ("+14155550400", "+18885550499")
    assert "angry_customer" in note["Body"]
    thread = session.exec(select(Conversation)).one()
    assert (thread.reason, thread.topic, thread.data) == ("angry_customer", "complaint_escalation", {"order": "A-17"})


def test_assistant_failure_over_sms_apologises_and_keeps_the_thread(client, session, twilio_api):
    twilio_api.add(responses.POST, ASSISTANT_URL, status=500)
    response = text_in(client, "hello", to="+18885550499")
    assert same_twiml(response.data, reply("Sorry, we cannot answer right now. Please try again in a few minutes."))
    thread = session.exec(select(Conversation)).one()
    assert thread.state is None and thread.ended_at is None
    twilio_api.replace(responses.POST, ASSISTANT_URL, json={"response": "Back now."})
    assert same_twiml(text_in(client, "hello?", to="+18885550499").data, reply("Back now."))
    assert len(session.exec(select(Conversation)).all()) == 1



@pytest.mark.parametrize("answer", [{}, {"response": ""}, {"response": " \n"}])
def test_a_blank_assistant_answer_without_a_handoff_gets_the_apology_not_an_empty_message(client, twilio_api, answer):
    """Twilio refuses an empty <Message> body, so the customer got nothing."""
    twilio_api.add(responses.POST, ASSISTANT_URL, json=answer)
    response = text_in(client, "hello?", to="+18885550499")
    assert twiml_messages(response) == ["Sorry, we cannot answer right now. Please try again in a few minutes."]


def test_a_reply_over_twilios_1600_characters_goes_out_as_several_messages_in_order(client, twilio_api):
    """Twilio refuses a longer <Message> whole (error 21617): the customer got nothing."""
    answer = "Our opening hours are as follows.\n" + "Monday to Friday, nine to five. " * 100
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": answer})
    parts = twiml_messages(text_in(client, "when are you open", to="+18885550499"))
    assert len(parts) == 3 and all(0 < len(part) <= 1600 for part in parts)
    assert parts[0].startswith("Our opening hours are as follows.\nMonday")  # the line break kept
    assert " ".join(parts).split() == answer.split()  # cut between words, nothing lost


def test_a_reply_longer_than_four_messages_is_cut_to_four(client, twilio_api):
    """Each part is paid for: an assistant that answers 100 KB must not text sixty messages."""
    twilio_api.add(responses.POST, ASSISTANT_URL, json={"response": "word " * 20_000})
    parts = twiml_messages(text_in(client, "tell me everything", to="+18885550499"))
    assert len(parts) == 4 and all(0 < len(part) <= 1600 for part in parts)
    assert parts[-1].endswith("…")


# --- delivery status -------------------------------------------------------------------------

@pytest.fixture
def sent_sid(client, twilio_api):
    accept_messages(twilio_api)
    response = client.post(f"{TEXTING}/sms", json={"to": CUSTOMER, "body": "hi"}, headers={"x-api-key": TEXTING_KEY})
    return response.get_json()["sid"]


def message_view(client, sid):
    return client.get(f"{TEXTING}/messages/{sid}", headers={"x-api-key": TEXTING_KEY}).get_json()


def test_status_callbacks_are_recorded_and_answered_204(client, twilio_api, sent_sid):
    for status in ("sending", "sent", "delivered"):
        response = post_signed(client, "/sms/status", status_params(sent_sid, status))
        assert response.status_code == 204
    view = message_view(client, sent_sid)
    assert view["status"] == "delivered"
    assert [entry["status"] for entry in view["status_history"]] == ["sending", "sent", "delivered"]


def test_status_never_moves_backwards(client, twilio_api, sent_sid):
    post_signed(client, "/sms/status", status_params(sent_sid, "delivered"))
    post_signed(client, "/sms/status", status_params(sent_sid, "sent"))
    post_signed(client, "/sms/status", status_params(sent_sid, "queued"))
    view = message_view(client, sent_sid)
    assert view["status"] == "delivered"
    assert [entry["status"] for entry in view["status_history"]] == ["delivered", "sent", "queued"]


@pytest.mark.parametrize("code,words", [(30003, "unreachable"), (30034, "not registered for A2P 10DLC")])
def test_error_codes_are_recorded_and_explained(client, twilio_api, sent_sid, code, words):
    post_signed(client, "/sms/status", status_params(sent_sid, "sent"))
    post_signed(client, "/sms/status", status_params(sent_sid, "undelivered", error_code=code))
    view = message_view(client, sent_sid)
    assert (view["status"], view["error_code"]) == ("undelivered", code)
    assert words in view["error_explanation"]
    assert view["status_history"][-1] == {"status": "undelivered", "error_code": code, "at": view["status_history"][-1]["at"]}


def test_unknown_error_code_points_to_twilio_docs(client, twilio_api, sent_sid):
    post_signed(client, "/sms/status", status_params(sent_sid, "failed", error_code=30999))
    assert "twilio.com/docs/api/errors/30999" in message_view(client, sent_sid)["error_explanation"]


def test_callback_that_beats_the_send_answer_is_not_lost(client, session, twilio_api):
    """Twilio may call back before its REST answer reaches us: the stored row must not go backwards."""
    early_sid = "SM" + "e" * 32
    assert post_signed(client, "/sms/status", status_params(early_sid, "sent")).status_code == 204

    def create(_request):
        return 201, {}, f'{{"sid": "{early_sid}", "status": "queued", "to": "{CUSTOMER}", "body": "hi"}}'

    twilio_api.add_callback(
        responses.POST, f"https://api.twilio.com/2010-04-01/Accounts/{'AC' + '0' * 32}/Messages.json", callback=create
    )
    response = client.post(f"{TEXTING}/sms", json={"to": CUSTOMER, "body": "hi"}, headers={"x-api-key": TEXTING_KEY})
    assert response.get_json()["status"] == "sent"


def test_status_without_message_sid_is_204_and_changes_nothing(client, twilio_api, session):
    params = status_params("SM" + "1" * 32, "sent")
    del params["MessageSid"]
    assert post_signed(client, "/sms/status", params).status_code == 204  # SPEC §4: always 204
    assert session.exec(select(SmsStatusEvent)).all() == []


def test_other_project_cannot_read_the_thread_transcript(client, session, twilio_api):
    text_in(client, "hello")
    thread = session.exec(select(Conversation)).one()
    mine = client.get(f"{TEXTING}/conversations/{thread.id}/transcript", headers={"x-api-key": TEXTING_KEY})
    assert [item["role"] for item in mine.get_json()["items"]] == ["customer", "assistant"]
    theirs = client.get(
        f"/v1/ws-initech/PROJECT-bot/conversations/{thread.id}/transcript", headers={"x-api-key": BOT_KEY}
    )
    assert theirs.status_code == 404


# --- the database down -------------------------------------------------------------------------


def test_with_the_database_down_sms_webhooks_still_answer_twilio(make_app, tmp_path, caplog):
    """Twilio does not retry a failed SMS webhook: it gets TwiML and 204, and the log says what was lost."""
    app = make_app(database_url=f"sqlite:///{tmp_path / 'not-mounted' / 'gateway.db'}")
    client = app.test_client()

    inbound = post_signed(client, "/sms/inbound", inbound_params("STOP"))
    assert (inbound.status_code, inbound.mimetype) == (200, "text/xml")
    assert same_twiml(inbound.data, MessagingResponse())
    status = post_signed(client, "/sms/status", status_params("SM" + "4" * 32, "delivered"))
    assert status.status_code == 204
    assert "was not handled" in caplog.text and "was not recorded" in caplog.text


def test_characters_no_database_can_keep_are_dropped_from_a_text(client, session, twilio_api):
    text_in(client, "hel\x00lo\ufffe there")
    session.expire_all()
    assert [m.text for m in session.exec(select(ChatMessage)) if m.role == "customer"] == ["hello there"]


@pytest.mark.parametrize("twin", ["SmsSid", "SmsMessageSid"])
def test_an_sms_whose_sid_disagrees_with_its_twin_is_refused(client, session, twin):
    params = inbound_params("hello")
    params[twin] = "SM" + "e" * 32
    assert post_signed(client, "/sms/inbound", params).status_code == 403


@pytest.mark.parametrize("number", ["+14155550398", "+14155550397", "+14155550395"])  # unregistered, pending, not said
@pytest.mark.parametrize("body", ["HELP", "hello there", "agent"])
def test_no_reply_goes_out_from_a_number_that_fails_the_a2p_10dlc_check(client, session, twilio_api, number, body):
    """The TwiML reply is sent by Twilio from the texted number: the same check as any send.
    Found by an outside review: POST /sms refused these senders, their replies went out."""
    accept_messages(twilio_api)
    response = text_in(client, body, to=number)
    assert twiml_messages(response) == []
    assert any(m.from_number == CUSTOMER for m in session.exec(select(SmsMessage)).all())  # the text is kept
    assert sent(twilio_api) == []  # nor did the handoff note go out from it


def test_no_reply_from_a_messaging_service_whose_campaign_is_not_verified(client, twilio_api):
    campaigns(twilio_api, "IN_PROGRESS")
    assert twiml_messages(text_in(client, "hello", to="+14155550396")) == []


def test_a_reply_from_a_messaging_service_whose_campaign_is_verified(client, twilio_api):
    campaigns(twilio_api, "VERIFIED")
    assert twiml_messages(text_in(client, "HELP", to="+14155550396")) == ["Initech texting. Reply STOP to opt out."]


def twiml_messages(response) -> list[str]:
    return [message.text for message in twiml_root(response.data).iter("Message")]


def test_counts_twilio_never_sends_are_read_as_none_not_a_500(client, session, twilio_api):
    """Found by an outside review: '²' passes str.isdigit() and int() refuses it."""
    params = inbound_params("hello")
    params.update(NumMedia="\u00b2", MediaUrl0="https://api.twilio.com/media/ME1")
    assert post_signed(client, "/sms/inbound", params).status_code == 200
    (line,) = message_store.transcript(session, session.exec(select(Conversation)).one().id)[:1]
    assert line.text == "hello"
    status = post_signed(client, "/sms/status", {**status_params("SM" + "1" * 32, "failed"), "ErrorCode": "\u00b2"})
    assert status.status_code == 204


def test_a_full_length_text_with_ten_long_attachments_is_kept_whole_not_refused(client, session, twilio_api):
    """Found by an outside review: the attachment lines pushed Twilio's 1,600 characters past a
    chat message's 4,000, the turn was refused unstored, and the customer got the outage apology."""
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    params = inbound_params("x" * 1600)
    params["NumMedia"] = "10"
    for index in range(10):
        params[f"MediaUrl{index}"] = f"https://api.twilio.com/2010-04-01/Accounts/AC{'1' * 32}/Messages/MM{'2' * 32}/Media/ME{index:032d}"
        params[f"MediaContentType{index}"] = docx
    response = post_signed(client, "/sms/inbound", params)
    assert "cannot answer right now" not in response.get_data(as_text=True)
    (line,) = [m.text for m in message_store.transcript(session, session.exec(select(Conversation)).one().id) if m.role == "customer"]
    assert len(line) <= 4000 and line.startswith("x" * 1600 + "\n[media " + docx)
    assert line.endswith("\n[1 more attachment]") and line.count("[media ") == 9
