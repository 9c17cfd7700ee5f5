"""Handoff events (SPEC §5 Events) from the history, and the feed that lists them (GET /events)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from gateway.events import journal
from gateway.storage import store
from gateway.storage.models import EventDelivery, PublishedEvent
from tests.events_support import LIFECYCLE_TYPES, action_path, call_with_fallback, twilio_posts
from tests.support import CONFIG_KEY, call_params, post_signed

HEADERS = {"x-api-key": CONFIG_KEY}
CALL_SID = "CA" + "a1" * 16


def feed(client, **query):
    response = client.get("/v1/acme/frontdesk/events", query_string=query, headers=HEADERS)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_calls_life_is_five_events_each_carrying_the_handoff_state_of_its_moment(client, session):
    call_with_fallback(client, CALL_SID)

    page = feed(client)
    events = page["items"]
    assert [event["type"] for event in events] == LIFECYCLE_TYPES
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    assert {event["data"]["id"] for event in events} == {conversation.id}
    assert all(event["account_id"] == "ws-acme" and event["project_id"] == "PROJECT-frontdesk" for event in events)

    # Each event's data is handoff_state as it stood then: the screen-pop needs no second call.
    first, failed, retrying, completed, ended = (event["data"] for event in events)
    assert (first["state"], first["handoff"]["destination"], first["handoff"]["attempts"]) == ("handoff_initiated", "Front desk", 1)
    assert [entry["state"] for entry in first["handoff"]["history"]] == ["handoff_initiated"]
    assert first["handoff"]["reason"] == "needs_human"
    assert (failed["state"], len(failed["handoff"]["history"])) == ("handoff_failed", 2)
    assert failed["handoff"]["history"][-1]["detail"] == "DialCallStatus=busy"
    assert (retrying["state"], retrying["handoff"]["destination"], retrying["handoff"]["attempts"]) == ("handoff_initiated", "Billing", 2)
    assert (completed["state"], completed["handoff"]["destination"]) == ("handoff_completed", "Billing")
    assert events[0]["created_at"] == first["handoff"]["history"][0]["at"]

    # The last one is exactly what GET /handoff_state answers now.
    live = client.get(f"/v1/acme/frontdesk/handoff_state?id={conversation.id}", headers=HEADERS).get_json()
    assert ended == live
    assert completed["handoff"]["history"] == live["handoff"]["history"]


def test_event_ids_are_unique_and_the_same_on_every_read(client):
    call_with_fallback(client, CALL_SID)
    once, again = feed(client), feed(client)
    ids = [event["id"] for event in once["items"]]
    assert len(set(ids)) == len(ids) == 5
    assert once == again


def test_a_webhook_writes_no_event_row_the_history_is_the_source(client, session):
    """Point 2: the call path inserts its history as before and nothing more; events come later, off it."""
    assert post_signed(client, "/voice/call", call_params(call_sid=CALL_SID)).status_code == 200
    assert session.exec(select(PublishedEvent)).all() == []
    assert session.exec(select(EventDelivery)).all() == []

    assert [event["type"] for event in feed(client)["items"]] == ["handoff.initiated"]


def test_a_topic_and_a_chat_closed_by_its_handoff(client, session):
    chat = client.post("/v1/acme/frontdesk/chat/create", json={}, headers=HEADERS)
    assert chat.status_code in (200, 201), chat.get_json()
    conversation_id = chat.get_json()["conversation_id"]
    handed = client.post(
        f"/v1/acme/frontdesk/conversations/{conversation_id}/handoff",
        json={"destination": "Billing", "topic": "customer_refund", "data": {"order": "A-17"}},
        headers=HEADERS,
    )
    assert handed.status_code == 202, handed.get_json()

    events = feed(client)["items"]
    assert [event["type"] for event in events] == ["conversation.topic", "handoff.initiated", "conversation.ended"]
    topic = events[0]["data"]
    assert (topic["topic"], topic["state"], topic["data"]) == ("customer_refund", None, {"order": "A-17"})
    assert events[1]["data"]["topic"] == "customer_refund"
    assert events[2]["data"]["state"] == "handoff_initiated"


def test_the_cursor_pages_without_gaps_or_repeats_and_new_events_follow(client):
    call_with_fallback(client, CALL_SID)
    seen, cursor = [], None
    while True:
        page = feed(client, limit=2, **({"after": cursor} if cursor else {}))
        if not page["items"]:
            break
        seen += [event["id"] for event in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert feed(client, after=cursor) == {"items": [], "next_cursor": cursor}

    call_with_fallback(client, "CA" + "b2" * 16)
    later = feed(client, after=cursor)
    assert [event["type"] for event in later["items"]] == LIFECYCLE_TYPES
    assert not set(event["id"] for event in later["items"]) & set(seen)


def test_types_filters_with_globs(client):
    call_with_fallback(client, CALL_SID)
    assert [e["type"] for e in feed(client, types="handoff.*")["items"]] == LIFECYCLE_TYPES[:-1]
    only = feed(client, types="conversation.ended,handoff.failed")["items"]
    assert [e["type"] for e in only] == ["handoff.failed", "conversation.ended"]


@pytest.mark.parametrize(
    "query, code",
    [
        ({"after": "abc"}, "invalid_cursor"),
        ({"after": "-1"}, "invalid_cursor"),
        ({"limit": "0"}, "invalid_parameter"),
        ({"limit": "201"}, "invalid_parameter"),
        ({"types": "handoff.started"}, "invalid_parameter"),
    ],
)
def test_bad_feed_parameters_say_what_to_fix(client, query, code):
    response = client.get("/v1/acme/frontdesk/events", query_string=query, headers=HEADERS)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_the_feed_needs_the_projects_key_and_shows_only_its_events(client):
    call_with_fallback(client, CALL_SID)
    assert client.get("/v1/acme/frontdesk/events").status_code == 401
    other = post_signed(client, "/voice/call", call_params(call_sid="CA" + "c3" * 16, to="+14155550299"))
    assert other.status_code == 200
    assert {event["project_id"] for event in feed(client)["items"]} == {"PROJECT-frontdesk"}


def test_a_bye_completed_by_the_calls_end_lists_completed_before_ended(client):
    call_sid = "CA" + "d4" * 16
    assert post_signed(client, "/voice/call", call_params(call_sid=call_sid, to="+14155550195")).status_code == 200
    twilio_posts(client, "/voice/status", call_sid, CallStatus="completed", CallDuration="4", SequenceNumber="2")
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.initiated", "handoff.completed", "conversation.ended"]


@pytest.mark.parametrize("query", ["after=", "types=", "types=handoff.*,", "limit="])
def test_an_empty_parameter_is_refused_not_taken_as_absent(client, query):
    response = client.get(f"/v1/acme/frontdesk/events?{query}", headers=HEADERS)
    assert response.status_code == 400


def test_any_eighteen_digit_cursor_is_a_position_past_the_end(client):
    call_with_fallback(client, CALL_SID)
    assert feed(client, after="999999999999999999") == {"items": [], "next_cursor": "999999999999999999"}


def test_a_chat_closed_more_than_a_day_after_it_began_still_ends_with_its_event(client, session):
    """Found by an outside review: end events were looked for among conversations that started
    in the last day, so a long chat or SMS thread closed later never got one."""
    chat = client.post("/v1/acme/frontdesk/chat/create", json={"shared_id": "long-chat"}, headers=HEADERS).get_json()
    conversation = store.find_by_id(session, chat["conversation_id"])
    conversation.started_at -= timedelta(hours=25)
    session.add(conversation)
    session.commit()
    closed = client.post("/v1/acme/frontdesk/chat/close", json={"conversation_id": chat["conversation_id"]}, headers=HEADERS)
    assert closed.status_code == 200, closed.get_json()

    events = feed(client)["items"]
    assert [(event["type"], event["data"]["id"]) for event in events] == [("conversation.ended", chat["conversation_id"])]


def test_a_new_calls_first_entry_keeps_the_calls_context_written_by_the_insert_itself(client, session):
    """Migration 0006: the trigger that writes a new call's first history entry keeps its
    snapshot too, so the call path stays one statement."""
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, **{"SipHeader_X-Shared-Id": "crm-42"}))
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    (first,) = store.history(session, conversation.id)
    assert first.snapshot == {
        "shared_id": "crm-42", "data": {}, "reason": conversation.reason, "utterance": conversation.utterance,
    }
    assert conversation.reason == "needs_human"


def test_a_caller_gone_before_the_dial_result_still_ends_with_conversation_ended(client, session):
    """The caller hangs up while the agent's phone rings: Twilio sends the status callback and
    the <Dial> action about together, in either order. With the status first, the end waits
    for the transfer's outcome, so `conversation.ended` stays the conversation's last event and
    carries the final state."""
    first = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID))
    twilio_posts(client, "/voice/status", CALL_SID, CallStatus="completed", CallDuration="9", SequenceNumber="2")
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.initiated"]

    twilio_posts(client, action_path(first), CALL_SID, DialCallStatus="no-answer", CallStatus="completed")
    events = feed(client)["items"]
    assert [e["type"] for e in events] == ["handoff.initiated", "handoff.failed", "conversation.ended"]
    assert events[-1]["data"]["state"] == "handoff_failed"


def test_an_ended_call_whose_dial_result_never_comes_ends_after_twilios_wait(client, session):
    """No <Dial> action within Twilio's 15 s wait (and a margin): the end is published without it."""
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID))
    twilio_posts(client, "/voice/status", CALL_SID, CallStatus="completed", CallDuration="9", SequenceNumber="2")
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.initiated"]

    conversation = store.conversation_by_call_sid(session, CALL_SID)
    conversation.ended_at -= journal.TRANSFER_OUTCOME_WAIT + timedelta(seconds=1)
    session.add(conversation)
    session.commit()
    events = feed(client)["items"]
    assert [e["type"] for e in events] == ["handoff.initiated", "conversation.ended"]
    assert events[-1]["data"]["state"] == "handoff_initiated"


