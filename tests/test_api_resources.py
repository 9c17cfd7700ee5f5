"""GET /conversations (filters, cursor paging), GET /conversations/{id}, /handoff_destinations CRUD."""
from __future__ import annotations

import base64
import json
from datetime import timedelta, timezone

import pytest

from gateway.storage import store
from gateway.storage.models import Conversation, utcnow
from tests.support import ACME, CONFIG_KEY, call_params, post_signed

BASE = "/v1/ws-acme/PROJECT-frontdesk"
KEY = {"x-api-key": CONFIG_KEY}


def get(client, path, **params):
    return client.get(BASE + path, query_string=params, headers=KEY)


@pytest.fixture
def five_conversations(session):
    """Five stored calls a minute apart; the newest is index 4."""
    start = utcnow() - timedelta(hours=1)
    rows = []
    for index in range(5):
        row = Conversation(
            project_key=ACME,
            channel="voice",
            call_sid=f"CA{index:032d}",
            from_number=f"+1415555000{index}",
            to_number="+14155550199" if index % 2 else "+14155550197",
            state="handoff_completed" if index < 2 else "handoff_initiated",
            topic="customer_refund" if index == 3 else None,
            started_at=start + timedelta(minutes=index),
        )
        session.add(row)
        rows.append(row)
    session.commit()
    return rows


def test_newest_first_with_a_cursor_through_every_page(client, five_conversations):
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = get(client, "/conversations", **params).get_json()
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [row.id for row in reversed(five_conversations)]


def test_rows_of_the_same_instant_are_each_paged_once(client, session):
    moment = utcnow() - timedelta(minutes=5)
    rows = [Conversation(project_key=ACME, channel="chat", started_at=moment) for _ in range(5)]
    session.add_all(rows)
    session.commit()
    seen, cursor = [], None
    while True:
        body = get(client, "/conversations", limit=2, **({"cursor": cursor} if cursor else {})).get_json()
        seen += [item["id"] for item in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert seen == sorted((row.id for row in rows), reverse=True)


def test_filters_narrow_the_list(client, five_conversations):
    def ids(**params):
        return {item["id"] for item in get(client, "/conversations", **params).get_json()["items"]}

    rows = five_conversations
    assert ids(state="handoff_completed") == {rows[0].id, rows[1].id}
    assert ids(topic="customer_refund") == {rows[3].id}
    assert ids(to="+14155550199") == {rows[1].id, rows[3].id}
    assert ids(**{"from": "+14155550002"}) == {rows[2].id}
    assert ids(call_sid=rows[4].call_sid) == {rows[4].id}
    since = store.as_utc(rows[3].started_at).isoformat().replace("+00:00", "Z")
    assert ids(since=since) == {rows[3].id, rows[4].id}
    assert ids(until=since) == {rows[0].id, rows[1].id, rows[2].id}
    # The same moment written with another offset finds the same rows (SQLite compares text).
    same_moment = store.as_utc(rows[3].started_at).astimezone(timezone(timedelta(hours=5))).isoformat()
    assert ids(since=same_moment) == {rows[3].id, rows[4].id}


@pytest.mark.parametrize(
    "query,expected",
    [
        ("from=+14155550002", [2]),  # typed into curl unencoded: the '+' arrives as a space
        ("from=%28415%29%20555-0002", [2]),  # (415) 555-0002
        ("from=14155550002", [2]),
        ("to=+14155550199", [3, 1]),
        ("to=%2B1%20415%20555%200199", [3, 1]),  # +1 415 555 0199
        ("to=415.555.0199", [3, 1]),
        ("from=%2B14155559999", []),  # a number nobody called from
    ],
)
def test_from_and_to_take_a_number_in_any_form_q_takes(client, five_conversations, query, expected):
    response = client.get(f"{BASE}/conversations?{query}", headers=KEY)
    assert [item["id"] for item in response.get_json()["items"]] == [five_conversations[i].id for i in expected]


def test_a_from_that_is_not_a_number_is_matched_as_written(client, session):
    twilio_client = Conversation(project_key=ACME, channel="voice", from_number="client:alice")
    session.add(twilio_client)
    session.commit()
    assert ids_of(client, **{"from": "client:alice"}) == {twilio_client.id}
    assert ids_of(client, **{"from": "client:bob"}) == set()


@pytest.mark.parametrize("name", ["state", "topic", "from", "to", "call_sid", "shared_id"])
@pytest.mark.parametrize("blank", ["", " "])
def test_a_blank_filter_is_no_filter_as_a_blank_q_is(client, five_conversations, name, blank):
    everything = ids_of(client)
    assert ids_of(client, q=blank) == everything == {row.id for row in five_conversations}
    assert ids_of(client, **{name: blank}) == everything


@pytest.fixture
def searchable(session, five_conversations):
    """Beside the five calls: a chat with a shared_id, an SMS thread, and another project's call."""
    rows = {
        "chat": Conversation(project_key=ACME, channel="chat", shared_id="CRM-4471"),
        "sms": Conversation(project_key=ACME, channel="sms", from_number="+14155551234", to_number="+14155550199"),
        "other": Conversation(project_key="ws-globex/PROJECT-support", channel="voice", call_sid="CA" + "f" * 32,
                              from_number="+14155551234", shared_id="CRM-4471"),
    }
    session.add_all(rows.values())
    session.commit()
    return {**rows, **{f"call{index}": row for index, row in enumerate(five_conversations)}}


def ids_of(client, **params):
    response = get(client, "/conversations", **params)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.get_json()["items"]}


