"""A database that misbehaves and recovers: a SQLite file made read-only for a while, deleted or
replaced under the running gateway, and a database that does not answer at all."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, select

from gateway.storage import schema
from gateway.storage.models import Conversation
from gateway.storage.store import make_engine
from tests.console_support import PASSWORD_HASH, sign_in
from tests.support import CONFIG_KEY, call_params, make_database_unreachable, post_signed

API = "/v1/acme/frontdesk"
KEY = {"x-api-key": CONFIG_KEY}


def sqlite_path(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite file's own troubles; PostgreSQL has no file to lose")
    return Path(database_url.removeprefix("sqlite:///"))


@contextmanager
def unwritable(path: Path):
    """The database file cannot be written: read-only mode, or immutable when we run as root."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make the file unwritable")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


def stored(path: Path, call_sid: str) -> bool:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with Session(engine) as session:
            return session.exec(select(Conversation).where(Conversation.call_sid == call_sid)).first() is not None
    finally:
        engine.dispose()


def new_destination(client, name: str):
    return client.post(f"{API}/handoff_destinations", json={"name": name, "method": "invite", "route": "+14155550123"}, headers=KEY)


def test_a_sqlite_file_made_read_only_for_a_while_works_again_once_writable(app, client, database_url):
    path = sqlite_path(database_url)
    with unwritable(path):
        assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "1" * 32)).status_code == 200  # fails open
        refused = new_destination(client, "During")
        assert refused.status_code == 503
        assert refused.get_json()["error"]["code"] == "database_unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503  # it opens, but it cannot be written
        assert "readonly" in ready.get_json()["reason"]

    deadline = time.monotonic() + 5
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "still not ready 5 s after the file became writable"
        time.sleep(0.2)
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "2" * 32)).status_code == 200
    assert stored(path, "CA" + "2" * 32)
    assert new_destination(client, "After").status_code == 201


def test_no_pooled_connection_stays_read_only_after_the_file_is_writable_again(app, client, database_url):
    """Connections opened while the file was unwritable are read-only for good; none may be reused."""
    path = sqlite_path(database_url)
    with unwritable(path):
        assert client.get(f"{API}/conversations", headers=KEY).status_code == 200  # reads work: a read-only connection
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "3" * 32)).status_code == 200
    assert new_destination(client, "After").status_code == 201
    assert stored(path, "CA" + "3" * 32)


def test_a_deleted_sqlite_file_makes_readyz_fail_and_is_not_silently_recreated(app, client, database_url, caplog):
    path = sqlite_path(database_url)
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "4" * 32)).status_code == 200
    caplog.set_level(logging.ERROR)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "is gone (deleted or moved while the gateway ran)" in ready.get_json()["reason"]
    assert "deleted or replaced while the gateway ran" in caplog.text
    # Callers are still routed (fail open), and nothing is written to the unlinked file or a new one.
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "5" * 32)).status_code == 200
    assert new_destination(client, "Lost").status_code == 503
    assert not path.exists()


def test_a_replaced_sqlite_file_is_the_one_read_and_written(app, client, database_url, tmp_path):
    path = sqlite_path(database_url)
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "6" * 32)).status_code == 200
    # A restore from backup: another database file moved into place.
    backup = tmp_path / "backup.db"
    engine = make_engine(f"sqlite:///{backup}")
    schema.upgrade(engine)
    with Session(engine) as session:
        session.add(Conversation(project_key="ws-acme/PROJECT-frontdesk", channel="voice", call_sid="CA" + "7" * 32))
        session.commit()
    engine.dispose()
    os.replace(backup, path)
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)

    listed = client.get(f"{API}/conversations", headers=KEY).get_json()["items"]
    assert [item["call_sid"] for item in listed] == ["CA" + "7" * 32]
    assert client.get("/readyz").status_code == 200
    assert post_signed(client, "/voice/call", call_params(call_sid="CA" + "8" * 32)).status_code == 200
    assert stored(path, "CA" + "8" * 32)


def test_the_api_answers_503_database_unavailable_when_the_database_is_unreachable(app, client, database_url, tmp_path):
    make_database_unreachable(app, database_url, tmp_path)
    for response in (
        client.get(f"{API}/conversations", headers=KEY),
        client.get(f"{API}/handoff_state", query_string={"id": "x"}, headers=KEY),
        new_destination(client, "Nowhere"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"


def test_the_console_shows_its_own_page_when_the_database_is_unreachable(make_app, database_url, tmp_path):
    app = make_app(console_password_hash=PASSWORD_HASH)
    client = app.test_client()
    assert sign_in(client).status_code == 302
    make_database_unreachable(app, database_url, tmp_path)
    for response in (client.get("/console/handoffs"), client.get("/console/conversations"), sign_in(client, "guess")):
        assert response.status_code == 503
        page = response.get_data(as_text=True)
        assert "Database unavailable" in page and "console.css" in page  # ours, not Werkzeug's


def test_opening_a_connection_never_drops_the_locks_of_those_already_open(tmp_path):
    """Another worker must never see our open connections vanish and delete the WAL under them.

    SQLite marks every open connection with a POSIX lock on the database file, and closing any
    descriptor of that file in the process drops all of them. Checking whether the file can be
    written by opening it did so each time the pool opened a connection: the other worker's
    next close then took the file for unused, folded the WAL in and deleted it while our
    connections still wrote to it ("database disk image is malformed" under load).
    """
    path = tmp_path / "gateway.db"
    engine = make_engine(f"sqlite:///{path}")
    first = engine.raw_connection()
    first.cursor().execute("CREATE TABLE calls (sid TEXT)")
    first.cursor().execute("INSERT INTO calls VALUES ('CA1')")
    first.commit()
    second = engine.raw_connection()  # opened while `first` is open: the pool's connect checks run
    # Another process writes and closes its last connection: it may fold the WAL in and delete
    # it only if it believes no other connection is open.
    other = f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute(\"INSERT INTO calls VALUES ('CA2')\"); c.commit(); c.close()"
    subprocess.run([sys.executable, "-c", other], check=True, timeout=30)
    try:
        assert Path(f"{path}-wal").exists(), "another process deleted the WAL while our connections were open"
        first.cursor().execute("INSERT INTO calls VALUES ('CA3')")
        first.commit()
        assert second.cursor().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [sid for (sid,) in second.cursor().execute("SELECT sid FROM calls ORDER BY sid")] == ["CA1", "CA2", "CA3"]
    finally:
        first.close()
        second.close()
        engine.dispose()
