"""The call decision core: what a voice event gets (TwiML) and what must be recorded of it.

Every voice event — a new call, a <Dial>/<Refer> result, the end of an assistant's stream, a
status callback — is decided here, once, from the config and a conversation's state. The
state comes from the database, or, while it is down, is assumed from the callback URL and
the config (`assume_*`). The answer is a `Decision`: the TwiML for Twilio and the records to
write. Where the records go (the database, or the spool until the database is back) is the
caller's choice; both sinks apply a record with the same rules (gateway/voice/call_records.py).

No Flask, no database here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from gateway.handoffs import handoff
from gateway.config.file import NumberRoute, ProjectConfig
from gateway.config.destinations import E164, Destination
from gateway.storage.models import new_id
from gateway.voice.routing import CallContext, plan_transfer
from gateway.infra.safe_text import whole_number, xml_legal
from gateway.voice.twiml import NO_AGENT_APOLOGY, Links, TwimlRenderer

log = logging.getLogger(__name__)

#: DialCallStatus values that mean the agent was reached.
DIAL_SUCCESS = {"completed", "answered"}
#: Call statuses after which nothing more happens on the call.
FINAL_CALL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
#: The reason recorded when an assistant's stream ends without handing off.
ASSISTANT_ENDED_REASON = "assistant_ended"
_CALL_STATUS_ORDER = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3}

#: Finds a project's destination by name: the config's, or also the stored ones (the catalog).
DestinationLookup = Callable[[str], Destination | None]


def called_number(to: str) -> str:
    """The number a call was made to: `To` itself, or the E.164 user part of a SIP URI.

    Calls that reach Twilio over a SIP Domain or trunk carry `To=sip:+14155550199@…`.
    """
    if to.lower().startswith(("sip:", "sips:")):
        user = to.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
        if E164.match(user):
            return user
    return to


#: Fields Twilio always sends to the voice webhook of an inbound call.
CALL_FIELDS = ("CallSid", "AccountSid", "From", "To")


@dataclass(frozen=True)
class InboundCall:
    """The fields of Twilio's voice webhook that the gateway keeps."""

    call_sid: str
    from_number: str | None
    to_number: str | None
    shared_id: str | None = None

    @classmethod
    def from_twilio(cls, form) -> InboundCall:
        """The call as we keep it: what a caller's SIP trunk put in From or a header is theirs to
        choose, so characters no database or TwiML can carry are dropped here."""
        return cls(
            call_sid=form.get("CallSid", ""),
            from_number=xml_legal(form.get("From", "")) or None,
            to_number=called_number(xml_legal(form.get("To", ""))),
            shared_id=xml_legal(form.get("SipHeader_X-Shared-Id", "")) or None,
        )


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


def dial_result_from_twilio(form, attempt: int) -> TransferResult:
    """Read a <Dial> or <Refer> action request; a REFER with no status or a non-2xx code failed."""
    caller_gone = form.get("CallStatus") in FINAL_CALL_STATUSES
    if "DialCallStatus" in form:
        status = form.get("DialCallStatus", "")
        parts = [f"DialCallStatus={status}"]
        if form.get("DialSipResponseCode"):
            parts.append(f"SIP {form['DialSipResponseCode']}")
        if whole_number(form.get("DialCallDuration", "")) is not None:  # the agent's talk time: the overview's time to answer
            parts.append(f"DialCallDuration={form['DialCallDuration']}")
        return TransferResult(attempt, status in DIAL_SUCCESS, " ".join(parts), caller_gone)
    status = form.get("ReferCallStatus")
    codes = [form.get("ReferSipResponseCode"), form.get("NotifySipResponseCode")]
    parts = [f"ReferCallStatus={status or 'absent'}"]
    parts += [f"SIP {code}" for code in codes if code]
    succeeded = status in ("in-progress", "completed") and all(
        code is None or code == "" or code.startswith("2") for code in codes
    )
    return TransferResult(attempt, succeeded, " ".join(parts), caller_gone)


