"""A day of handoffs in figures, read from the stored history: nothing is counted on the call path.

A day is a UTC day, and a handoff belongs to the day its conversation started (the newest-first
index answers that range). Its outcome is the conversation's lifecycle state now: completed,
failed, or still in progress. It "failed over" when it took more than one attempt. Time to
answer runs from the handoff's first `handoff_initiated` to its `handoff_completed`, less the
agent's talk time when Twilio's `DialCallDuration` is in that step's detail; a `<Dial>`
completion without it only tells when the agent hung up, and a BYE (the SBC took the call
back) is never answered by us, so neither has an answer time.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import case, func
from sqlmodel import Session, select

from gateway.storage import store
from gateway.handoffs.handoff import COMPLETED, FAILED, INITIATED, LIFECYCLE_STATES
from gateway.storage.models import Conversation, HandoffEvent

OUTCOMES = (COMPLETED, FAILED, INITIATED)
_TALK_TIME = re.compile(r"\bDialCallDuration=(\d+)\b")


@dataclass
class DestinationFigures:
    name: str
    attempts: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class DayOverview:
    day: date
    handoffs: int
    by_outcome: dict[str, int]
    failed_over: int
    by_destination: list[DestinationFigures] = field(default_factory=list)
    #: seconds from a handoff's start to an agent answering, one per handoff where it is known
    answer_times: list[float] = field(default_factory=list)

    @property
    def failover_share(self) -> float | None:
        return self.failed_over / self.handoffs if self.handoffs else None

    @property
    def median_answer_seconds(self) -> float | None:
        return statistics.median(self.answer_times) if self.answer_times else None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """From the day's first instant to the next day's (the calendar's last day ends at its end)."""
    start = datetime.combine(day, time.min, tzinfo=timezone.utc)
    end = start + timedelta(days=1) if day < date.max else datetime.max.replace(tzinfo=timezone.utc)
    return start, end


def for_day(session: Session, project_key: str, day: date) -> DayOverview:
    """The figures of one UTC day of one project: three aggregate reads, no writes."""
    since, until = day_bounds(day)
    started_that_day = (
        Conversation.project_key == project_key,
        Conversation.started_at >= since,
        Conversation.started_at < until,
    )
    by_outcome = {outcome: 0 for outcome in OUTCOMES}
    failed_over = 0
    for state, count, retried in session.exec(
        select(Conversation.state, func.count(), func.sum(case((Conversation.attempts > 1, 1), else_=0)))
        .where(*started_that_day, Conversation.state.in_(LIFECYCLE_STATES))
        .group_by(Conversation.state)
    ):
        by_outcome[state] = count
        failed_over += retried or 0
    steps_that_day = (
        select()
        .select_from(HandoffEvent)
        .join(Conversation, Conversation.id == HandoffEvent.conversation_id)
        .where(*started_that_day, HandoffEvent.state.in_(LIFECYCLE_STATES))
    )
    per_destination = session.exec(
        steps_that_day.add_columns(HandoffEvent.destination, HandoffEvent.state, func.count()).group_by(
            HandoffEvent.destination, HandoffEvent.state
        )
    )
    # One row per answered handoff: when it started, and when and how it completed.
    answered = session.exec(
        steps_that_day.add_columns(
            func.min(case((HandoffEvent.state == INITIATED, HandoffEvent.at))),
            func.max(case((HandoffEvent.state == COMPLETED, HandoffEvent.at))),
            func.max(case((HandoffEvent.state == COMPLETED, HandoffEvent.detail))),
        )
        .where(Conversation.state == COMPLETED)
        .group_by(HandoffEvent.conversation_id)
    )
    return DayOverview(
        day=day,
        handoffs=sum(by_outcome.values()),
        by_outcome=by_outcome,
        failed_over=failed_over,
        by_destination=_by_destination(per_destination),
        answer_times=[
            seconds
            for started, completed, detail in answered
            if started is not None and completed is not None
            and (seconds := _answer_seconds(store.as_utc(started), store.as_utc(completed), detail or "")) is not None
        ],
    )


def _by_destination(counts) -> list[DestinationFigures]:
    figures: dict[str, DestinationFigures] = {}
    for destination, state, count in counts:
        row = figures.setdefault(destination or "—", DestinationFigures(destination or "—"))
        if state == INITIATED:
            row.attempts += count
        elif state == COMPLETED:
            row.completed += count
        elif state == FAILED:
            row.failed += count
    return sorted(figures.values(), key=lambda row: (-row.attempts, row.name))


def _answer_seconds(started: datetime, completed: datetime, detail: str) -> float | None:
    """None when the completed step cannot tell when the agent answered (see the module's docstring)."""
    waited = (completed - started).total_seconds()
    if detail.startswith("ReferCallStatus="):
        return max(waited, 0.0)
    talk = _TALK_TIME.search(detail)
    if detail.startswith("DialCallStatus=") and talk:
        return max(waited - int(talk.group(1)), 0.0)
    return None
