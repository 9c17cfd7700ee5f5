"""Random UUIDs drawn from a buffer of the system's randomness instead of a system call each.

`uuid.uuid4()` calls `os.urandom`, a system call that lets go of the GIL. Under gunicorn's
threads every such let-go on a webhook's path hands the interpreter to another thread and
then waits to get it back (docs/performance.md), so every new call paid for one. Here a
process reads the bytes for 256 ids at once; each id is still 122 bits from `os.urandom`.
A forked worker never reuses its parent's bytes: the buffer is refilled in a new process.
"""
from __future__ import annotations

import os
import threading
import uuid

_IDS_PER_READ = 256
_UUID_BYTES = 16


class _RandomBytes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._buffer = b""
        self._offset = 0

    def take(self) -> bytes:
        with self._lock:
            if self._pid != os.getpid() or self._offset >= len(self._buffer):
                self._buffer, self._offset, self._pid = os.urandom(_UUID_BYTES * _IDS_PER_READ), 0, os.getpid()
            start, self._offset = self._offset, self._offset + _UUID_BYTES
            return self._buffer[start:self._offset]


_random = _RandomBytes()


def random_uuid() -> uuid.UUID:
    """A version 4 UUID, as `uuid.uuid4()` makes."""
    return uuid.UUID(bytes=_random.take(), version=4)
