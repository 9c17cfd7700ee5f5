"""The voice use cases: read the state, let gateway/voice/callflow.py decide, write what it recorded.

Each use case runs on one of two storages with the same face. `DatabaseCalls` reads the
stored conversation (locked, so racing webhooks take turns) and writes records to the
database; `SpooledCalls`, used while the database is down or behind, assumes the state from
the callback URL and the config and writes records to the spool for replay. The web layer
picks the storage; the decision is the same code either way.

No Flask here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from gateway.handoffs import catalog
from gateway.storage import store
from gateway.voice import callflow
from gateway.voice.call_records import FAIL_OPEN_ERRORS, DatabaseSink, ReplayBusy, SpoolSink, replay
from gateway.voice.callflow import CallFlow, CallState, Decision, DestinationLookup, InboundCall
from gateway.config.file import GatewayConfig, NumberRoute, ProjectConfig
from gateway.config.destinations import Destination
from gateway.storage.models import Conversation, utcnow
from gateway.voice.spool import ReplayUnfinished, Spool

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a webhook waits for another worker's spool replay before going on without it.
REPLAY_WAIT_SECONDS = 2.0
#: How long a new call trusts that the spool was empty (it needs nothing from it; see `take_call`).
NEW_CALL_SPOOL_CHECK_SECONDS = 0.1
#: How long a webhook's caller may wait while the webhook replays the spool: a long outage
#: spools thousands of records, minutes of work; the webhooks after it go on with the rest.
REPLAY_BUDGET_SECONDS = 1.0


class CallStorage(Protocol):
    config: GatewayConfig

    def destinations(self, project: ProjectConfig) -> DestinationLookup: ...

    def known_call(self, call_sid: str) -> CallState | None: ...

    def in_transfer(self, conversation_id: str, call: InboundCall, attempt: int | None) -> CallState | None: ...

    def awaiting_handoff(self, conversation_id: str, call: InboundCall) -> CallState | None: ...

    def write(self, decision: Decision) -> bool: ...

    def current(self, state: CallState) -> CallState: ...


class DatabaseCalls:
    """The stored state, and the database as the records' sink (committed per decision)."""

    def __init__(self, engine: Engine, config: GatewayConfig) -> None:
        self.config = config
        self.sink = DatabaseSink(engine, config)

    def __enter__(self) -> DatabaseCalls:
        return self

    def __exit__(self, *_exc) -> None:
        self.sink.close()

    def destinations(self, project: ProjectConfig) -> DestinationLookup:
        # Config destinations first: a new call to one of them needs no session at all.
        return destination_catalog(lambda: self.sink.session, project)

    def known_call(self, call_sid: str) -> CallState | None:
        conversation = store.conversation_by_call_sid(self.sink.session, call_sid)
        return CallState.of(conversation) if conversation else None

    def in_transfer(self, conversation_id: str, call: InboundCall, attempt: int | None) -> CallState | None:
        return self._locked(conversation_id, call.call_sid)

    def awaiting_handoff(self, conversation_id: str, call: InboundCall) -> CallState | None:
        return self._locked(conversation_id, call.call_sid)

    def current(self, state: CallState) -> CallState:
        return self._locked(state.id)

    def _locked(self, conversation_id: str, call_sid: str = "") -> CallState | None:
        """Read the row, locked on PostgreSQL, so racing webhooks for one call take turns.

        By its CallSid when no conversation has the callback's id: Twilio sent the call twice
        during an outage, used the second answer, and the replay merged that answer's
        conversation into the first one (the spool's records keep the CallSid, not which id won).
        """
        session = self.sink.session
        conversation = store.conversation_for_update(session, conversation_id) if conversation_id else None
        if conversation is None and call_sid:
            conversation = store.conversation_by_call_sid(session, call_sid, for_update=True)
        if conversation is None:
            return None
        self.sink.loaded[conversation.id] = conversation
        return CallState.of(conversation)

    def write(self, decision: Decision) -> bool:
        """Apply and commit the records; False (nothing kept) when the stored state moved on meanwhile."""
        applied = all([self.sink.apply(record) for record in decision.records])
        if applied:
            self.sink.commit()
        else:
            self.sink.rollback()
        return applied


