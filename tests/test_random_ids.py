"""Conversation ids: random version 4 UUIDs, never repeated, not even by forked workers."""
from __future__ import annotations

import os
import uuid

from gateway.storage.models import new_id


def test_ids_are_version_4_uuids_and_never_repeat():
    ids = [new_id() for _ in range(5000)]  # more than one read of the system's randomness
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(conversation_id).version for conversation_id in ids} == {4}


def test_a_forked_worker_never_makes_its_parents_ids():
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
        childs = set(pipe.read().split(","))
    parents = {new_id() for _ in range(10)}
    assert len(childs) == 10
    assert not childs & parents
