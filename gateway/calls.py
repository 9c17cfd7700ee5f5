"""What happens on a call: answering it, dial results, retries and fallbacks, the call's end.

Called by the voice blueprint with plain values; knows nothing of Flask or signatures. Every
answer is derived from the conversation's stored state, so a webhook Twilio sends twice (or
two racing twins) gets the same TwiML and records nothing twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session

from gateway import catalog, handoff, store
from gateway.config import NumberRoute, ProjectConfig
from gateway.destinations import E164
from gateway.models import Conversation, NewCall, utcnow
from gateway.routing import CallContext, plan_transfer
from gateway.twiml import NO_AGENT_APOLOGY, Links, TwimlRenderer

log = logging.getLogger(__name__)

#: DialCallStatus values that mean the agent was reached.
DIAL_SUCCESS = {"completed", "answered"}
#: Call statuses after which nothing more happens on the call.
FINAL_CALL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
#: The reason recorded when an assistant's stream ends without handing off.
ASSISTANT_ENDED_REASON = "assistant_ended"
_CALL_STATUS_ORDER = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}


def called_number(to: str) -> str:
    """The number a call was made to: `To` itself, or the E.164 user part of a SIP URI.

    Calls that reach Twilio over a SIP Domain or trunk carry `To=sip:+14155550199@…`.
    """
    if to.lower().startswith(("sip:", "sips:")):
        user = to.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
        if E164.match(user):
            return user
    return to


@dataclass(frozen=True)
class InboundCall:
    """The fields of Twilio's voice webhook that the gateway keeps."""

    call_sid: str
    from_number: str | None
    to_number: str | None
    shared_id: str | None = None


@dataclass(frozen=True)
class TransferResult:
    """What Twilio reported for one <Dial> or <Refer> attempt."""

    attempt: int
    succeeded: bool
    detail: str
    #: The action request says the caller's own call has ended (they hung up while it rang).
    caller_gone: bool = False


@dataclass(frozen=True)
class CallStatus:
    """One status callback; `sequence` orders callbacks that arrive out of order."""

    status: str
    duration_seconds: int | None = None
    sequence: int | None = None


@dataclass(frozen=True)
class CallFlow:
    """The per-app pieces every call step needs: how to render, and where Twilio calls back."""

    renderer: TwimlRenderer
    links: Links


def context_of(conversation: Conversation) -> CallContext:
    return CallContext(
        conversation_id=conversation.id,
        shared_id=conversation.shared_id,
        caller_id=conversation.from_number,
        called_number=conversation.to_number,
        call_sid=conversation.call_sid,
        reason=conversation.reason,
        topic=conversation.topic,
        data=conversation.data or {},
    )


def dial_result_from_twilio(form: dict, attempt: int) -> TransferResult:
    """Read a <Dial> or <Refer> action request; a REFER with no status or a non-2xx code failed."""
    caller_gone = form.get("CallStatus") in FINAL_CALL_STATUSES
    if "DialCallStatus" in form:
        status = form.get("DialCallStatus", "")
        parts = [f"DialCallStatus={status}"]
        if form.get("DialSipResponseCode"):
            parts.append(f"SIP {form['DialSipResponseCode']}")
        return TransferResult(attempt, status in DIAL_SUCCESS, " ".join(parts), caller_gone)
    status = form.get("ReferCallStatus")
    codes = [form.get("ReferSipResponseCode"), form.get("NotifySipResponseCode")]
    parts = [f"ReferCallStatus={status or 'absent'}"]
    parts += [f"SIP {code}" for code in codes if code]
    succeeded = status in ("in-progress", "completed") and all(
        code is None or code == "" or code.startswith("2") for code in codes
    )
    return TransferResult(attempt, succeeded, " ".join(parts), caller_gone)


def new_call(project: ProjectConfig, call: InboundCall, conversation_id: str | None = None) -> NewCall:
    """The conversation of a call that is not stored yet (`conversation_id`: one already given out)."""
    unsaved = NewCall(
        project_key=project.key,
        call_sid=call.call_sid,
        from_number=call.from_number,
        to_number=call.to_number,
        shared_id=call.shared_id,
    )
    if conversation_id is not None:
        unsaved.id = conversation_id
    return unsaved


