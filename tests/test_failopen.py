"""Fail-open routing: with the database down (PostgreSQL) or locked (SQLite), callers still get the
config's TwiML; the spool keeps what could not be stored and writes it once the database is back."""
from __future__ import annotations

import fcntl
import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from sqlmodel import Session, select
from twilio.twiml.voice_response import Dial, VoiceResponse

from gateway.storage import store
from gateway.voice import call_records, calls
from gateway.cli import main
from gateway.storage.models import Conversation, HandoffEvent
from gateway.voice.spool import RecordRejected, Spool
from gateway.voice.twiml import NO_AGENT_APOLOGY
from tests.forwarder import Forwarder
from tests.support import (
    ACCOUNT_SID,
    ASSISTANT_NUMBER,
    BASE_URL,
    add_assistant_number,
    call_params,
    post_signed,
    same_twiml,
    twiml_root,
)

SBC_NUMBER = "+14155550195"  # method bye: the call goes back to the customer's SBC
FRONT_DESK_NUMBER = "+14155550199"  # Front desk, then Billing, then the default (Front desk); max_attempts 3
CALL_A = "CA" + "a1" * 16  # placed while the database is up; its dial result comes while it is down
CALL_B = "CA" + "b2" * 16  # placed while the database is down
CALL_C = "CA" + "c3" * 16  # placed once it is back


def front_desk_twiml(conversation_id: str, attempt: int) -> VoiceResponse:
    expected = VoiceResponse()
    expected.say("Let me transfer you to someone who can help.")
    dial = Dial(action=f"{BASE_URL}/voice/dial-status?conversation_id={conversation_id}&attempt={attempt}", timeout=20)
    dial.number("+14155550100", url=f"{BASE_URL}/voice/whisper?conversation_id={conversation_id}")
    expected.append(dial)
    return expected


def billing_twiml(conversation_id: str, attempt: int) -> VoiceResponse:
    expected = VoiceResponse()
    dial = Dial(action=f"{BASE_URL}/voice/dial-status?conversation_id={conversation_id}&attempt={attempt}", timeout=25)
    dial.sip(
        "sip:billing@pbx.acme.test?X-Caller-ID=%2B14155551234&X-Reason=needs_human&X-Account="
        f"&X-Conversation-Id={conversation_id}"
    )
    expected.append(dial)
    return expected


def apology_twiml() -> VoiceResponse:
    expected = VoiceResponse()
    expected.say(NO_AGENT_APOLOGY)
    expected.hangup()
    return expected


def call(client, call_sid):
    response = post_signed(client, "/voice/call", call_params(call_sid=call_sid, to=FRONT_DESK_NUMBER))
    assert response.status_code == 200, response.text
    return response


def dial_result(client, call_sid, conversation_id, attempt, status):
    path = f"/voice/dial-status?conversation_id={conversation_id}&attempt={attempt}"
    params = call_params(call_sid=call_sid, to=FRONT_DESK_NUMBER, CallStatus="in-progress", DialCallStatus=status)
    response = post_signed(client, path, params)
    assert response.status_code == 200, response.text
    return response


def conversation_id_in(response) -> str:
    action = twiml_root(response.data).find("Dial").get("action")
    return parse_qs(urlsplit(action).query)["conversation_id"][0]


def rows(engine):
    """Everything a user could see, for comparing before and after a second replay."""
    with Session(engine) as session:
        conversations = [
            (c.id, c.call_sid, c.state, c.destination, c.attempts, c.reason)
            for c in session.exec(select(Conversation).order_by(Conversation.call_sid))
        ]
        events = [
            (e.conversation_id, e.state, e.destination, e.detail, e.dedupe_key)
            for e in session.exec(select(HandoffEvent).order_by(HandoffEvent.id))
        ]
    return conversations, events


def history(engine, conversation_id):
    with Session(engine) as session:
        return [(e.state, e.destination) for e in store.history(session, conversation_id)]


