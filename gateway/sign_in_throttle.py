"""Failed console sign-ins per client address: after a few, that address waits before trying again.

The console has one shared password, so guessing it is the attack to slow down. Counts live
in the process: with several gunicorn workers, each counts on its own, so an address gets at
most `max_failures` guesses per worker per window.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60
#: Past this many addresses, the ones with no recent failure are forgotten.
_PRUNE_ABOVE = 10_000


class SignInThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._max_failures = max_failures
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int:
        """Seconds this address must wait before its next try; 0 when it may try now."""
        with self._lock:
            recent = self._recent(address)
            if len(recent) < self._max_failures:
                return 0
            return max(1, math.ceil(recent[0] + self._window - self._clock()))

    def failed(self, address: str) -> None:
        with self._lock:
            if len(self._failures) > _PRUNE_ABOVE:
                for known in list(self._failures):
                    self._recent(known)
            self._failures.setdefault(address, deque()).append(self._clock())

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)

    def _recent(self, address: str) -> deque[float]:
        """The address's failures inside the window (older ones dropped); caller holds the lock."""
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= self._clock() - self._window:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures
