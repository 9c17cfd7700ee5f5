"""An exclusive `flock` taken within a time limit: the spool's replay and SQLite's writer turn both wait so."""
from __future__ import annotations

import fcntl
import time


def flock_within(handle, seconds: float, *, longest_pause: float) -> bool:
    """Take an exclusive flock on an open file, polling until `seconds` have passed; False if not had.

    flock has no timeout of its own, and a blocking one could hold a webhook past Twilio's. The
    pauses start at 0.1 ms and double up to `longest_pause`, so a lock held briefly changes
    hands almost at once.
    """
    deadline = time.monotonic() + seconds
    pause = 0.0001
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, longest_pause)