def run_outage(client, app, engine, *, down, up):
    """The same story on either backend: one call before, calls and results during, replay after."""
    spool = app.extensions["gateway"].spool
    with Session(engine) as session:
        call(client, CALL_A)
        conversation_a = store.conversation_by_call_sid(session, CALL_A).id

    down()
    response_b = call(client, CALL_B)
    conversation_b = conversation_id_in(response_b)
    assert uuid.UUID(conversation_b)
    assert same_twiml(response_b.data, front_desk_twiml(conversation_b, 1))
    assert same_twiml(dial_result(client, CALL_A, conversation_a, 1, "busy").data, billing_twiml(conversation_a, 2))
    assert same_twiml(dial_result(client, CALL_B, conversation_b, 1, "no-answer").data, billing_twiml(conversation_b, 2))
    assert same_twiml(dial_result(client, CALL_B, conversation_b, 2, "failed").data, front_desk_twiml(conversation_b, 3))
    assert same_twiml(dial_result(client, CALL_B, conversation_b, 3, "busy").data, apology_twiml())

    lines = spool.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["kind"], r["conversation_id"], r["call_sid"]) for r in records] == [
        ("call", conversation_b, CALL_B),
        ("dial_result", conversation_a, CALL_A),
        ("dial_result", conversation_b, CALL_B),
        ("dial_result", conversation_b, CALL_B),
        ("dial_result", conversation_b, CALL_B),
    ]
    assert (records[0]["destination"], records[0]["reason"], records[0]["project_key"]) == (
        "Front desk",
        "needs_human",
        "ws-acme/PROJECT-frontdesk",
    )
    assert [(r["attempt"], r["succeeded"], r["detail"], (r["next"] or {}).get("destination")) for r in records[1:]] == [
        (1, False, "DialCallStatus=busy", "Billing"),
        (1, False, "DialCallStatus=no-answer", "Billing"),
        (2, False, "DialCallStatus=failed", "Front desk"),
        (3, False, "DialCallStatus=busy", None),
    ]
    with Session(engine) as session:
        assert store.find_by_id(session, conversation_b) is None

    up()
    # The next webhook replays the spool first, then is handled normally.
    assert conversation_id_in(call(client, CALL_C))
    assert not spool.pending()
    assert history(engine, conversation_b) == [
        ("handoff_initiated", "Front desk"),
        ("handoff_failed", "Front desk"),
        ("handoff_initiated", "Billing"),
        ("handoff_failed", "Billing"),
        ("handoff_initiated", "Front desk"),
        ("handoff_failed", "Front desk"),
    ]
    assert history(engine, conversation_a) == [
        ("handoff_initiated", "Front desk"),
        ("handoff_failed", "Front desk"),
        ("handoff_initiated", "Billing"),
    ]
    with Session(engine) as session:
        stored_b = store.find_by_id(session, conversation_b)
        assert (stored_b.call_sid, stored_b.attempts, stored_b.state) == (CALL_B, 3, "handoff_failed")
        assert len(session.exec(select(Conversation)).all()) == 3

    # Replaying the same records again (a crash before the offset moved) changes nothing.
    before = rows(engine)
    for record in records:
        spool.append(record)
    assert call_records.replay(spool, engine) == len(records)
    assert rows(engine) == before
    assert not spool.pending()

    # Call A goes on normally from where the replay left it.
    done = dial_result(client, CALL_A, conversation_a, 2, "completed")
    assert [child.tag for child in twiml_root(done.data)] == ["Hangup"]


def test_calls_fail_open_while_postgresql_is_down_and_are_stored_once_it_is_back(database_url, make_app, make_settings):
    if not database_url.startswith("postgresql"):
        pytest.skip("stops PostgreSQL; SQLite's outage is the locked-file test")
    direct = make_url(make_settings().database_url)
    forwarder = Forwarder((direct.host or "127.0.0.1", direct.port or 5432))
    forwarder.start()
    engine = store.make_engine(direct.render_as_string(hide_password=False))  # for asserting, not through the forwarder
    try:
        app = make_app(database_url=direct.set(port=forwarder.port).render_as_string(hide_password=False))
        run_outage(app.test_client(), app, engine, down=forwarder.stop, up=forwarder.start)
    finally:
        forwarder.stop()
        engine.dispose()