@dataclass(frozen=True)
class CallState:
    """A voice conversation as a decision sees it: stored, or assumed while the database is down."""

    id: str
    project_key: str
    call_sid: str | None
    from_number: str | None
    to_number: str | None
    shared_id: str | None = None
    state: str | None = None
    topic: str | None = None
    destination: str | None = None
    reason: str | None = None
    utterance: str | None = None
    data: dict = field(default_factory=dict)
    attempts: int = 0
    call_status: str | None = None
    status_sequence: int | None = None
    duration_seconds: int | None = None
    ended_at: datetime | None = None

    @classmethod
    def of(cls, conversation) -> CallState:
        """The state of a stored conversation row."""
        return cls(**{name: getattr(conversation, name) for name in cls.__dataclass_fields__})

    def context(self) -> CallContext:
        """What `$variables` in SIP headers can name."""
        return CallContext(
            conversation_id=self.id,
            shared_id=self.shared_id,
            caller_id=self.from_number,
            called_number=self.to_number,
            call_sid=self.call_sid,
            reason=self.reason,
            topic=self.topic,
            data=self.data or {},
        )


# The records a decision asks to write. Each is applied the same way from the webhook and from
# the spool's replay, and applying one twice changes nothing (dedupe keys, the unique CallSid).


@dataclass(frozen=True)
class Attempt:
    """A handoff attempt to start: where to, why, and what the caller hears first."""

    destination: str
    reason: str | None
    utterance: str | None


@dataclass(frozen=True)
class CallOpened:
    """The call's conversation, stored unless its CallSid is; with attempt 1 unless it has a handoff."""

    call: CallState
    at: datetime
    first: Attempt | None = None


#: The detail of the record that starts the next attempt when the stream ends after a failed one.
STREAM_ENDED_DETAIL = "the assistant's stream ended after the handoff failed"


@dataclass(frozen=True)
class TransferSettled:
    """Attempt `attempt` ended; `following` starts the next one. Ignored if the call moved on.

    For an attempt that failed already (recorded so by an API handoff), only `following` is new.
    """

    call: CallState
    at: datetime
    attempt: int
    succeeded: bool
    detail: str
    following: Attempt | None = None


@dataclass(frozen=True)
class StatusReported:
    """A status callback, settled against the stored state when applied (`settle_status`)."""

    call_sid: str
    at: datetime
    status: CallStatus


Record = CallOpened | TransferSettled | StatusReported


@dataclass(frozen=True)
class Decision:
    twiml: str
    records: tuple[Record, ...] = ()


def answer_new_call(
    route: NumberRoute, call: InboundCall, flow: CallFlow, destinations: DestinationLookup, now: datetime
) -> Decision:
    """A call never seen: to its number's destination, or to its assistant first."""
    state = CallState(
        id=new_id(),
        project_key=route.project.key,
        call_sid=call.call_sid,
        from_number=call.from_number,
        to_number=call.to_number,
        shared_id=call.shared_id,
    )
    if route.number.assistant_url:
        return Decision(assistant_stream(state, route, flow), (CallOpened(state, now),))
    destination = destinations(route.number.destination or route.project.default_destination)
    first = Attempt(destination.name, destination.reason, destination.utterance)
    started = _started(state, first)
    return Decision(current_twiml(started, route.project, flow, destinations), (CallOpened(state, now, first),))


def answer_known_call(state: CallState, route: NumberRoute, flow: CallFlow, destinations: DestinationLookup) -> str:
    """A CallSid already stored (Twilio's retry, a racing twin): the TwiML of its state now."""
    if route.number.assistant_url and state.state is None:
        return assistant_stream(state, route, flow)
    return current_twiml(state, route.project, flow, destinations)


def assistant_stream(state: CallState, route: NumberRoute, flow: CallFlow) -> str:
    parameters = [
        ("conversation_id", state.id),
        ("caller", state.from_number or ""),
        ("called", state.to_number or ""),
    ]
    if state.shared_id:
        parameters.append(("shared_id", state.shared_id))
    return flow.renderer.connect_stream(route.number.assistant_url, parameters, flow.links.stream_ended(state.id))


