"""A durable local spool for what the voice webhooks could not store while the database was down.

The file is `pending.jsonl` in the spool folder: append-only, one JSON record per line, each
append flushed and fsync'd before the webhook answers, so a record the caller's TwiML depends
on survives a crash. Appends from several gunicorn workers take an exclusive `flock` on
`spool.lock`; one replayer at a time holds `replay.lock`. Replay applies records in file order
and, after each one's commit, moves `replayed.offset` past it; when everything has been
replayed the file is emptied. A crash between a commit and the offset update replays that
record again, which the records' idempotent application makes harmless.

No Flask and no database here: `replay` hands each record to a function that applies it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.infra.file_locks import flock_within

log = logging.getLogger(__name__)

RECORDS = "pending.jsonl"
REJECTED = "rejected.jsonl"
OFFSET = "replayed.offset"


class ReplayUnfinished(Exception):
    """A replay's time ran out with records left: they wait for the next replay."""


class RecordRejected(Exception):
    """A record that can never be applied (not a database outage): set aside, not retried."""


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RECORDS
        #: When this process last found nothing to replay (see `pending`); None: not since its last append.
        self._found_empty_at: float | None = None

    def create(self) -> None:
        """Make the folder at start-up, so an unwritable spool shows before the first outage."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        """Write one record durably: it is on disk when this returns."""
        self._write_line(self.path, record)
        self._found_empty_at = None

    def pending(self, *, trust_empty_for: float = 0.0) -> bool:
        """Whether anything waits to be replayed: one stat().

        With `trust_empty_for`, an empty spool found that many seconds ago or less is taken as
        still empty, unless this process has spooled since: for callers that may miss another
        process's newest record for a moment (a new call), one stat() a tenth of a second
        instead of one per call. A stat() lets go of the GIL, and under gunicorn's threads each
        let-go on a webhook's path costs a wait to get it back (docs/performance.md).
        """
        checked = self._found_empty_at
        now = time.monotonic()
        if trust_empty_for and checked is not None and now - checked <= trust_empty_for:
            return False
        try:
            waiting = self.path.stat().st_size > 0
        except FileNotFoundError:
            waiting = False
        self._found_empty_at = None if waiting else now
        return waiting

    def records(self) -> list[dict]:
        """Every record not yet replayed, oldest first."""
        return [record for _end, record in self._unreplayed()]

    def replay(
        self,
        apply: Callable[[dict], None],
        *,
        stop_on: tuple[type[BaseException], ...],
        wait_seconds: float = 0.0,
        budget_seconds: float | None = None,
    ) -> int | None:
        """Apply the unreplayed records in order; the number applied, or None if another replayer runs.

        `apply` commits one record. An exception of a `stop_on` type (the database is still
        down) stops the replay, leaving that record and the rest for next time, and is raised
        again so a webhook fails open at once instead of waiting on the database twice;
        RecordRejected moves the record to rejected.jsonl for an operator to look at. With a
        `budget_seconds`, no record after the first is begun once it has run out:
        ReplayUnfinished, the rest left for the next replay (a webhook's caller is waiting; a
        long outage spools thousands).
        """
        deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        with self._replay_lock(wait_seconds) as acquired:
            if not acquired:
                return None
            applied = 0
            for begun, (end, record) in enumerate(self._unreplayed()):
                if begun and deadline is not None and time.monotonic() >= deadline:
                    raise ReplayUnfinished(f"{applied} spooled records replayed within {budget_seconds} s; more remain")
                try:
                    apply(record)
                except stop_on as error:
                    log.warning("spool replay paused at %s: the database is still unavailable (%s)", self.path, error)
                    raise
                except RecordRejected as error:
                    log.error("spool record set aside in %s: %s: %s", REJECTED, error, record)
                    self._write_line(self.directory / REJECTED, {**record, "rejected": str(error)})
                else:
                    applied += 1
                self._set_offset(end)
            self._empty_if_all_replayed()
            return applied

    def _unreplayed(self) -> Iterator[tuple[int, dict]]:
        """(end offset, record) of each complete line after the replayed offset."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            size = handle.seek(0, os.SEEK_END)
            offset = self._offset()
            # Past the end only if the file was emptied and the offset's reset was lost in a
            # crash (before it was made durable first): then every line there is unreplayed.
            handle.seek(offset if offset <= size else 0)
            while True:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    return  # end of file, or an append still being written
                try:
                    record = json.loads(line)
                except ValueError:  # a line torn by a crash mid-append, then joined by the next one
                    record = {"kind": "unreadable", "line": line.decode("utf-8", "replace")}
                yield handle.tell(), record

    def _write_line(self, path: Path, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        self.create()
        with self._lock(), open(path, "a+b") as handle:
            # A crash mid-write leaves a torn last line; end it, so this record is a line of its
            # own (the torn one is then set aside as unreadable) rather than glued onto it.
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def _offset(self) -> int:
        try:
            return int((self.directory / OFFSET).read_text() or 0)
        except FileNotFoundError:
            return 0

    def _set_offset(self, offset: int, *, durable: bool = False) -> None:
        """Record how far the replay got. Not durable by default: a lost advance only replays
        records again, which is harmless."""
        temporary = self.directory / (OFFSET + ".tmp")
        with open(temporary, "w") as handle:
            handle.write(str(offset))
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, self.directory / OFFSET)
        if durable:
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def _empty_if_all_replayed(self) -> None:
        """Start the file afresh once every line is replayed, unless an append slipped in meanwhile.

        The offset goes back to 0 durably before the file is emptied: a crash in between then
        replays the lines again (harmless), where the other order would leave an offset past
        the end of an empty file, and the records spooled next would be skipped, then lost.
        """
        with self._lock():
            if self.path.exists() and self.path.stat().st_size == self._offset():
                self._set_offset(0, durable=True)
                with open(self.path, "r+b") as handle:
                    handle.truncate(0)
                    os.fsync(handle.fileno())

    @contextmanager
    def _lock(self):
        self.create()
        with open(self.directory / "spool.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _replay_lock(self, wait_seconds: float):
        """Non-blocking, polled for up to `wait_seconds`: a webhook never queues behind a long replay."""
        self.create()
        with open(self.directory / "replay.lock", "a") as handle:
            if not flock_within(handle, wait_seconds, longest_pause=0.01):
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