class SpooledCalls:
    """The state the callback URL and config imply, and the spool as the records' sink."""

    def __init__(self, spool: Spool, config: GatewayConfig) -> None:
        self.config = config
        self.sink = SpoolSink(spool)

    def destinations(self, project: ProjectConfig) -> DestinationLookup:
        return project.destination

    def known_call(self, call_sid: str) -> CallState | None:
        return None

    def in_transfer(self, conversation_id: str, call: InboundCall, attempt: int | None) -> CallState | None:
        route = self.config.route_for(call.to_number or "")
        if route is None:
            return None
        return callflow.assume_transfer_in_progress(route, call, conversation_id, attempt or 1)

    def awaiting_handoff(self, conversation_id: str, call: InboundCall) -> CallState | None:
        route = self.config.route_for(call.to_number or "")
        return callflow.assume_awaiting_handoff(route, call, conversation_id) if route else None

    def write(self, decision: Decision) -> bool:
        for record in decision.records:
            self.sink.apply(record)
        return True

    def current(self, state: CallState) -> CallState:
        return state


class CallServices(Protocol):
    """What the use cases need of the running gateway (gateway/runtime.py's Gateway has it)."""

    engine: Engine
    config: GatewayConfig
    spool: Spool

    def ensure_schema(self) -> None: ...


def on_database_else_spool(gateway: CallServices, use_case: Callable[[CallStorage], T], *, after_any_replay: bool = True) -> T:
    """Run the use case on the database; while it is unavailable, behind the spool, or on a bug, on the spool.

    Whatever spooled before is written first, so this event sees the events before it. While
    another process replays, the use case waits for it (`REPLAY_WAIT_SECONDS`) and then fails
    open; without `after_any_replay` it goes on at once instead (see `take_call`).
    """
    try:
        gateway.ensure_schema()  # a flag once the schema is checked; raises while down or behind
        _replay_spool(gateway, after_any_replay)
        with DatabaseCalls(gateway.engine, gateway.config) as storage:
            return use_case(storage)
    except FAIL_OPEN_ERRORS as error:
        log.error("database unavailable or behind (%s: %s); failing open", type(error).__name__, error)
    except Exception:
        # A bug must not cost a caller the call: answer as the fail-open path does.
        log.exception("unexpected error on the database path; answering from the config")
    return use_case(SpooledCalls(gateway.spool, gateway.config))


def take_call(gateway: CallServices, route: NumberRoute, call: InboundCall, flow: CallFlow) -> str:
    """A new call, answered on the database, else on the spool.

    It does not wait for another process's replay: no spooled record can change how a new call
    is answered, and the one spooled record that concerns it (this CallSid, answered during the
    outage, now retried by Twilio) is merged into the conversation stored now when it is
    replayed. Waiting made every call fail open while a replay ran under load, which spooled
    more for the replay to catch up with.
    """
    return on_database_else_spool(gateway, lambda storage: answer_call(storage, route, call, flow), after_any_replay=False)


def _replay_spool(gateway: CallServices, after_any_replay: bool) -> None:
    """Replay what is spooled, for at most REPLAY_BUDGET_SECONDS. Without `after_any_replay`:
    only if no other process is replaying, never waiting for one, a spool found empty within
    NEW_CALL_SPOOL_CHECK_SECONDS is not looked at again, and what the budget leaves is left
    for the webhooks after it (a new call needs none of it)."""
    trust_empty_for = 0.0 if after_any_replay else NEW_CALL_SPOOL_CHECK_SECONDS
    if gateway.spool.pending(trust_empty_for=trust_empty_for):
        wait_seconds = REPLAY_WAIT_SECONDS if after_any_replay else 0.0
        try:
            replayed = replay(
                gateway.spool, gateway.engine, config=gateway.config,
                wait_seconds=wait_seconds, budget_seconds=REPLAY_BUDGET_SECONDS,
            )
        except ReplayUnfinished as unfinished:
            if after_any_replay:  # this callback's own call may be among what is left: after it, in the spool
                raise ReplayBusy(str(unfinished)) from unfinished
            return
        if replayed is None and after_any_replay:
            # Another worker's replay outlasted the wait: what it holds is not stored yet.
            raise ReplayBusy("another process is still replaying the spool")


