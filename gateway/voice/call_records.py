"""The two sinks for what a call decision records: the database, and the spool while it is down.

`DatabaseSink` applies a record to the tables; the spool's replay hands each spooled record to
the same `DatabaseSink`, so a record means the same whether it was written at once or an
outage later. Applying a record twice changes nothing: the CallSid is unique, and every
history entry carries the dedupe key it has on the normal path (`attempt:N`, `result:N`).

A spooled record is one JSON line (gateway/voice/spool.py keeps the file):
`call` (a CallOpened), `dial_result` (a TransferSettled) or `status` (a StatusReported).

No Flask here.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from gateway.handoffs import catalog, handoff
from gateway.storage import commit_group, store
from gateway.voice.callflow import (
    Attempt,
    CallOpened,
    CallState,
    CallStatus,
    Record,
    StatusReported,
    TransferSettled,
    settle_status,
)
from gateway.config.file import GatewayConfig
from gateway.storage.models import Conversation
from gateway.voice.spool import RecordRejected, Spool

log = logging.getLogger(__name__)

#: Any failure of the database makes a voice webhook fail open rather than answer 500.
DATABASE_ERRORS = (DBAPIError, PoolTimeoutError)


class ReplayBusy(Exception):
    """Another process is still writing the spool to the database: what it holds is not there yet."""


#: A voice webhook fails open on these: the database is down, or does not hold what was spooled yet.
FAIL_OPEN_ERRORS = (*DATABASE_ERRORS, ReplayBusy)
#: The failures that mean "unavailable, try again later" to the replay (others are permanent).
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)

RECORD_VERSION = 1


class DatabaseSink:
    """Stage records in the database; the caller commits. `config` tells a bye handoff from others.

    A new call, the path every call takes, needs no ORM session: its prepared INSERT runs
    in a commit group (gateway/storage/commit_group.py), committed with the new calls of the
    other threads. The session is made on first use, for everything else.
    """

    def __init__(self, engine: Engine, config: GatewayConfig | None) -> None:
        self.engine = engine
        self.config = config
        self._session: Session | None = None
        #: Rows the caller already read (locked) for its decision, so they are not read again.
        self.loaded: dict[str, Conversation] = {}

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.engine, expire_on_commit=False)
        return self._session

    def commit(self) -> None:
        if self._session is not None:
            self._session.commit()

    def rollback(self) -> None:
        if self._session is not None:
            self._session.rollback()

    def close(self) -> None:
        """Give the connection back to the pool; what was not committed is rolled back."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def __enter__(self) -> DatabaseSink:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _insert_new_call(self, row: dict) -> bool:
        """Store a new call's row (its first history entry comes with it); False if its CallSid is
        stored. Without a session, in a commit group: committed, with the calls that came
        meanwhile, before this returns."""
        if self._session is not None:
            connection = store.dbapi_connection(self._session)
            return store.add_new_calls(connection, self.engine.dialect, [row])[0]
        return commit_group.new_calls(self.engine).run(row)

    def apply(self, record: Record) -> bool:
        """True when the record took effect as decided; False when the stored state had moved on."""
        if isinstance(record, CallOpened):
            return self._open(record)
        if isinstance(record, TransferSettled):
            return self._settle(record)
        return self._report(record)

    def _open(self, record: CallOpened) -> bool:
        call, first = record.call, record.first
        row = {
            "id": call.id,
            "project_key": call.project_key,
            "channel": "voice",
            "call_sid": call.call_sid,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "shared_id": call.shared_id,
            "data": {},
            "started_at": record.at,
            "updated_at": record.at,
            "attempts": 1 if first else 0,
            "state": handoff.INITIATED if first else None,
            "destination": first.destination if first else None,
            "reason": first.reason if first else None,
            "utterance": first.utterance if first else None,
        }
        if self._insert_new_call(row):
            if first:
                handoff.announce(call.id, handoff.INITIATED, first.destination)
            return True
        # The CallSid is stored: Twilio's retry, a racing twin, or an assistant's call whose stream ended.
        stored = self.loaded.get(call.id) or store.conversation_by_call_sid(self.session, call.call_sid, for_update=True)
        if stored.id != call.id:
            log.info("call %s is stored as conversation %s; %s merged into it", call.call_sid, stored.id, call.id)
        if first is None or stored.state is not None:
            return False
        return handoff.initiate(
            self.session,
            stored,
            destination=first.destination,
            reason=first.reason,
            utterance=first.utterance,
            dedupe_key="attempt:1",
            at=record.at,
        )

    def _settle(self, record: TransferSettled) -> bool:
        conversation = self.loaded.get(record.call.id) or store.conversation_for_update(self.session, record.call.id)
        if conversation is None and record.call.call_sid:
            # Twilio called back on an id spooled for a CallSid stored under another one: merged.
            conversation = store.conversation_by_call_sid(self.session, record.call.call_sid, for_update=True)
        if conversation is None:
            raise RecordRejected(f"no conversation {record.call.id} to record a dial result on")
        failed_already = conversation.state == handoff.FAILED and not record.succeeded and record.following is not None
        if conversation.attempts != record.attempt or not (conversation.state == handoff.INITIATED or failed_already):
            log.info("result for attempt %s of %s already recorded or stale", record.attempt, conversation.id)
            return False
        if failed_already:  # the stream ended after an API handoff failed: only the next attempt is new
            return self._start_following(conversation, record)
        outcome = handoff.COMPLETED if record.succeeded else handoff.FAILED
        recorded = handoff.transition(
            self.session, conversation, outcome, detail=record.detail, dedupe_key=f"result:{record.attempt}", at=record.at
        )
        if recorded and record.following:
            self._start_following(conversation, record)
        return recorded

    def _start_following(self, conversation: Conversation, record: TransferSettled) -> bool:
        return handoff.initiate(
            self.session,
            conversation,
            destination=record.following.destination,
            # The stored reason (one an API handoff gave included) wins over one assumed without the database.
            reason=conversation.reason or record.following.reason,
            utterance=record.following.utterance,
            dedupe_key=f"attempt:{record.attempt + 1}",
            at=record.at,
        )

    def _report(self, record: StatusReported) -> bool:
        conversation = store.conversation_by_call_sid(self.session, record.call_sid, for_update=True)
        if conversation is None:
            log.info("status callback for unknown call %s", record.call_sid)
            return False
        settlement = settle_status(
            CallState.of(conversation), record.status, self._handed_back_with_bye(conversation), record.at
        )
        if settlement is None:
            return False
        for column, value in settlement.changes.items():
            setattr(conversation, column, value)
        if settlement.completes_handoff:
            handoff.transition(
                self.session,
                conversation,
                handoff.COMPLETED,
                detail="CallStatus=completed",
                dedupe_key=f"result:{conversation.attempts}",
                at=record.at,
            )
        self.session.add(conversation)
        return True

    def _handed_back_with_bye(self, conversation: Conversation) -> bool:
        project = self.config.project_by_key(conversation.project_key) if self.config else None
        if project is None or conversation.state != handoff.INITIATED or not conversation.destination:
            return False
        entry = catalog.find(self.session, project, conversation.destination)
        return entry is not None and entry.destination.method == "bye"


