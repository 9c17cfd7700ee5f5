"""Conversation ids: version 7 UUIDs, in the order they were made, never repeated, not even by
forked workers."""
from __future__ import annotations

import os
import time
import uuid

from gateway.storage.models import new_id


def test_ids_are_version_7_uuids_and_never_repeat():
    ids = [new_id() for _ in range(5000)]  # more than one read of the system's randomness
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(conversation_id).version for conversation_id in ids} == {7}
    assert {uuid.UUID(conversation_id).variant for conversation_id in ids} == {uuid.RFC_4122}


def test_ids_sort_as_text_by_the_millisecond_they_were_made_in():
    """The database compares ids as text: a later call's id sorts after every earlier one's,
    so new calls append to the primary key's last page instead of a random one."""
    made_before = time.time_ns() // 1_000_000
    earlier = [new_id() for _ in range(100)]
    time.sleep(0.002)
    later = [new_id() for _ in range(100)]
    made_after = time.time_ns() // 1_000_000
    assert max(earlier) < min(later)
    for conversation_id in earlier + later:
        assert made_before <= uuid.UUID(conversation_id).int >> 80 <= made_after


def _random_bits(conversation_id: str) -> int:
    """The 74 bits an id draws from the system's randomness (rand_a and rand_b, RFC 9562)."""
    value = uuid.UUID(conversation_id).int
    return (value >> 64 & 0xFFF) << 62 | value & (1 << 62) - 1


def test_a_forked_worker_never_makes_its_parents_ids():
    """Compared by their random bits alone: ids made in another millisecond differ by their
    time even when the child reuses the parent's randomness, which would make twins of the
    two workers' ids in any millisecond they share."""
    new_id()  # the parent has read randomness it has not used up yet (gunicorn --preload forks after this)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(writing, ",".join(new_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as pipe:
        childs = {_random_bits(conversation_id) for conversation_id in pipe.read().split(",")}
    parents = {_random_bits(new_id()) for _ in range(10)}
    assert len(childs) == 10
    assert not childs & parents