def destination_catalog(session: Callable[[], Session], project: ProjectConfig) -> Callable[[str], Destination | None]:
    """Destinations by name: the config file's, then those made through the API or console.

    `session` is asked for only when the file has no destination of that name, so a new call
    to a configured destination opens no session at all.
    """

    def find(name: str) -> Destination | None:
        if (configured := project.destination(name)) is not None:
            return configured
        entry = catalog.find(session(), project, name)
        return entry.destination if entry else None

    return find


def answer_call(storage: CallStorage, route: NumberRoute, call: InboundCall, flow: CallFlow) -> str:
    """A new call: stored with its first attempt in one commit, or, if its CallSid is known
    (Twilio's retry, a racing twin), the TwiML of the stored conversation's state."""
    destinations = storage.destinations(route.project)
    decision = callflow.answer_new_call(route, call, flow, destinations, utcnow())
    if storage.write(decision):
        return decision.twiml
    return callflow.answer_known_call(storage.known_call(call.call_sid), route, flow, destinations)


def settle_transfer(
    storage: CallStorage, conversation_id: str, call: InboundCall, form: dict, attempt: int | None, flow: CallFlow
) -> str | None:
    """A <Dial>/<Refer> result: complete, or fail and try the next destination. None: unknown call."""
    state = storage.in_transfer(conversation_id, call, attempt)
    project = storage.config.project_by_key(state.project_key) if state else None
    if project is None:
        return None
    route = storage.config.route_for(state.to_number or "")
    result = callflow.dial_result_from_twilio(form, attempt or state.attempts)
    return _decided(storage, state, project, flow, lambda state, destinations: callflow.settle_transfer(
        state, route, project, result, flow, destinations, utcnow()
    ))


def end_stream(storage: CallStorage, conversation_id: str, call: InboundCall, flow: CallFlow) -> str | None:
    """The assistant's stream is over. None: unknown call."""
    state = storage.awaiting_handoff(conversation_id, call)
    project = storage.config.project_by_key(state.project_key) if state else None
    if project is None:
        return None
    route = storage.config.route_for(state.to_number or "")
    return _decided(storage, state, project, flow, lambda state, destinations: callflow.end_stream(
        state, route, project, flow, destinations, utcnow()
    ))


def _decided(
    storage: CallStorage,
    state: CallState,
    project: ProjectConfig,
    flow: CallFlow,
    decide: Callable[[CallState, DestinationLookup], Decision],
) -> str:
    destinations = storage.destinations(project)
    decision = decide(state, destinations)
    if storage.write(decision):
        return decision.twiml
    # A racing twin recorded first: answer what the conversation's state is now.
    return callflow.current_twiml(storage.current(state), project, flow, destinations)


def report_status(storage: CallStorage, call_sid: str, status: callflow.CallStatus) -> None:
    """Call status callbacks: how and when the call ended (never moving it backwards)."""
    storage.write(callflow.report_status(call_sid, status, utcnow()))


def transfer_twiml(session: Session, conversation: Conversation, project: ProjectConfig, flow: CallFlow) -> str:
    """The TwiML that carries a stored conversation to its current destination (an API handoff)."""
    return callflow.transfer_twiml(CallState.of(conversation), project, flow, destination_catalog(lambda: session, project))


def whisper_text(conversation: Conversation | None) -> str:
    return callflow.whisper_text(CallState.of(conversation) if conversation else None)