def test_calls_fail_open_while_the_sqlite_file_is_locked_and_are_stored_once_it_is_free(database_url, make_app):
    if not database_url.startswith("sqlite"):
        pytest.skip("locks a SQLite file; PostgreSQL's outage is the stopped-server test")
    app = make_app(database_busy_timeout=0.05)
    engine = app.extensions["gateway"].engine
    locker = sqlite3.connect(make_url(database_url).database, isolation_level=None)

    def lock():
        locker.execute("BEGIN EXCLUSIVE")

    def unlock():
        locker.execute("ROLLBACK")

    try:
        run_outage(app.test_client(), app, engine, down=lock, up=unlock)
    finally:
        locker.close()


class Outage:
    """The database going away and coming back on either backend: PostgreSQL stopped behind a
    loopback forwarder, or the SQLite file held by another connection's BEGIN EXCLUSIVE."""

    def __init__(self, app, down, up) -> None:
        self.app, self.client, self._down, self._up = app, app.test_client(), down, up

    @contextmanager
    def down(self):
        self._down()
        try:
            yield
        finally:
            self._up()


@pytest.fixture
def outage(database_url, make_app, make_settings):
    """Build an app whose database a test can take down (after it has edited the config file)."""
    cleanups = []

    def build(**overrides) -> Outage:
        if database_url.startswith("sqlite"):
            locker = sqlite3.connect(make_url(database_url).database, isolation_level=None)
            cleanups.append(locker.close)
            app = make_app(database_busy_timeout=0.05, **overrides)
            return Outage(app, lambda: locker.execute("BEGIN EXCLUSIVE"), lambda: locker.execute("ROLLBACK"))
        direct = make_url(make_settings().database_url)
        forwarder = Forwarder((direct.host or "127.0.0.1", direct.port or 5432))
        forwarder.start()
        cleanups.append(forwarder.stop)
        app = make_app(database_url=direct.set(port=forwarder.port).render_as_string(hide_password=False), **overrides)
        return Outage(app, forwarder.stop, forwarder.start)

    yield build
    for cleanup in cleanups:
        cleanup()


def test_an_assistant_number_fails_open_to_its_stream_and_keeps_the_id(database_url, outage, config_path, session):
    add_assistant_number(config_path)
    scenario = outage()
    client = scenario.client
    with scenario.down():
        response = post_signed(client, "/voice/call", call_params(call_sid=CALL_B, to=ASSISTANT_NUMBER))

    assert response.status_code == 200
    stream = twiml_root(response.data).find("Connect/Stream")
    assert stream.get("url") == "wss://bot.acme.test/stream"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    conversation_id = parameters["conversation_id"]

    # The next webhook replays the spool first: the conversation exists under the id the assistant got.
    ended = post_signed(client, f"/voice/stream-ended?conversation_id={conversation_id}", call_params(call_sid=CALL_B, to=ASSISTANT_NUMBER))
    assert same_twiml(ended.data, front_desk_twiml(conversation_id, 1))
    session.expire_all()
    stored = store.conversation_by_call_sid(session, CALL_B)
    assert (stored.id, stored.state, stored.destination) == (conversation_id, "handoff_initiated", "Front desk")


