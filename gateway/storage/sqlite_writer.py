"""SQLite under several gunicorn workers: new calls take turns writing, and checkpoints run aside.

SQLite has one writer at a time. When two workers' commits collide, the loser's busy handler
sleeps at least 1 ms before it looks again, and every ~1000 pages the committing request also
copies the WAL into the database with two fsyncs (the automatic checkpoint): both show in the
webhook's p99. So each commit group of new calls (gateway/storage/commit_group.py) takes a
`WriterTurn` first — a thread lock within the process and an `flock` across processes, which
hands over as soon as the holder is done, bounded by the calls' busy timeout — and the WAL is
checkpointed by a background thread of each process instead (`wal_autocheckpoint=0`); once the
WAL is long, that thread finishes the job inside a writer turn, so the WAL starts over even
under calls that never pause.

No Flask here; gateway/storage/store.py attaches both to a SQLite engine.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import closing

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from gateway.infra.file_locks import flock_within

log = logging.getLogger(__name__)

#: How often the background thread copies the WAL into the database file.
CHECKPOINT_INTERVAL_SECONDS = 0.5
#: A WAL longer than this many frames (16 MiB of 4 KiB pages) is caught up inside a writer turn.
WAL_RESTART_FRAMES = 4000

_turns: weakref.WeakKeyDictionary[Engine, WriterTurn] = weakref.WeakKeyDictionary()


class WriterTurn:
    """One writer at a time per database file, across the threads and processes that share it."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}-writer.lock"
        self._in_process = threading.Lock()
        self._file = None

    def acquire(self, timeout: float) -> None:
        """Wait for the turn, at most `timeout` (what is left of the busy timeout); then
        OperationalError, as SQLite's own wait."""
        started = time.monotonic()
        if not self._in_process.acquire(timeout=timeout):
            raise timed_out("writer turn", timeout)
        try:
            remaining = timeout - (time.monotonic() - started)
            if not flock_within(self._handle(), remaining, longest_pause=0.002):
                raise timed_out("writer turn", timeout)
        except BaseException:
            self._in_process.release()
            raise

    def release(self) -> None:
        try:
            if self._file is not None:  # None: `close` closed it meanwhile, which let go of the flock
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._in_process.release()

    def forget_parent(self) -> None:
        """In a forked child: a fresh in-process lock, and the parent's lock file let go of.

        Closing the inherited descriptor releases no flock the parent holds (the parent's own
        descriptor still does), but keeping it would keep that flock alive after the parent
        closed its own; the child opens a lock file of its own at its first turn.
        """
        self._in_process = threading.Lock()
        self.close()

    def close(self) -> None:
        """Close the lock file (the engine was disposed); the next turn opens it again."""
        if self._file is not None:
            self._closer()
            self._file = None

    def _handle(self):
        """The lock file, opened once per process (a forked worker lets its parent's go at the
        fork, in `forget_parent`, and opens its own)."""
        if self._file is None:
            try:
                self._file = open(self.path, "a")  # noqa: SIM115 - kept open between turns
            except OSError as error:
                raise OperationalError("open SQLite's writer lock", None, error) from error
            self._closer = weakref.finalize(self, self._file.close)
        return self._file


def _no_turn_held_in_a_new_process() -> None:
    """A forked worker starts holding no turn. A thread of the parent (its checkpointer, under
    `gunicorn --preload`) may hold one at the fork, and no thread of the child would ever let
    the copy go: every new call of that worker would wait out the busy timeout."""
    for turn in list(_turns.values()):
        turn.forget_parent()


os.register_at_fork(after_in_child=_no_turn_held_in_a_new_process)


def timed_out(waited_for: str, timeout: float) -> OperationalError:
    """What a wait bounded by the busy timeout raises when it runs out: the OperationalError a
    busy SQLite raises, so every caller fails open on it as on SQLite's own."""
    return OperationalError(
        f"wait for {waited_for}", None, TimeoutError(f"database is locked: no {waited_for} within {timeout} s")
    )


def attach(engine: Engine, database_path: str) -> None:
    """Give a SQLite engine its writer turn and a checkpoint thread per process that uses it."""
    turn = _turns[engine] = WriterTurn(database_path)
    checkpointer = _Checkpointer(engine, database_path)

    @event.listens_for(engine, "connect")
    def _checkpoint_aside(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()
        checkpointer.ensure_running()

    @event.listens_for(engine, "engine_disposed")
    def _stop(_engine):
        checkpointer.stop()
        turn.close()


def writer_turn(engine: Engine) -> WriterTurn | None:
    """The engine's writer turn; None for databases that serve many writers (PostgreSQL)."""
    return _turns.get(engine)


class _Checkpointer:
    """A daemon thread per process that copies the WAL into the database (PASSIVE: never blocks)."""

    def __init__(self, engine: Engine, database_path: str) -> None:
        self._engine = weakref.ref(engine)
        self._path = database_path
        self._pid: int | None = None
        self._stopped = threading.Event()
        self._guard = threading.Lock()

    def ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._guard:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stopped = threading.Event()
            threading.Thread(target=self._run, args=(self._stopped,), name="sqlite-checkpoint", daemon=True).start()

    def stop(self) -> None:
        """The engine was disposed; a connection made later starts the thread again."""
        self._stopped.set()
        self._pid = None

    def _catch_up(self, connection: sqlite3.Connection) -> None:
        """Start the WAL over: copy what is left of it with no new call writing meanwhile, and
        wait (within the connection's 0.1 s timeout) for other writers and readers to be done
        with it.

        SQLite writes the WAL from its start again only once every frame is in the database
        file and no reader still reads from the WAL, and under calls that never pause that moment
        never came: the WAL grew by every page written (220 MB in six seconds of load), on disk
        and in the page cache. A turn too busy to get within 50 ms is left to the next pass.
        New calls wait for the turn meanwhile: about 0.1 s and the copy at most, well inside
        the default busy timeout.
        """
        engine = self._engine()
        turn = writer_turn(engine) if engine is not None else None
        if turn is None:
            return
        try:
            turn.acquire(0.05)
        except OperationalError:
            return
        try:
            connection.execute("PRAGMA wal_checkpoint(RESTART)")
        finally:
            turn.release()

    def _run(self, stopped: threading.Event) -> None:
        # mode=rw: a database file deleted under us is never made anew here.
        uri = f"file:{self._path}?mode=rw"
        failing = False
        while not stopped.wait(CHECKPOINT_INTERVAL_SECONDS) and self._engine() is not None:
            try:
                with closing(sqlite3.connect(uri, uri=True, timeout=0.1)) as connection:
                    _busy, frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > WAL_RESTART_FRAMES and not stopped.is_set():
                        self._catch_up(connection)
                failing = False
            except Exception as error:  # whatever it is, this thread must live to try again
                if not failing:  # once per outage, not twice a second
                    log.warning("background WAL checkpoint of %s failed; trying again: %s", self._path, error)
                failing = True