def end_stream(
    state: CallState,
    route: NumberRoute | None,
    project: ProjectConfig,
    flow: CallFlow,
    destinations: DestinationLookup,
    now: datetime,
) -> Decision:
    """The assistant hung up its stream: without a handoff, the caller goes to the default; after
    a handoff that failed while the caller was still in the stream (an API handoff whose
    redirect Twilio refused), to the next destination, as a failed dial would."""
    if state.state == handoff.FAILED and state.ended_at is None:
        following = _following_attempt(state, route, project, destinations)
        if following is not None:
            record = TransferSettled(state, now, state.attempts, False, STREAM_ENDED_DETAIL, following)
            return Decision(current_twiml(_started(state, following), project, flow, destinations), (record,))
    if state.state is not None:
        return Decision(current_twiml(state, project, flow, destinations))
    default = destinations(project.default_destination)
    first = Attempt(default.name, default.reason or ASSISTANT_ENDED_REASON, default.utterance)
    started = _started(state, first)
    return Decision(current_twiml(started, project, flow, destinations), (CallOpened(state, now, first),))


def settle_transfer(
    state: CallState,
    route: NumberRoute | None,
    project: ProjectConfig,
    result: TransferResult,
    flow: CallFlow,
    destinations: DestinationLookup,
    now: datetime,
) -> Decision:
    """Complete or fail the attempt; a failure moves on to the next destination until max_attempts."""
    if result.attempt != state.attempts or state.state != handoff.INITIATED:
        log.info(
            "conversation %s: result for attempt %s ignored (now at attempt %s, %s)",
            state.id, result.attempt, state.attempts, state.state,
        )
        return Decision(current_twiml(state, project, flow, destinations))
    outcome = handoff.COMPLETED if result.succeeded else handoff.FAILED
    settled = replace(state, state=outcome)
    following = None
    # Once the caller has hung up (this request says so, or a status callback that came first
    # did), there is nobody to retry for.
    if not result.succeeded and not result.caller_gone and state.ended_at is None:
        following = _following_attempt(state, route, project, destinations)
    if following is not None:
        settled = _started(settled, following)
    record = TransferSettled(state, now, result.attempt, result.succeeded, result.detail, following)
    return Decision(current_twiml(settled, project, flow, destinations), (record,))


def next_destination(project: ProjectConfig, route: NumberRoute | None, attempts: int, current: str | None) -> str | None:
    """The destination of attempt `attempts + 1` after a failure, or None at max_attempts.

    The chain is the number's destination, its fallbacks, then the project's default (again
    for every later attempt).
    """
    if attempts >= project.max_attempts:
        return None
    chain = [current]
    if route is not None:
        chain = [route.number.destination or project.default_destination, *route.number.fallback]
    chain.append(project.default_destination)
    return chain[attempts] if attempts < len(chain) else project.default_destination


def _following_attempt(
    state: CallState, route: NumberRoute | None, project: ProjectConfig, destinations: DestinationLookup
) -> Attempt | None:
    name = next_destination(project, route, state.attempts, state.destination)
    if name is None:
        log.warning("conversation %s: %d attempts failed; apologising", state.id, state.attempts)
        return None
    destination = destinations(name)
    if destination is None:
        log.error("conversation %s: fallback %r does not exist; apologising", state.id, name)
        return None
    # A fallback keeps the reason the handoff started with.
    return Attempt(name, state.reason or destination.reason, destination.utterance)


def _started(state: CallState, attempt: Attempt) -> CallState:
    return replace(
        state,
        state=handoff.INITIATED,
        destination=attempt.destination,
        reason=attempt.reason,
        utterance=attempt.utterance,
        attempts=state.attempts + 1,
    )


def report_status(call_sid: str, status: CallStatus, now: datetime) -> Decision:
    """A status callback changes no TwiML; whether it is news is settled against the stored state."""
    return Decision("", (StatusReported(call_sid, now, status),))


@dataclass(frozen=True)
class StatusSettlement:
    """The columns a status callback changes, and whether it completes a `bye` handoff."""

    changes: dict
    completes_handoff: bool


