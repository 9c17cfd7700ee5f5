"""The names of handoff events (SPEC §5 Events) and the globs that pick them.

Its own small module: the config file checks subscription globs against these names, and the
event journal maps history rows onto them, without either importing the other.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

INITIATED = "handoff.initiated"
COMPLETED = "handoff.completed"
FAILED = "handoff.failed"
RETRYING = "handoff.retrying"
TOPIC = "conversation.topic"
ENDED = "conversation.ended"

EVENT_TYPES = (INITIATED, COMPLETED, FAILED, RETRYING, TOPIC, ENDED)


def types_matching(patterns: list[str]) -> list[str]:
    """The event types any of the globs (`handoff.*`, `conversation.ended`) names, in EVENT_TYPES order."""
    return [name for name in EVENT_TYPES if any(fnmatchcase(name, pattern) for pattern in patterns)]