def test_a_new_journal_keeps_its_start_on_later_passes_so_older_history_never_follows_newer(client, session):
    """A new journal starts with the last day; the next pass's rescan window (the last 1,000
    history ids) had no such bound and published two-day-old history after newer events."""
    first = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID))
    second = twilio_posts(client, action_path(first), CALL_SID, DialCallStatus="busy")
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    for entry in store.history(session, conversation.id):  # the call began two days ago, before the journal
        entry.at -= timedelta(days=2)
        session.add(entry)
    session.commit()
    twilio_posts(client, action_path(second), CALL_SID, DialCallStatus="completed", DialCallSid="CA" + "e" * 32)

    assert [e["type"] for e in feed(client)["items"]] == ["handoff.completed"]
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.completed"]


def test_a_conversation_that_began_before_the_journal_still_ends_with_its_event(client, session):
    """Found by an outside review: history from before the journal's start is never published,
    and the end waited for all of a conversation's history, so it never came."""
    first = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID))
    second = twilio_posts(client, action_path(first), CALL_SID, DialCallStatus="busy")
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    for entry in store.history(session, conversation.id):  # from before the journal starts
        entry.at -= timedelta(days=2)
        session.add(entry)
    session.commit()
    twilio_posts(client, action_path(second), CALL_SID, DialCallStatus="completed", DialCallSid="CA" + "e" * 32)
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.completed"]

    twilio_posts(client, "/voice/status", CALL_SID, CallStatus="completed", CallDuration="60", SequenceNumber="3")
    assert [e["type"] for e in feed(client)["items"]] == ["handoff.completed", "conversation.ended"]