def answer_call(session: Session, route: NumberRoute, call: InboundCall, flow: CallFlow) -> str:
    """A new call: to its number's destination, or to its assistant first.

    The conversation and its first attempt are committed together, so no conversation is ever
    stored without it; a repeated (or racing) webhook for the CallSid stores nothing and gets
    the TwiML of the stored conversation's state.
    """
    conversation: Conversation | NewCall = new_call(route.project, call)
    first_event = None
    if not route.number.assistant_url:
        destination = route.project.destination(route.number.destination)
        first_event = handoff.first_attempt(
            conversation,
            destination=destination.name,
            reason=destination.reason,
            utterance=destination.utterance,
            dedupe_key="attempt:1",
        )
    if store.add_new_call(session, conversation, first_event):
        session.commit()
        if first_event is not None:
            handoff.announce(conversation)
    else:
        session.rollback()
        conversation = store.conversation_by_call_sid(session, call.call_sid)
    if route.number.assistant_url and conversation.state is None:
        return assistant_stream(conversation, route, flow)
    return current_twiml(session, conversation, route.project, flow)


def assistant_stream(conversation: Conversation, route: NumberRoute, flow: CallFlow) -> str:
    parameters = [
        ("conversation_id", conversation.id),
        ("caller", conversation.from_number or ""),
        ("called", conversation.to_number or ""),
    ]
    if conversation.shared_id:
        parameters.append(("shared_id", conversation.shared_id))
    return flow.renderer.connect_stream(
        route.number.assistant_url, parameters, flow.links.stream_ended(conversation.id)
    )


def stream_ended(session: Session, conversation: Conversation, project: ProjectConfig, flow: CallFlow) -> str:
    """The assistant hung up its stream: without a handoff, the caller goes to the default."""
    conversation = _locked(session, conversation.id)
    if conversation.state is None:
        default = catalog.find(session, project, project.default_destination).destination
        handoff.initiate(
            session,
            conversation,
            destination=default.name,
            reason=default.reason or ASSISTANT_ENDED_REASON,
            utterance=default.utterance,
            detail="assistant stream ended without a handoff",
            dedupe_key="attempt:1",
        )
        session.commit()
    return current_twiml(session, conversation, project, flow)


def record_transfer_result(
    session: Session,
    conversation_id: str,
    route: NumberRoute | None,
    project: ProjectConfig,
    result: TransferResult,
    flow: CallFlow,
) -> str:
    """Complete or fail the attempt; a failure moves on to the next destination until max_attempts."""
    conversation = _locked(session, conversation_id)
    if result.attempt == conversation.attempts and conversation.state == handoff.INITIATED:
        outcome = handoff.COMPLETED if result.succeeded else handoff.FAILED
        recorded = handoff.transition(
            session, conversation, outcome, detail=result.detail, dedupe_key=f"result:{result.attempt}"
        )
        # Once the caller has hung up (this request says so, or a status callback that came
        # first did), there is nobody to retry for.
        caller_gone = result.caller_gone or conversation.ended_at is not None
        if recorded and not result.succeeded and not caller_gone:
            _try_next_destination(session, conversation, route, project)
        if recorded:
            session.commit()
        else:
            _reload(session, conversation)
    else:
        log.info(
            "conversation %s: result for attempt %s ignored (now at attempt %s, %s)",
            conversation.id,
            result.attempt,
            conversation.attempts,
            conversation.state,
        )
    return current_twiml(session, conversation, project, flow)


def next_destination(
    project: ProjectConfig, route: NumberRoute | None, attempts: int, current: str | None
) -> str | None:
    """The destination of attempt `attempts + 1` after a failure, or None at max_attempts.

    The chain is the number's destination, its fallbacks, then the project's default (again
    for every later attempt). Pure, so the fail-open path derives it without the database.
    """
    if attempts >= project.max_attempts:
        return None
    chain = [current]
    if route is not None:
        chain = [route.number.destination or project.default_destination, *route.number.fallback]
    chain.append(project.default_destination)
    return chain[attempts] if attempts < len(chain) else project.default_destination


def _try_next_destination(
    session: Session, conversation: Conversation, route: NumberRoute | None, project: ProjectConfig
) -> None:
    name = next_destination(project, route, conversation.attempts, conversation.destination)
    if name is None:
        log.warning("conversation %s: %d attempts failed; apologising", conversation.id, conversation.attempts)
        return
    entry = catalog.find(session, project, name)
    if entry is None:
        log.error("conversation %s: fallback %r does not exist; apologising", conversation.id, name)
        return
    handoff.initiate(
        session,
        conversation,
        destination=name,
        reason=conversation.reason or entry.destination.reason,
        utterance=entry.destination.utterance,
        dedupe_key=f"attempt:{conversation.attempts + 1}",
    )


