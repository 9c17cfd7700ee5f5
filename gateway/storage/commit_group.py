"""New calls committed together: the calls that arrive while one commit runs share the next one.

Every call's rows must be committed before Twilio hears the answer, and a database takes one
commit at a time (SQLite one writer at all). One commit per call made the threads of a worker
queue on the writer turn and the commit, each hand-over costing a wake-up and a GIL switch,
with the CPU half idle (docs/performance.md). Here the first waiting thread leads: it takes
the writer turn, then every call queued by then, writes them in one transaction (one
multi-row INSERT), commits once, and wakes the others with their own outcome; the
calls that queued meanwhile go with the next leader. Under no load a group is one call, so
nothing waits that did not before.

Nothing is answered before its group is committed. A group that fails for want of the
database (locked, down) fails every call in it, and each fails open as alone; a group that
fails on one call's data is written again call by call, so one bad row costs no one else (so
is a group in which some CallSids, not all, were stored already: Twilio's retries, twins).
Every wait is bounded by the busy timeout, counted from when the call queued.

No Flask here.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gateway.infra import metrics
from gateway.storage import sqlite_writer, store

#: Stages a group's items on a connection inside its transaction; one result per item, in order.
Stager = Callable[[Engine, DBAPIConnection, list], list]

#: The database is unavailable (locked past the timeout, down): no call of the group would fare better alone.
_UNAVAILABLE = (OperationalError, InterfaceError)

_groups: weakref.WeakKeyDictionary[Engine, CommitGroup] = weakref.WeakKeyDictionary()
_groups_guard = threading.Lock()


class _Queued:
    """One call's write, waiting for the group that commits it."""

    __slots__ = ("item", "deadline", "asleep", "leads", "finished", "result", "error")

    def __init__(self, item, deadline: float) -> None:
        self.item = item
        self.deadline = deadline
        #: Held until the call is woken (to lead, or with its outcome): a bare lock, released
        #: once, wakes it for a fraction of what an Event's Python-level Condition costs.
        self.asleep = threading.Lock()
        self.asleep.acquire()
        self.leads = False
        self.finished = False
        self.result = None
        self.error: BaseException | None = None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class CommitGroup:
    """The writes of one process's threads to one database, committed in groups."""

    def __init__(self, engine: Engine, stage: Stager, timeout: float) -> None:
        self.engine = engine
        self.stage = stage
        self.timeout = timeout
        self._guard = threading.Lock()
        self._queue: list[_Queued] = []
        self._leading = False

    def run(self, item):
        """Stage `item` with the group's others and commit; its result once committed.

        A DBAPIError means the write did not happen (as an uncommitted transaction's would not).
        """
        queued = _Queued(item, time.monotonic() + self.timeout)
        with self._guard:
            self._queue.append(queued)
            if not self._leading:
                self._leading = queued.leads = True
        if not queued.leads:
            self._wait(queued)
        if queued.leads and not queued.finished:
            self._lead(queued)
        return queued.outcome()

    def _wait(self, queued: _Queued) -> None:
        if queued.asleep.acquire(timeout=max(0.0, queued.deadline - time.monotonic())):
            return
        with self._guard:
            if queued.leads:
                return
            if queued in self._queue:  # no leader took it in time: give up, as a busy SQLite would
                self._queue.remove(queued)
                queued.error = sqlite_writer.timed_out("commit", self.timeout)
                queued.finished = True
                return
        queued.asleep.acquire()  # a leader is writing it; its own waits are bounded by this call's deadline

    def _lead(self, leader: _Queued) -> None:
        """Take a connection, then the writer turn, then every call queued by then; commit them;
        pass the lead on.

        The connection comes first: the pool's checks at checkout make system calls, and each
        lets go of the GIL, which another thread may then hold for a while. Inside the turn,
        that while would stall every writer of every worker.
        """
        turn = sqlite_writer.writer_turn(self.engine)
        group: list[_Queued] = []
        try:
            connection = self._connection()
        except BaseException as error:  # the database is unavailable: every call queued fails open now
            with self._guard:
                group, self._queue = self._queue, []
            _fail(group, error)
            self._pass_lead(leader, group)
            if not isinstance(error, Exception):
                raise
            return
        try:
            if turn is not None:
                turn.acquire(max(0.0, leader.deadline - time.monotonic()))
        except BaseException as error:  # locked past this call's deadline; those behind may wait on
            connection.close()
            with self._guard:
                self._queue.remove(leader)
            _fail([leader], error)
            self._pass_lead(leader, [])
            if not isinstance(error, OperationalError):
                raise
            return
        try:
            with self._guard:
                group, self._queue = self._queue, []
            self._write(connection, group)
        finally:
            if turn is not None:
                turn.release()
            self._pass_lead(leader, group)

    def _pass_lead(self, leader: _Queued, group: list[_Queued]) -> None:
        """Wake the first call queued meanwhile to lead, and the group's others with their outcome."""
        with self._guard:
            if self._queue:
                following = self._queue[0]
                following.leads = True
                following.asleep.release()
            else:
                self._leading = False
        for queued in group:
            if queued is not leader:  # awake already (and perhaps woken once to lead)
                queued.asleep.release()

    def _write(self, connection, group: list[_Queued]) -> None:
        try:
            self._commit(connection, group)
        except _UNAVAILABLE as error:
            _fail(group, error)
        except (DBAPIError, store.SomeCallsKnown) as error:
            if len(group) == 1:
                _fail(group, error)
            else:  # one call's data, or which calls were new: write each alone, so the others are kept
                for index, queued in enumerate(group):
                    try:
                        self._commit(self._connection(), [queued])
                    except _UNAVAILABLE as error:  # gone meanwhile: the rest would only wait for it again
                        _fail(group[index:], error)
                        return
                    except Exception as alone:  # whatever it is, it is this call's alone
                        _fail([queued], alone)
                    except BaseException as error:
                        _fail(group[index:], error)
                        raise
        except BaseException as error:  # a bug in a call's work: it must not strand the others
            _fail(group, error)
            if not isinstance(error, Exception):
                raise

    def _connection(self):
        with store.dbapi_errors(self.engine.dialect):
            return self.engine.raw_connection()

    def _commit(self, connection, group: list[_Queued]) -> None:
        """One transaction for the group on `connection` (given back after); each call's outcome
        set once it is committed."""
        try:
            shortened = self._bound_statements(connection, min(queued.deadline for queued in group))
            results = self.stage(self.engine, connection, [queued.item for queued in group])
            with store.dbapi_errors(self.engine.dialect):
                connection.commit()
            if shortened and self.engine.dialect.name == "sqlite":  # SQLite's lasts past the commit; put it back
                self._set_lock_timeout(connection, self.timeout)
        except BaseException:
            connection.invalidate()  # whatever it staged goes with it
            raise
        connection.close()
        for queued, result in zip(group, results):
            queued.result, queued.finished = result, True
        metrics.calls_committed_together(len(group))

    def _bound_statements(self, connection, deadline: float) -> bool:
        """Make the group's statements give up by its oldest call's deadline; True if shortened.

        The database counts its own lock wait (SQLite's busy timeout, PostgreSQL's lock_timeout)
        from each statement's start: a call that queued behind a group stuck on a lock would
        otherwise wait that long again once it leads. Most groups lead within moments of
        queuing and keep the connection's setting, at no cost.
        """
        left = deadline - time.monotonic()
        if left >= self.timeout * 0.9:
            return False
        self._set_lock_timeout(connection, max(left, 0.001))
        return True

    def _set_lock_timeout(self, connection, seconds: float) -> None:
        """On PostgreSQL for this transaction only; on SQLite for the connection."""
        milliseconds = max(1, int(seconds * 1000))
        if self.engine.dialect.name == "postgresql":
            statement = f"SET LOCAL lock_timeout = {milliseconds}"
        else:
            statement = f"PRAGMA busy_timeout = {milliseconds}"
        with store.dbapi_errors(self.engine.dialect, statement):
            cursor = connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()


def _fail(group: list[_Queued], error: BaseException) -> None:
    if not isinstance(error, Exception):  # re-raised in the leader's own thread; the others fail open
        error = RuntimeError(f"the commit was interrupted ({type(error).__name__})")
    for queued in group:
        queued.error, queued.finished = error, True


def new_calls(engine: Engine) -> CommitGroup:
    """The engine's group for new calls, made on first use: items are conversation rows, results
    whether the call was new (gateway/storage/store.py's add_new_calls). Its waits are bounded by
    the engine's busy timeout."""
    group = _groups.get(engine)
    if group is None:
        with _groups_guard:
            group = _groups.get(engine)
            if group is None:
                group = _groups[engine] = CommitGroup(engine, _stage_new_calls, store.busy_timeout_of(engine))
    return group


def _stage_new_calls(engine: Engine, connection: DBAPIConnection, calls: list) -> list[bool]:
    return store.add_new_calls(connection, engine.dialect, calls)
