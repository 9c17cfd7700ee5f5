"""Conversation ids: UUIDs that sort by the millisecond they were made in (version 7, RFC 9562).

Why time-ordered: a conversation's id is its primary key, and its history entries are keyed by
it too. A random id (version 4) lands every new call on a random leaf page of both indexes, so
each commit group of new calls dirtied a page per call per index, each page written to the WAL
and read back once another worker had written. Ids that grow with time append to the same few
pages instead: with 60,000 calls stored, a group of six new calls wrote 23 WAL pages instead of
36 and cost about a third less CPU (docs/performance.md). PostgreSQL's B-trees gain the same way.

Why not a library: Python has `uuid.uuid7` only from 3.14; `uuid_utils` draws from a Rust RNG
that forked processes share (two gunicorn workers would make the same ids), and the `uuid6`
package reads `os.urandom` once an id, a system call that lets go of the GIL, which under
gunicorn's threads hands the interpreter to another thread and then waits to get it back
(docs/performance.md). So a process reads the system's randomness for 256 ids at once, and a
forked worker never reuses its parent's bytes: the buffer is emptied in the child at fork. Each
id keeps 74 bits from `os.urandom`; the other 54 are the time, the version and the variant.
"""
from __future__ import annotations

import os
import threading
import time
import uuid

_IDS_PER_READ = 256
#: The 74 random bits of a version 7 UUID, rounded up to whole bytes.
_RANDOM_BYTES = 10


class _RandomBytes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def take(self) -> bytes:
        with self._lock:
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = os.urandom(_RANDOM_BYTES * _IDS_PER_READ), 0
            start, self._offset = self._offset, self._offset + _RANDOM_BYTES
            return self._buffer[start:self._offset]

    def forget(self) -> None:
        """In a forked child: the parent's unread bytes are the parent's, and its lock may be held."""
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0


_random = _RandomBytes()
# Told at fork rather than asked every id: `os.getpid()` is a system call on each id.
os.register_at_fork(after_in_child=_random.forget)


def time_ordered_uuid() -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix milliseconds, then 74 random bits around the version
    and variant bits. Ids made in the same millisecond are ordered at random among themselves."""
    random_bits = int.from_bytes(_random.take(), "big")
    return uuid.UUID(int=(
        (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version
        | (random_bits >> 62 & 0xFFF) << 64  # rand_a: 12 bits
        | 0b10 << 62  # variant (RFC 9562)
        | random_bits & (1 << 62) - 1  # rand_b: 62 bits
    ))