def test_a_stream_that_ends_during_an_outage_still_reaches_the_default(database_url, outage, config_path, session):
    add_assistant_number(config_path)
    scenario = outage()
    client = scenario.client
    post_signed(client, "/voice/call", call_params(call_sid=CALL_A, to=ASSISTANT_NUMBER))
    conversation = store.conversation_by_call_sid(session, CALL_A)
    with scenario.down():
        ended = post_signed(
            client, f"/voice/stream-ended?conversation_id={conversation.id}", call_params(call_sid=CALL_A, to=ASSISTANT_NUMBER)
        )
    assert same_twiml(ended.data, front_desk_twiml(conversation.id, 1))

    post_signed(client, "/voice/call", call_params(call_sid=CALL_C, to=FRONT_DESK_NUMBER))  # replays the spool first
    session.expire_all()
    stored = store.find_by_id(session, conversation.id)
    assert (stored.state, stored.destination, stored.attempts) == ("handoff_initiated", "Front desk", 1)


def test_gateway_replay_spool_writes_what_an_outage_left(database_url, outage, make_settings, monkeypatch, session):
    scenario = outage()
    client = scenario.client
    with scenario.down():
        post_signed(client, "/voice/call", call_params(call_sid=CALL_B, to=FRONT_DESK_NUMBER))
        # A call handed back to the SBC, and its end: that completes a bye handoff.
        post_signed(client, "/voice/call", call_params(call_sid=CALL_C, to=SBC_NUMBER))
        ended = {"CallSid": CALL_C, "AccountSid": ACCOUNT_SID, "CallStatus": "completed", "CallDuration": "3"}
        assert post_signed(client, "/voice/status", ended).status_code == 204
    assert store.conversation_by_call_sid(session, CALL_B) is None

    settings = make_settings()
    monkeypatch.setenv("GATEWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEWAY_SPOOL_DIR", str(settings.spool_dir))
    monkeypatch.setenv("GATEWAY_CONFIG", str(settings.config_path))
    result = CliRunner().invoke(main, ["replay-spool"])
    assert result.exit_code == 0, result.output
    assert "replayed 3 record(s)" in result.output

    session.expire_all()
    stored = store.conversation_by_call_sid(session, CALL_B)
    assert (stored.state, stored.destination) == ("handoff_initiated", "Front desk")
    handed_back = store.conversation_by_call_sid(session, CALL_C)
    assert (handed_back.state, handed_back.destination) == ("handoff_completed", "SBC")
    assert "replayed 0 record(s)" in CliRunner().invoke(main, ["replay-spool"]).output


def test_a_status_callback_during_an_outage_is_kept_and_applied_once(database_url, outage, session):
    scenario = outage()
    client = scenario.client
    call(client, CALL_A)
    ended = {"CallSid": CALL_A, "AccountSid": call_params()["AccountSid"], "CallStatus": "completed", "CallDuration": "61"}
    with scenario.down():
        assert post_signed(client, "/voice/status", ended).status_code == 204

    call(client, CALL_C)  # the next webhook replays the spool first
    session.expire_all()
    stored = store.conversation_by_call_sid(session, CALL_A)
    assert (stored.call_status, stored.duration_seconds) == ("completed", 61)
    assert stored.ended_at is not None


