"""A conversation's handoff timeline for people to read: every recorded step, oldest first.

Each source turns one kind of row into entries; a new kind of step is one more function in
`SOURCES`, and the console shows it without other changes. What was said is not a step: the
console shows it beside the timeline (gateway/web/console/transcript.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from gateway.storage import store
from gateway.storage.models import Conversation

_STATE_TITLES = {
    "handoff_initiated": "Handoff initiated",
    "handoff_completed": "Handoff completed",
    "handoff_failed": "Handoff failed",
}


@dataclass(frozen=True)
class Entry:
    at: datetime
    #: what kind of step it is ("handoff"): the page styles entries by it
    kind: str
    title: str
    #: the state name, as stored
    label: str | None = None
    destination: str | None = None
    detail: str | None = None


def handoff_events(session: Session, conversation: Conversation) -> list[Entry]:
    return [
        Entry(
            at=store.as_utc(event.at),
            kind="handoff",
            title=_STATE_TITLES.get(event.state, f"Topic: {event.state}"),
            label=event.state,
            destination=event.destination,
            detail=event.detail,
        )
        for event in store.history(session, conversation.id)
    ]


SOURCES: list[Callable[[Session, Conversation], list[Entry]]] = [handoff_events]


def build(session: Session, conversation: Conversation) -> list[Entry]:
    """Every source's entries, oldest first; a stable sort keeps each source's own order for ties."""
    entries = [entry for source in SOURCES for entry in source(session, conversation)]
    return sorted(entries, key=lambda entry: entry.at)
