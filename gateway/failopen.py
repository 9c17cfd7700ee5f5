"""Fail-open call routing: answer Twilio from the config alone while the database is down or locked.

A caller must never hear Twilio's generic error because our database is unavailable. The
voice blueprint calls these functions when the normal path raised a database error: they
render the TwiML the config gives for the number (the same the normal path gives for a new
call, or for the next attempt after a failed one), and write what they could not store to the
spool. `replay` later writes those records to the database exactly once: the conversation
keeps the id its caller's TwiML carried (X-Conversation-Id), the CallSid is unique, and every
history entry has the same dedupe key as on the normal path.

No Flask here.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from gateway import calls, handoff, store
from gateway.config import GatewayConfig, NumberRoute, ProjectConfig
from gateway.destinations import Destination
from gateway.models import NewCall, utcnow
from gateway.routing import plan_transfer
from gateway.spool import RecordRejected, Spool
from gateway.twiml import NO_AGENT_APOLOGY

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


def answer_call(spool: Spool, route: NumberRoute, call: calls.InboundCall, flow: calls.CallFlow) -> str:
    """A new call's TwiML from the config, under a conversation id made here and kept on replay."""
    conversation = calls.new_call(route.project, call)
    destination = None
    if route.number.assistant_url:
        twiml = calls.assistant_stream(conversation, route, flow)
    else:
        destination = route.project.destination(route.number.destination)
        twiml = _transfer(conversation, route.project, destination, destination.reason, attempt=1, flow=flow)
    _spool(
        spool,
        "call",
        conversation,
        destination=destination.name if destination else None,
        reason=destination.reason if destination else None,
        utterance=destination.utterance if destination else None,
    )
    return twiml


def record_transfer_result(
    spool: Spool,
    route: NumberRoute | None,
    conversation_id: str,
    call: calls.InboundCall,
    result: calls.TransferResult,
    flow: calls.CallFlow,
) -> str:
    """A dial result without the conversation: the next destination comes from the URL's attempt
    number and the number's chain in the config, as `calls.record_transfer_result` would pick it."""
    if route is None:
        log.error("dial result for conversation %s to %r while the database is down: number not configured; apologising", conversation_id, call.to_number)
        return flow.renderer.apology(NO_AGENT_APOLOGY)
    project = route.project
    conversation = calls.new_call(project, call, conversation_id)
    following = None
    if result.succeeded or result.caller_gone:
        twiml = flow.renderer.hangup()
    else:
        name = calls.next_destination(project, route, result.attempt, None)
        following = project.destination(name) if name else None
        if following is None:
            twiml = flow.renderer.apology(NO_AGENT_APOLOGY)
        else:
            # The normal path keeps the conversation's reason, which a plain call took from its first destination.
            first = project.destination(route.number.destination or project.default_destination)
            reason = (first.reason if first else None) or following.reason
            twiml = _transfer(conversation, project, following, reason, attempt=result.attempt + 1, flow=flow)
    _spool(
        spool,
        "dial_result",
        conversation,
        attempt=result.attempt,
        succeeded=result.succeeded,
        detail=result.detail,
        next=None if following is None else {
            "destination": following.name,
            "reason": conversation.reason,
            "utterance": following.utterance,
        },
    )
    return twiml


def stream_ended(
    spool: Spool, route: NumberRoute, conversation_id: str, call: calls.InboundCall, flow: calls.CallFlow
) -> str:
    """The assistant's stream ended while the database is down: the project's default, as
    `calls.stream_ended` gives a call the assistant did not hand off. Spooled as a call record,
    whose replay starts attempt 1 on the conversation unless it already has a handoff."""
    project = route.project
    conversation = calls.new_call(project, call, conversation_id)
    default = project.destination(project.default_destination)
    reason = default.reason or calls.ASSISTANT_ENDED_REASON
    twiml = _transfer(conversation, project, default, reason, attempt=1, flow=flow)
    _spool(spool, "call", conversation, destination=default.name, reason=reason, utterance=default.utterance)
    return twiml


def _transfer(
    conversation: NewCall,
    project: ProjectConfig,
    destination: Destination,
    reason: str | None,
    *,
    attempt: int,
    flow: calls.CallFlow,
) -> str:
    conversation.reason = reason
    transfer = plan_transfer(
        destination, calls.context_of(conversation), sip_domain=project.sip_domain, utterance=destination.utterance
    )
    return flow.renderer.transfer(transfer, flow.links, conversation.id, attempt)


def _spool(spool: Spool, kind: str, conversation: NewCall, **fields) -> None:
    record = {
        "v": RECORD_VERSION,
        "kind": kind,
        "at": utcnow().isoformat(),
        "conversation_id": conversation.id,
        "project_key": conversation.project_key,
        "call_sid": conversation.call_sid,
        "from": conversation.from_number,
        "to": conversation.to_number,
        "shared_id": conversation.shared_id,
        **fields,
    }
    _append(spool, record)