def test_while_another_worker_replays_the_spool_webhooks_fail_open_rather_than_run_ahead(
    database_url, outage, session, monkeypatch
):
    """What the spool holds is not in the database yet: answering from it would miss the spooled call."""
    monkeypatch.setattr(calls, "REPLAY_WAIT_SECONDS", 0.05)
    scenario = outage()
    client = scenario.client
    spool = scenario.app.extensions["gateway"].spool
    with scenario.down():
        response_b = call(client, CALL_B)  # spooled
    conversation_b = conversation_id_in(response_b)

    with open(spool.directory / "replay.lock", "a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        during = dial_result(client, CALL_B, conversation_b, 1, "busy")
        assert same_twiml(during.data, billing_twiml(conversation_b, 2))  # the config's chain, not an apology
        fcntl.flock(other_worker, fcntl.LOCK_UN)
    assert [record["kind"] for record in spool.records()] == ["call", "dial_result"]

    call(client, CALL_C)  # the lock is free: the replay runs first
    session.expire_all()
    stored_b = store.conversation_by_call_sid(session, CALL_B)
    assert (stored_b.id, stored_b.attempts, stored_b.destination) == (conversation_b, 2, "Billing")
    assert not spool.pending()


def test_while_another_worker_replays_the_spool_a_new_call_is_stored_at_once(database_url, outage, session, monkeypatch):
    """Nothing spooled changes how a new call is answered: it waits for no replay and never fails
    open for one (waiting made every call fail open while a replay ran under load)."""
    monkeypatch.setattr(calls, "REPLAY_WAIT_SECONDS", 5.0)
    scenario = outage()
    client = scenario.client
    spool = scenario.app.extensions["gateway"].spool
    with scenario.down():
        call(client, CALL_B)  # spooled

    with open(spool.directory / "replay.lock", "a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        started = time.monotonic()
        response_c = call(client, CALL_C)
        waited = time.monotonic() - started
        fcntl.flock(other_worker, fcntl.LOCK_UN)

    assert waited < 2.0  # not the 5 s replay wait
    assert same_twiml(response_c.data, front_desk_twiml(conversation_id_in(response_c), 1))
    stored_c = store.conversation_by_call_sid(session, CALL_C)
    assert stored_c is not None and stored_c.id == conversation_id_in(response_c)  # in the database, not spooled
    assert [record["call_sid"] for record in spool.records()] == [CALL_B]


def test_a_call_retried_while_another_worker_replays_is_one_conversation_after_the_replay(
    database_url, outage, session
):
    """Twilio retries a call whose answer (from the spool) it never got: the retry is stored at once,
    and the spooled call merges into it when the replay reaches it."""
    scenario = outage()
    client = scenario.client
    spool = scenario.app.extensions["gateway"].spool
    with scenario.down():
        spooled_b = conversation_id_in(call(client, CALL_B))

    with open(spool.directory / "replay.lock", "a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        retried_b = conversation_id_in(call(client, CALL_B))
        fcntl.flock(other_worker, fcntl.LOCK_UN)
    assert retried_b != spooled_b
    dial_result(client, CALL_B, retried_b, 1, "busy")  # on the answer Twilio got; the replay runs first

    session.expire_all()
    stored = session.exec(select(Conversation).where(Conversation.call_sid == CALL_B)).all()
    assert [conversation.id for conversation in stored] == [retried_b]
    assert (stored[0].attempts, stored[0].destination) == (2, "Billing")
    assert not spool.pending()


def test_a_replayed_retry_keeps_the_reason_the_handoff_started_with(database_url, outage, session):
    """As on the normal path: the config's reason, spooled without the database, fills in only a missing one."""
    scenario = outage()
    client = scenario.client
    call(client, CALL_A)
    conversation = store.conversation_by_call_sid(session, CALL_A)
    conversation.reason = "vip_refund"  # as an API handoff would have set it
    session.add(conversation)
    session.commit()

    with scenario.down():
        dial_result(client, CALL_A, conversation.id, 1, "busy")  # spooled, with the next attempt to Billing
    call(client, CALL_C)  # replays the spool first

    session.expire_all()
    stored = store.find_by_id(session, conversation.id)
    assert (stored.destination, stored.attempts, stored.reason) == ("Billing", 2, "vip_refund")


def test_the_gateway_starts_while_the_database_is_down_and_makes_its_tables_once_it_is_up(
    database_url, make_app, make_settings, tmp_path
):
    """A restart during an outage must not leave callers with Twilio's generic error."""
    if database_url.startswith("sqlite"):
        folder = tmp_path / "not-mounted-yet"  # SQLite cannot open a file in a missing folder
        app = make_app(database_url=f"sqlite:///{folder / 'gateway.db'}")
        engine_url = f"sqlite:///{folder / 'gateway.db'}"
        bring_up, cleanup = folder.mkdir, lambda: None
    else:
        direct = make_url(make_settings().database_url)
        forwarder = Forwarder((direct.host or "127.0.0.1", direct.port or 5432))
        forwarder.start()
        forwarder.stop()  # keeps its port: the database is "down" at that address
        app = make_app(database_url=direct.set(port=forwarder.port).render_as_string(hide_password=False))
        engine_url = direct.render_as_string(hide_password=False)
        bring_up, cleanup = forwarder.start, forwarder.stop
    client = app.test_client()
    try:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        during = call(client, CALL_B)
        assert same_twiml(during.data, front_desk_twiml(conversation_id_in(during), 1))

        bring_up()
        assert client.get("/readyz").status_code == 200
        call(client, CALL_C)
        engine = store.make_engine(engine_url)
        with Session(engine) as session:
            assert store.conversation_by_call_sid(session, CALL_C) is not None
            spooled = store.conversation_by_call_sid(session, CALL_B)
            assert spooled is not None and spooled.id == conversation_id_in(during)
        engine.dispose()
    finally:
        cleanup()


def test_a_record_torn_by_a_crash_mid_append_does_not_take_the_next_one_with_it(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append({"n": 1})
    with spool.path.open("ab") as handle:
        handle.write(b'{"n": 2, "to')  # the process died here
    spool.append({"n": 3})

    applied = []

    def apply(record: dict) -> None:
        if "n" not in record:
            raise RecordRejected("not a record")
        applied.append(record["n"])

    spool.replay(apply, stop_on=())
    assert applied == [1, 3]
    rejected = [json.loads(line) for line in (spool.directory / "rejected.jsonl").read_text().splitlines()]
    assert [record["line"] for record in rejected] == ['{"n": 2, "to\n']


def test_a_call_twilio_sends_twice_during_an_outage_is_one_conversation_after_replay(database_url, outage, session):
    """Each spooled answer gave the call its own id; the second is merged into the first, and a
    dial result Twilio posts for the id it used last lands on that one conversation."""
    scenario = outage()
    client = scenario.client
    with scenario.down():
        first = conversation_id_in(call(client, CALL_B))
        retried = call(client, CALL_B)  # Twilio's retry of the same webhook
        second = conversation_id_in(retried)
        assert first != second and same_twiml(retried.data, front_desk_twiml(second, 1))
        dial_result(client, CALL_B, second, 1, "busy")

    call(client, CALL_C)  # replays the spool first
    session.expire_all()
    stored = session.exec(select(Conversation).where(Conversation.call_sid == CALL_B)).all()
    assert [(c.id, c.attempts, c.destination) for c in stored] == [(first, 2, "Billing")]
    assert history(scenario.app.extensions["gateway"].engine, first) == [
        ("handoff_initiated", "Front desk"),
        ("handoff_failed", "Front desk"),
        ("handoff_initiated", "Billing"),
    ]
    assert not (scenario.app.extensions["gateway"].spool.directory / "rejected.jsonl").exists()


def test_a_dial_result_for_the_merged_id_arriving_after_the_outage_routes_on(database_url, outage, session):
    """As above, but the dial result comes once the database is back: its id was merged away
    by the replay, and the call is found by its CallSid, so the caller reaches the fallback
    rather than the apology."""
    scenario = outage()
    client = scenario.client
    with scenario.down():
        first = conversation_id_in(call(client, CALL_B))
        second = conversation_id_in(call(client, CALL_B))  # Twilio's retry: the answer it used
    answer = dial_result(client, CALL_B, second, 1, "busy")  # replays the spool, then settles

    assert same_twiml(answer.data, billing_twiml(first, 2))
    session.expire_all()
    stored = session.exec(select(Conversation).where(Conversation.call_sid == CALL_B)).all()
    assert [(c.id, c.attempts, c.destination) for c in stored] == [(first, 2, "Billing")]


def test_a_long_spool_is_replayed_a_budget_at_a_time_and_no_caller_waits_for_all_of_it(
    database_url, outage, session, monkeypatch
):
    """A long outage spools thousands of records, minutes of replay; a webhook replays for at
    most REPLAY_BUDGET_SECONDS (here none: one record each), then a new call is answered and
    stored, a callback fails open behind what is left, and the webhooks after them finish it.
    Found by an outside review: the first call after an outage replayed everything first."""
    scenario = outage()
    client = scenario.client
    gateway = scenario.app.extensions["gateway"]
    spooled = [f"CA{number:032x}" for number in range(4)]
    with scenario.down():
        for call_sid in spooled:
            call(client, call_sid)
    monkeypatch.setattr(calls, "REPLAY_BUDGET_SECONDS", 0.0)

    answer = call(client, CALL_C)  # replays one record, then takes its own call
    assert twiml_root(answer.data).find("Dial") is not None
    session.expire_all()
    assert {c.call_sid for c in session.exec(select(Conversation)).all()} == {spooled[0], CALL_C}
    assert gateway.spool.pending()

    ended = {"CallSid": CALL_C, "AccountSid": ACCOUNT_SID, "CallStatus": "completed", "CallDuration": "61"}
    assert post_signed(client, "/voice/status", ended).status_code == 204  # one more replayed; it fails open
    assert [record["kind"] for record in gateway.spool.records()][-1] == "status"

    monkeypatch.undo()
    call(client, CALL_A)  # the rest, within the usual budget
    session.expire_all()
    stored = session.exec(select(Conversation)).all()
    assert sorted(c.call_sid for c in stored) == sorted([*spooled, CALL_A, CALL_C])
    assert store.conversation_by_call_sid(session, CALL_C).call_status == "completed"
    assert not gateway.spool.pending()


def test_a_crash_while_the_spool_is_emptied_loses_nothing_spooled_after_it(tmp_path, monkeypatch):
    """The offset goes back to 0, durably, before the file is emptied: a crash between the two
    replays what was replayed (harmless), where the other order skipped what came next."""
    records = [{"n": number} for number in range(4)]
    spool = Spool(tmp_path / "spool")
    spool.append(records[0])
    spool.append(records[1])
    real_set_offset = Spool._set_offset

    def crash_at_the_reset(self, offset, **options):
        if offset == 0:
            raise SystemExit("the worker was killed here")
        real_set_offset(self, offset, **options)

    monkeypatch.setattr(Spool, "_set_offset", crash_at_the_reset)
    applied: list[dict] = []
    with pytest.raises(SystemExit):
        spool.replay(applied.append, stop_on=())
    monkeypatch.undo()

    restarted = Spool(tmp_path / "spool")
    restarted.append(records[2])
    restarted.append(records[3])
    replayed: list[dict] = []
    restarted.replay(replayed.append, stop_on=())
    assert replayed[-2:] == records[2:]
    assert not restarted.pending()


def test_an_offset_past_the_end_of_the_spool_replays_every_line(tmp_path):
    """What a crash left under the old order (file emptied, offset not reset): the lines there
    were all spooled after the emptying."""
    spool = Spool(tmp_path / "spool")
    spool.append({"n": 0})
    (spool.directory / "replayed.offset").write_text("4096")
    replayed: list[dict] = []
    spool.replay(replayed.append, stop_on=())
    assert replayed == [{"n": 0}]


def test_a_new_call_may_trust_an_empty_spool_for_a_moment_callbacks_never_do(tmp_path):
    """New calls need nothing from the spool, so they look at it once a tenth of a second, not
    once a call; a record this process spools counts at once, and callbacks always look."""
    ours, other_worker = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")
    assert not ours.pending(trust_empty_for=60)
    other_worker.append({"kind": "call"})
    assert not ours.pending(trust_empty_for=60)  # within the minute it trusts
    assert ours.pending()  # a callback's look
    assert ours.pending(trust_empty_for=60)  # found waiting: nothing is trusted until it is empty again

    fresh = Spool(tmp_path / "other")
    assert not fresh.pending(trust_empty_for=60)
    fresh.append({"kind": "call"})
    assert fresh.pending(trust_empty_for=60)  # its own record, at once