def test_shared_id_filter_finds_this_projects_conversation(client, searchable):
    assert ids_of(client, shared_id="CRM-4471") == {searchable["chat"].id}
    assert ids_of(client, shared_id="CRM-0000") == set()


@pytest.mark.parametrize(
    "query,expected",
    [
        ("CRM-4471", {"chat"}),  # a shared_id
        ("CA" + "0" * 31 + "2", {"call2"}),  # a CallSid
        (" CA" + "0" * 31 + "2 ", {"call2"}),  # pasted with spaces around
        ("(415) 555-1234", {"sms"}),  # the caller, as a person writes it
        ("+1 415 555 1234", {"sms"}),
        ("415.555.1234", {"sms"}),
        ("14155551234", {"sms"}),
        ("+1 (415) 555-0199", {"call1", "call3", "sms"}),  # the project's own number: as the number called
        ("(415) 555-0003", {"call3"}),
        ("CA" + "f" * 32, set()),  # another project's call is never found
        ("nothing like it", set()),
    ],
)
def test_q_finds_a_conversation_by_whatever_the_operator_has(client, searchable, query, expected):
    assert ids_of(client, q=query) == {searchable[name].id for name in expected}


def test_q_finds_by_conversation_id_and_combines_with_other_filters(client, searchable):
    call = searchable["call3"]
    assert ids_of(client, q=call.id) == {call.id}
    assert ids_of(client, q="+14155550199", state="handoff_completed") == {searchable["call1"].id}


def test_an_item_has_the_documented_fields(client, five_conversations):
    item = get(client, "/conversations", limit=1).get_json()["items"][0]
    assert set(item) >= {"id", "shared_id", "channel", "call_sid", "from", "to", "state", "topic", "started_at"}


def forged_cursor(conversation_id: object) -> str:
    """A cursor in the shape the API gives out (base64url JSON [started_at, id]), naming any id."""
    text = json.dumps(["2026-01-01T00:00:00+00:00", conversation_id])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "params,code",
    [
        ({"limit": 0}, "invalid_parameter"),
        ({"limit": "²"}, "invalid_parameter"),  # a digit to str.isdigit, not to int()
        ({"limit": "٣"}, "invalid_parameter"),
        ({"since": "yesterday"}, "invalid_parameter"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "invalid_parameter"),  # before year 1 in UTC
        ({"cursor": "!!"}, "invalid_cursor"),
        # Forged cursors whose id no conversation could have: not a 500, nor a 503 "database down".
        ({"cursor": forged_cursor("\ud800")}, "invalid_cursor"),  # a lone surrogate: UTF-8 can't send it
        ({"cursor": forged_cursor("a\u0000b")}, "invalid_cursor"),  # NUL: PostgreSQL refuses the query
        ({"cursor": forged_cursor("a" * 37)}, "invalid_cursor"),
        ({"cursor": forged_cursor(7)}, "invalid_cursor"),
    ],
)
def test_bad_list_parameters_are_400(client, params, code):
    response = get(client, "/conversations", **params)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_one_conversation_with_its_handoff(client, session):
    post_signed(client, "/voice/call", call_params(call_sid="CA" + "9" * 32))
    conversation = store.conversation_by_call_sid(session, "CA" + "9" * 32)
    body = get(client, f"/conversations/{conversation.id}").get_json()
    assert body["id"] == conversation.id
    assert body["call_sid"] == "CA" + "9" * 32
    assert body["handoff"]["destination"] == "Front desk"
    assert [h["state"] for h in body["handoff"]["history"]] == ["handoff_initiated"]
    assert get(client, "/conversations/unknown").status_code == 404


