"""Failed console sign-ins per client address: after a few, that address waits before trying again.

The console has one shared password, so guessing it is the attack to slow down. Failures are
rows in the database, so every gunicorn worker and every gateway instance on the same database
counts the same guesses: an address gets `max_failures` guesses per window in all.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import delete, func
from sqlmodel import Session, select

from gateway.storage.models import SignInFailure

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


class SignInThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self._max_failures = max_failures
        self._window = timedelta(seconds=window_seconds)
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def begin_attempt(self, session: Session, address: str) -> int:
        """Count this try as a failure before its password is checked; then the seconds the
        address must wait (the try is then not counted), or 0: check it, and call `succeeded`
        if it was right.

        Counted first and committed, then counted with the others: of guesses that arrive
        together, each sees those committed before it counts, so no more than `max_failures`
        in a window are ever checked. Counting first and recording after the (slow) password
        check let a burst of parallel guesses all pass the count (an outside review got 18 of
        20 checked against a limit of 5).
        """
        now = self._now()
        session.exec(delete(SignInFailure).where(SignInFailure.at <= now - self._window))  # any address's old ones
        attempt = SignInFailure(address=address, at=now)
        session.add(attempt)
        session.commit()
        count, oldest = session.exec(
            select(func.count(), func.min(SignInFailure.at)).where(
                SignInFailure.address == address, SignInFailure.at > now - self._window
            )
        ).one()
        if count <= self._max_failures:
            return 0
        session.delete(attempt)
        session.commit()
        if oldest.tzinfo is None:  # SQLite hands timestamps back without their zone
            oldest = oldest.replace(tzinfo=timezone.utc)
        return max(1, math.ceil((oldest + self._window - now).total_seconds()))

    def succeeded(self, session: Session, address: str) -> None:
        session.exec(delete(SignInFailure).where(SignInFailure.address == address))
        session.commit()