def record_call_status(
    session: Session, conversation: Conversation, status: CallStatus, project: ProjectConfig | None
) -> None:
    """Keep the newest status: late or repeated callbacks never move a call backwards.

    A `bye` has no action callback: Twilio hangs up, handing the call back to the SBC, and the
    call completing is the only word of it, so that completes a bye handoff (`project`: where
    to look the destination's method up; None when the config is not at hand).
    """
    conversation = _locked(session, conversation.id)
    if _is_older(conversation, status):
        return
    conversation.call_status = status.status
    if status.sequence is not None:
        conversation.status_sequence = status.sequence
    if status.status in FINAL_CALL_STATUSES:
        conversation.ended_at = conversation.ended_at or utcnow()
        if status.duration_seconds is not None:
            conversation.duration_seconds = status.duration_seconds
    if status.status == "completed" and _handed_back_with_bye(session, conversation, project):
        handoff.transition(
            session,
            conversation,
            handoff.COMPLETED,
            detail="CallStatus=completed",
            dedupe_key=f"result:{conversation.attempts}",
        )
    session.add(conversation)
    session.commit()


def _handed_back_with_bye(session: Session, conversation: Conversation, project: ProjectConfig | None) -> bool:
    if project is None or conversation.state != handoff.INITIATED or not conversation.destination:
        return False
    entry = catalog.find(session, project, conversation.destination)
    return entry is not None and entry.destination.method == "bye"


def _is_older(conversation: Conversation, status: CallStatus) -> bool:
    if conversation.call_status in FINAL_CALL_STATUSES and status.status not in FINAL_CALL_STATUSES:
        return True
    if status.sequence is not None and conversation.status_sequence is not None:
        return status.sequence <= conversation.status_sequence
    if conversation.call_status in FINAL_CALL_STATUSES:
        return conversation.duration_seconds is not None or status.duration_seconds is None
    current = _CALL_STATUS_ORDER.get(conversation.call_status or "", -1)
    return _CALL_STATUS_ORDER.get(status.status, 99) < current


def current_twiml(session: Session, conversation: Conversation, project: ProjectConfig, flow: CallFlow) -> str:
    """The TwiML the conversation's state calls for now: transfer, goodbye, or apology."""
    if conversation.state == handoff.COMPLETED:
        return flow.renderer.hangup()
    if conversation.state == handoff.FAILED:
        return flow.renderer.apology(NO_AGENT_APOLOGY)
    return transfer_twiml(session, conversation, project, flow)


def transfer_twiml(
    session: Session,
    conversation: Conversation,
    project: ProjectConfig,
    flow: CallFlow,
    *,
    destination_name: str | None = None,
) -> str:
    """The TwiML that carries the conversation to its current (or the named) destination."""
    name = destination_name or conversation.destination or project.default_destination
    entry = catalog.find(session, project, name)
    if entry is None:
        log.error("conversation %s: destination %r no longer exists; apologising", conversation.id, name)
        return flow.renderer.apology(NO_AGENT_APOLOGY)
    try:
        transfer = plan_transfer(
            entry.destination,
            context_of(conversation),
            sip_domain=project.sip_domain,
            utterance=conversation.utterance,
        )
    except ValueError as problem:
        # A stored destination the current config can no longer dial (say, sip_domain removed).
        log.error("conversation %s: destination %r cannot be dialed now: %s", conversation.id, name, problem)
        if name == project.default_destination:
            return flow.renderer.apology(NO_AGENT_APOLOGY)
        return transfer_twiml(session, conversation, project, flow, destination_name=project.default_destination)
    return flow.renderer.transfer(transfer, flow.links, conversation.id, max(conversation.attempts, 1))


def whisper_text(conversation: Conversation | None) -> str:
    """What the agent hears before the bridge: why this caller is coming."""
    if conversation is None or not conversation.reason:
        return "Incoming transferred call."
    reason = conversation.reason.replace("_", " ")
    topic = f" Topic: {conversation.topic.replace('_', ' ')}." if conversation.topic else ""
    return f"Incoming transferred call. Reason: {reason}.{topic}"


def _locked(session: Session, conversation_id: str) -> Conversation:
    """Re-read the row, locked on PostgreSQL, so racing webhooks for one call take turns."""
    return store.conversation_for_update(session, conversation_id)


def _reload(session: Session, conversation: Conversation) -> None:
    session.rollback()
    session.refresh(conversation)
