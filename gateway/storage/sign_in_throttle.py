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

    def retry_after(self, session: Session, address: str) -> int:
        """Seconds this address must wait before its next try; 0 when it may try now."""
        now = self._now()
        count, oldest = session.exec(
            select(func.count(), func.min(SignInFailure.at)).where(
                SignInFailure.address == address, SignInFailure.at > now - self._window
            )
        ).one()
        if count < self._max_failures:
            return 0
        if oldest.tzinfo is None:  # SQLite hands timestamps back without their zone
            oldest = oldest.replace(tzinfo=timezone.utc)
        return max(1, math.ceil((oldest + self._window - now).total_seconds()))

    def failed(self, session: Session, address: str) -> None:
        """Count a wrong password, and forget failures that have left the window (any address)."""
        now = self._now()
        session.exec(delete(SignInFailure).where(SignInFailure.at <= now - self._window))
        session.add(SignInFailure(address=address, at=now))
        session.commit()

    def succeeded(self, session: Session, address: str) -> None:
        session.exec(delete(SignInFailure).where(SignInFailure.address == address))
        session.commit()