NEW = {
    "name": "Escalations",
    "description": "Supervisors",
    "method": "invite",
    "route": "sip:escalate@pbx.acme.test",
    "sip_headers": {"X-Reason": "$reason", "X-Caller": "$caller_id"},
}


def test_create_read_update_delete_a_destination(client):
    created = client.post(f"{BASE}/handoff_destinations", json=NEW, headers=KEY)
    assert created.status_code == 201, created.text
    assert created.get_json()["source"] == "database"

    listed = get(client, "/handoff_destinations").get_json()["items"]
    assert [d["name"] for d in listed if d["source"] == "database"] == ["Escalations"]
    assert {d["name"] for d in listed if d["source"] == "config"} >= {"Front desk", "Billing"}

    patched = client.patch(f"{BASE}/handoff_destinations/Escalations", json={"timeout": 30}, headers=KEY)
    assert patched.status_code == 200
    assert get(client, "/handoff_destinations/Escalations").get_json()["timeout"] == 30

    assert client.delete(f"{BASE}/handoff_destinations/Escalations", headers=KEY).status_code == 204
    assert get(client, "/handoff_destinations/Escalations").status_code == 404


def test_a_stored_destination_can_receive_a_handoff(client, session):
    client.post(f"{BASE}/handoff_destinations", json=NEW, headers=KEY)
    conversation = Conversation(project_key=ACME, channel="chat")
    session.add(conversation)
    session.commit()
    response = client.post(
        f"{BASE}/conversations/{conversation.id}/handoff", json={"destination": "Escalations"}, headers=KEY
    )
    assert response.status_code == 202
    assert response.get_json()["handoff"]["destination"] == "Escalations"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"method": "transfer"}, "method"),
        ({"route": None}, "route"),
        ({"sip_headers": {"Reason": "x"}}, "sip_headers"),
        ({"route": "555-0100"}, "route"),
        ({"method": "bye"}, "route"),
        ({"timeout": 2}, "timeout"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_the_config_files_rules_apply(client, change, field):
    response = client.post(f"{BASE}/handoff_destinations", json={**NEW, **change}, headers=KEY)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_destination"
    assert error["message"].startswith(field)


def test_duplicates_and_config_destinations_are_409(client):
    assert client.post(f"{BASE}/handoff_destinations", json=NEW, headers=KEY).status_code == 201
    duplicate = client.post(f"{BASE}/handoff_destinations", json=NEW, headers=KEY)
    assert (duplicate.status_code, duplicate.get_json()["error"]["code"]) == (409, "duplicate_destination")
    clash = client.post(f"{BASE}/handoff_destinations", json={**NEW, "name": "Billing"}, headers=KEY)
    assert (clash.status_code, clash.get_json()["error"]["code"]) == (409, "duplicate_destination")

    for response in (
        client.patch(f"{BASE}/handoff_destinations/Billing", json={"timeout": 30}, headers=KEY),
        client.delete(f"{BASE}/handoff_destinations/Billing", headers=KEY),
    ):
        assert (response.status_code, response.get_json()["error"]["code"]) == (409, "managed_by_config")


def test_malformed_json_is_400(client):
    response = client.post(f"{BASE}/handoff_destinations", data="{", headers={**KEY, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "\\ud800", "route": "+14155550111"}',  # a lone surrogate: no UTF-8 can store it
        '{"name": "x", "sip_headers": ' + '{"a": ' * 40 + "1" + "}" * 41,  # deeper than any real use
        "[" * 100_000,  # deeper than the JSON parser itself goes
    ],
)
def test_json_that_cannot_be_stored_is_400_not_500(client, raw):
    response = client.post(f"{BASE}/handoff_destinations", data=raw, headers={**KEY, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert client.get(f"{BASE}/handoff_destinations", headers=KEY).get_json()["items"][-1]["name"] != "\ud800"


def test_the_search_filters_are_documented_with_the_list(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/v1/{account_id}/{project_id}/conversations"]["get"]
    documented = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert {"shared_id", "q"} <= set(documented)
    assert documented["q"]["in"] == "query" and "(415) 555-1234" in documented["q"]["description"]