def _append(spool: Spool, record: dict) -> None:
    try:
        spool.append(record)
    except OSError:
        # Twilio still gets its answer; the record survives only in this log line.
        log.exception("could not write to the spool %s; lost record: %s", spool.path, record)


def replay(
    spool: Spool, engine: Engine, *, config: GatewayConfig | None = None, wait_seconds: float = 0.0
) -> int | None:
    """Write the spooled records to the database; None when another process is replaying.

    `config` lets a replayed call end complete a bye handoff, as the live status callback does.
    """
    with Session(engine, expire_on_commit=False) as session:

        def apply(record: dict) -> None:
            try:
                apply_record(session, record, config)
            except Exception as error:
                session.rollback()
                if isinstance(error, (*UNAVAILABLE, RecordRejected)):
                    raise
                # A record no retry will fix (a bug, a constraint) must not block those behind it.
                raise RecordRejected(f"{type(error).__name__}: {error}") from error

        return spool.replay(apply, stop_on=UNAVAILABLE, wait_seconds=wait_seconds)


def apply_record(session: Session, record: dict, config: GatewayConfig | None = None) -> None:
    """Store one spooled record and commit; applying it again changes nothing."""
    if record.get("v") != RECORD_VERSION or record.get("kind") not in ("call", "dial_result", "status"):
        raise RecordRejected("not a spool record this gateway version writes")
    at = datetime.fromisoformat(record["at"])
    if record["kind"] == "call":
        _apply_call(session, record, at)
    elif record["kind"] == "status":
        _apply_status(session, record, config)
    else:
        _apply_dial_result(session, record, at)
    session.commit()


def record_call_status(spool: Spool, call_sid: str, status: calls.CallStatus) -> None:
    """A status callback without the database: kept for replay (the call's end and duration)."""
    record = {
        "v": RECORD_VERSION,
        "kind": "status",
        "at": utcnow().isoformat(),
        "call_sid": call_sid,
        "status": status.status,
        "duration_seconds": status.duration_seconds,
        "sequence": status.sequence,
    }
    _append(spool, record)


def _apply_status(session: Session, record: dict, config: GatewayConfig | None) -> None:
    conversation = store.conversation_by_call_sid(session, record["call_sid"])
    if conversation is None:
        log.info("spooled status for unknown call %s; ignored as the normal path would", record["call_sid"])
        return
    status = calls.CallStatus(record["status"], record["duration_seconds"], record["sequence"])
    project = config.project_by_key(conversation.project_key) if config else None
    calls.record_call_status(session, conversation, status, project)


def _apply_call(session: Session, record: dict, at: datetime) -> None:
    conversation, created = store.insert_call(
        session,
        call_sid=record["call_sid"],
        project_key=record["project_key"],
        from_number=record["from"],
        to_number=record["to"],
        shared_id=record["shared_id"],
        conversation_id=record["conversation_id"],
        started_at=at,
    )
    if not created and conversation.id != record["conversation_id"]:
        log.warning(
            "spooled call %s was already stored as conversation %s; its spooled id %s is merged into it",
            record["call_sid"],
            conversation.id,
            record["conversation_id"],
        )
    if record["destination"] and conversation.state is None:
        handoff.initiate(
            session,
            conversation,
            destination=record["destination"],
            reason=record["reason"],
            utterance=record["utterance"],
            dedupe_key="attempt:1",
            at=at,
        )


def _apply_dial_result(session: Session, record: dict, at: datetime) -> None:
    conversation = store.conversation_for_update(session, record["conversation_id"])
    if conversation is None:
        raise RecordRejected(f"no conversation {record['conversation_id']} to record a dial result on")
    attempt = record["attempt"]
    if conversation.attempts != attempt or conversation.state != handoff.INITIATED:
        log.info("spooled result for attempt %s of %s already recorded or stale", attempt, conversation.id)
        return
    outcome = handoff.COMPLETED if record["succeeded"] else handoff.FAILED
    recorded = handoff.transition(
        session, conversation, outcome, detail=record["detail"], dedupe_key=f"result:{attempt}", at=at
    )
    following = record["next"]
    if recorded and following:
        handoff.initiate(
            session,
            conversation,
            destination=following["destination"],
            # As the normal path: the handoff keeps its reason (one an API handoff gave included);
            # the config's, spooled without the database, only fills in a missing one.
            reason=conversation.reason or following["reason"],
            utterance=following["utterance"],
            dedupe_key=f"attempt:{attempt + 1}",
            at=at,
        )