class SpoolSink:
    """Append records to the spool, durably, for replay once the database is back."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def apply(self, record: Record) -> bool:
        line = as_spool_line(record)
        try:
            self.spool.append(line)
        except OSError:
            # Twilio still gets its answer; the record survives only in this log line.
            log.exception("could not write to the spool %s; lost record: %s", self.spool.path, line)
        return True


def as_spool_line(record: Record) -> dict:
    """A record as one JSON object of the spool file."""
    if isinstance(record, StatusReported):
        return {
            "v": RECORD_VERSION,
            "kind": "status",
            "at": record.at.isoformat(),
            "call_sid": record.call_sid,
            "status": record.status.status,
            "duration_seconds": record.status.duration_seconds,
            "sequence": record.status.sequence,
        }
    call = record.call
    line = {
        "v": RECORD_VERSION,
        "at": record.at.isoformat(),
        "conversation_id": call.id,
        "project_key": call.project_key,
        "call_sid": call.call_sid,
        "from": call.from_number,
        "to": call.to_number,
        "shared_id": call.shared_id,
    }
    if isinstance(record, CallOpened):
        first = record.first
        return {
            **line,
            "kind": "call",
            "destination": first.destination if first else None,
            "reason": first.reason if first else None,
            "utterance": first.utterance if first else None,
        }
    following = record.following
    return {
        **line,
        "kind": "dial_result",
        "attempt": record.attempt,
        "succeeded": record.succeeded,
        "detail": record.detail,
        "next": None if following is None else {
            "destination": following.destination,
            "reason": following.reason,
            "utterance": following.utterance,
        },
    }


def from_spool_line(line: dict) -> Record:
    """The record a spool line holds; RecordRejected for a line this version does not write."""
    if line.get("v") != RECORD_VERSION or line.get("kind") not in ("call", "dial_result", "status"):
        raise RecordRejected("not a spool record this gateway version writes")
    at = datetime.fromisoformat(line["at"])
    if line["kind"] == "status":
        return StatusReported(
            line["call_sid"], at, CallStatus(line["status"], line["duration_seconds"], line["sequence"])
        )
    call = CallState(
        id=line["conversation_id"],
        project_key=line["project_key"],
        call_sid=line["call_sid"],
        from_number=line["from"],
        to_number=line["to"],
        shared_id=line["shared_id"],
    )
    if line["kind"] == "call":
        first = Attempt(line["destination"], line["reason"], line["utterance"]) if line["destination"] else None
        return CallOpened(call, at, first)
    following = line["next"]
    return TransferSettled(
        call,
        at,
        line["attempt"],
        line["succeeded"],
        line["detail"],
        Attempt(following["destination"], following["reason"], following["utterance"]) if following else None,
    )


def replay(
    spool: Spool,
    engine: Engine,
    *,
    config: GatewayConfig | None = None,
    wait_seconds: float = 0.0,
    budget_seconds: float | None = None,
) -> int | None:
    """Write the spooled records to the database, each in its own transaction; None when another
    process is replaying. `config` lets a replayed call end complete a bye handoff; past
    `budget_seconds`, ReplayUnfinished (see Spool.replay)."""
    with DatabaseSink(engine, config) as sink:

        def apply(line: dict) -> None:
            try:
                sink.apply(from_spool_line(line))
                sink.commit()
            except Exception as error:
                sink.rollback()
                if isinstance(error, (*UNAVAILABLE, RecordRejected)):
                    raise
                # A record no retry will fix (a bug, a constraint) must not block those behind it.
                raise RecordRejected(f"{type(error).__name__}: {error}") from error

        return spool.replay(apply, stop_on=UNAVAILABLE, wait_seconds=wait_seconds, budget_seconds=budget_seconds)
