"""No webhook waits on the database longer than the busy timeout: SQLite's new calls take turns
writing, PostgreSQL's row locks time out; and SQLite's WAL is checkpointed by a background
thread rather than by a request."""
from __future__ import annotations

import fcntl
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from gateway.storage import sqlite_writer
from gateway.storage.models import Conversation
from tests.support import call_params, post_signed, twiml_root


@pytest.fixture
def sqlite_url(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer; PostgreSQL serves many")
    return database_url


def test_a_call_waits_for_its_writer_turn_no_longer_than_the_busy_timeout_then_fails_open(sqlite_url, make_app):
    app = make_app(database_busy_timeout=0.2)
    client = app.test_client()
    with open(f"{make_url(sqlite_url).database}-writer.lock", "a") as other_process:
        fcntl.flock(other_process, fcntl.LOCK_EX)  # another worker holds the turn and does not let go
        started = time.monotonic()
        response = post_signed(client, "/voice/call", call_params(call_sid="CA" + "5" * 32))
        waited = time.monotonic() - started
        fcntl.flock(other_process, fcntl.LOCK_UN)
    assert response.status_code == 200
    assert twiml_root(response.data).find("Dial") is not None  # the config's destination, not an error
    assert waited < 2.0  # the 0.2 s bound, with room for a busy machine; never SQLite's 5 s default
    assert [record["kind"] for record in app.extensions["gateway"].spool.records()] == ["call"]


def test_racing_new_calls_in_threads_each_store_once(sqlite_url, make_app):
    app = make_app()
    calls = [call_params(call_sid=f"CA{i:032x}") for i in range(40)] * 2  # each CallSid twice

    def place(params):
        return post_signed(app.test_client(), "/voice/call", params).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(place, calls)) == {200}
    with Session(app.extensions["gateway"].engine) as session:
        assert len(session.exec(select(Conversation)).all()) == 40
    assert not app.extensions["gateway"].spool.pending()


def test_the_wal_reaches_the_database_file_without_a_request_checkpointing_it(sqlite_url, make_app):
    app = make_app()
    engine = app.extensions["gateway"].engine
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0  # no request pays for one
    database = make_url(sqlite_url).database
    client = app.test_client()
    before = os.path.getsize(database)  # the tables; the calls below go to the WAL first
    for i in range(200):
        assert post_signed(client, "/voice/call", call_params(call_sid=f"CA{i:032x}")).status_code == 200
    deadline = time.monotonic() + 10
    while os.path.getsize(database) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.path.getsize(database) > before, "no checkpoint copied the WAL into the database file"


def test_the_wal_starts_over_under_calls_that_never_pause(sqlite_url, make_app, monkeypatch):
    """SQLite starts the WAL over only once every frame is in the database file; a background
    pass alone never gets there while new frames keep landing, and the WAL grew by every page
    written. Scaled down here: checkpoints every 20 ms, caught up past 50 frames."""
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_INTERVAL_SECONDS", 0.02)
    monkeypatch.setattr(sqlite_writer, "WAL_RESTART_FRAMES", 50)
    app = make_app()
    wal = f"{make_url(sqlite_url).database}-wal"

    def place(first: int) -> None:
        client = app.test_client()
        for i in range(first, first + 400):
            assert post_signed(client, "/voice/call", call_params(call_sid=f"CA{i:032x}")).status_code == 200

    with ThreadPoolExecutor(max_workers=4) as pool:  # a writer always waiting: no pause to catch up in
        list(pool.map(place, range(0, 1600, 400)))
    with Session(app.extensions["gateway"].engine) as session:
        assert len(session.exec(select(Conversation)).all()) == 1600
    # Without the catch-up the WAL reached 24-36 MB; started over, it stayed under 2 MB.
    assert os.path.getsize(wal) < 8_000_000, f"the WAL grew to {os.path.getsize(wal):,} bytes"


@pytest.mark.parametrize("parent_lets_go", ["release", "close"])
def test_a_worker_forked_while_its_parent_holds_the_writer_turn_can_take_it(sqlite_url, make_app, parent_lets_go):
    """Under `gunicorn --preload` the master's checkpointer may hold the turn at the fork, then
    release it or close its lock file (the engine disposed); the worker's copy of the turn must
    not stay held by a thread it does not have, nor keep the parent's flock alive."""
    turn = sqlite_writer.writer_turn(make_app().extensions["gateway"].engine)
    turn.acquire(1.0)  # as the parent's checkpointer would, in another thread
    child = os.fork()
    if child == 0:
        try:
            turn.acquire(5.0)  # waits for the parent to let go, then has the turn
            turn.release()
            os._exit(0)
        except BaseException:
            os._exit(1)
    time.sleep(0.2)
    if parent_lets_go == "close":
        turn.close()
    turn.release()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked worker never got the writer turn"


def test_a_dial_result_waiting_on_a_locked_row_fails_open_within_the_busy_timeout(database_url, make_app, session):
    """Another transaction holds the conversation's row (PostgreSQL) or the file's write lock (SQLite)."""
    app = make_app(database_busy_timeout=1.0)
    client = app.test_client()
    call_sid = "CA" + "6" * 32
    answered = post_signed(client, "/voice/call", call_params(call_sid=call_sid))
    action = twiml_root(answered.data).find("Dial").get("action")
    conversation_id = action.split("conversation_id=")[1].split("&")[0]
    path = f"/voice/dial-status?conversation_id={conversation_id}&attempt=1"
    form = call_params(call_sid=call_sid, CallStatus="in-progress", DialCallStatus="busy")

    with app.extensions["gateway"].engine.connect() as other:
        if database_url.startswith("postgresql"):
            other.execute(text("SELECT id FROM conversations WHERE id = :id FOR UPDATE"), {"id": conversation_id})
        else:
            other.execute(text("BEGIN IMMEDIATE"))
        started = time.monotonic()
        response = post_signed(client, path, form)
        waited = time.monotonic() - started
        other.rollback()
    assert response.status_code == 200
    assert twiml_root(response.data).find("Dial") is not None  # the next destination, from the config
    assert waited < 4.0  # the 1 s bound with room for a busy machine, not an unbounded lock wait
    assert [record["kind"] for record in app.extensions["gateway"].spool.records()] == ["dial_result"]