def settle_status(
    state: CallState, status: CallStatus, handed_back_with_bye: bool, now: datetime
) -> StatusSettlement | None:
    """Keep the newest status: late or repeated callbacks never move a call backwards (None).

    A `bye` has no action callback: Twilio hangs up, handing the call back to the SBC, and the
    call completing is the only word of it, so that completes a bye handoff.
    """
    if _is_older(state, status):
        return None
    changes: dict = {"call_status": status.status}
    if status.sequence is not None:
        changes["status_sequence"] = status.sequence
    if status.status in FINAL_CALL_STATUSES:
        changes["ended_at"] = state.ended_at or now
        if status.duration_seconds is not None:
            changes["duration_seconds"] = status.duration_seconds
    completes = status.status == "completed" and handed_back_with_bye and state.state == handoff.INITIATED
    return StatusSettlement(changes, completes)


def _is_older(state: CallState, status: CallStatus) -> bool:
    if state.call_status in FINAL_CALL_STATUSES and status.status not in FINAL_CALL_STATUSES:
        return True
    if status.sequence is not None and state.status_sequence is not None:
        return status.sequence <= state.status_sequence
    if state.call_status in FINAL_CALL_STATUSES:
        return state.duration_seconds is not None or status.duration_seconds is None
    current = _CALL_STATUS_ORDER.get(state.call_status or "", -1)
    return _CALL_STATUS_ORDER.get(status.status, 99) < current


def current_twiml(state: CallState, project: ProjectConfig, flow: CallFlow, destinations: DestinationLookup) -> str:
    """The TwiML the conversation's state calls for now: transfer, goodbye, or apology."""
    if state.state == handoff.COMPLETED:
        return flow.renderer.hangup()
    if state.state == handoff.FAILED:
        return flow.renderer.apology(NO_AGENT_APOLOGY)
    return transfer_twiml(state, project, flow, destinations)


def transfer_twiml(
    state: CallState,
    project: ProjectConfig,
    flow: CallFlow,
    destinations: DestinationLookup,
    *,
    destination_name: str | None = None,
) -> str:
    """The TwiML that carries the conversation to its current (or the named) destination."""
    name = destination_name or state.destination or project.default_destination
    destination = destinations(name)
    if destination is None:
        log.error("conversation %s: destination %r no longer exists; apologising", state.id, name)
        return flow.renderer.apology(NO_AGENT_APOLOGY)
    try:
        transfer = plan_transfer(destination, state.context(), sip_domain=project.sip_domain, utterance=state.utterance)
    except ValueError as problem:
        # A stored destination the current config can no longer dial (say, sip_domain removed).
        log.error("conversation %s: destination %r cannot be dialed now: %s", state.id, name, problem)
        if name == project.default_destination:
            return flow.renderer.apology(NO_AGENT_APOLOGY)
        return transfer_twiml(state, project, flow, destinations, destination_name=project.default_destination)
    return flow.renderer.transfer(transfer, flow.links, state.id, max(state.attempts, 1))


def whisper_text(state: CallState | None) -> str:
    """What the agent hears before the bridge: why this caller is coming."""
    if state is None or not state.reason:
        return "Incoming transferred call."
    reason = state.reason.replace("_", " ")
    topic = f" Topic: {state.topic.replace('_', ' ')}." if state.topic else ""
    return f"Incoming transferred call. Reason: {reason}.{topic}"


def assume_transfer_in_progress(route: NumberRoute, call: InboundCall, conversation_id: str, attempt: int) -> CallState:
    """Without the database: attempt `attempt` is ringing the chain's destination for it, and
    the handoff's reason is the one the number's first destination gave it."""
    project = route.project
    first = project.destination(route.number.destination or project.default_destination)
    return CallState(
        id=conversation_id,
        project_key=project.key,
        call_sid=call.call_sid,
        from_number=call.from_number,
        to_number=call.to_number,
        shared_id=call.shared_id,
        state=handoff.INITIATED,
        destination=next_destination(project, route, attempt - 1, None) if attempt > 1 else first.name,
        reason=first.reason if first else None,
        attempts=attempt,
    )


def assume_awaiting_handoff(route: NumberRoute, call: InboundCall, conversation_id: str) -> CallState:
    """Without the database: an assistant's call that has not been handed off yet."""
    return CallState(
        id=conversation_id,
        project_key=route.project.key,
        call_sid=call.call_sid,
        from_number=call.from_number,
        to_number=call.to_number,
        shared_id=call.shared_id,
    )
