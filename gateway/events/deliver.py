"""`gateway deliver`: the worker that pushes handoff events to `event_webhooks` subscriptions.

Its own process (the Procfile's `worker:` line), never a webhook's thread. Each pass publishes
new history to the event journal, queues a delivery per subscription, then sends every due
delivery, signed per Standard Webhooks by the `standardwebhooks` library. At least once: a
delivery is marked delivered only after the receiver's 2xx, so a worker killed mid-send sends
again. Timeouts, connection errors, 408, 429, 3xx and 5xx retry with exponential backoff and
jitter (honouring Retry-After) for 24 hours; any other 4xx stops that event and records why.
At most once an hour it also prunes what is older than the retention (gateway/events/retention.py).
"""
from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import requests
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

from gateway.events import deliveries, journal, retention
from gateway.config.file import GatewayConfig
from gateway.infra import deadline_http
from gateway.infra.safe_text import whole_number
from gateway.storage.models import EventDelivery, PublishedEvent, utcnow

log = logging.getLogger(__name__)

USER_AGENT = "HandoffGateway-Events/1"
#: (connect, answer) seconds: a receiver that hangs, or trickles its answer, costs one worker
#: at most this long, then it retries. The answer's limit is for all of it, not per socket read.
HTTP_TIMEOUT = (3.05, 10.0)
#: Retries stop this long after an event was queued for a subscription (Standard Webhooks receivers expect about a day).
RETRY_HORIZON = timedelta(hours=24)
#: The first retry waits about this long; each later one doubles it, up to MAX_DELAY.
BACKOFF_BASE = 5.0
MAX_DELAY = 3600.0
#: How long an idle worker waits before looking for new history again.
POLL_SECONDS = 1.0
#: Events are kept this long unless GATEWAY_EVENTS_RETENTION_DAYS says otherwise.
RETENTION = timedelta(days=30)
#: A worker prunes old events at most this often (and on its first pass).
PRUNE_EVERY = timedelta(hours=1)
#: After the database fails, the worker waits this long (doubling, up to a minute) before trying again.
DATABASE_RETRY_SECONDS = 1.0

_RETRIED_4XX = {408, 429}
_SECRET_PREFIX = "whsec_"
#: What the Standard Webhooks specification asks of a signing key.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


class SecretMissing(Exception):
    """A subscription's secret_env is unset or not a Standard Webhooks secret; the message says which."""


def signers(config: GatewayConfig, environ: dict[str, str] | None = None) -> dict[tuple[str, str], Webhook]:
    """Each subscription's signer, from the environment variable its secret_env names."""
    environ = os.environ if environ is None else environ
    result = {}
    for project in config.projects:
        for webhook in project.event_webhooks:
            where = f"{project.key} event_webhooks {webhook.url}"
            secret = environ.get(webhook.secret_env, "")
            if not secret:
                raise SecretMissing(f"{where}: set the environment variable {webhook.secret_env} to its signing secret (whsec_...)")
            problem = _secret_problem(secret)
            if problem:
                raise SecretMissing(
                    f"{where}: {webhook.secret_env} is not a Standard Webhooks secret ({problem}); "
                    "make one with `gateway events new-secret`"
                )
            result[(project.key, webhook.url)] = Webhook(secret)
    return result


def _secret_problem(secret: str) -> str | None:
    """Why receivers' libraries would not take this secret (they decode strictly), or None.

    The Python library forgives stray characters that Node's refuses; checking strictly here
    means every receiver can verify what the worker signs.
    """
    encoded = secret.removeprefix(_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error
        return "after whsec_ it must be base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"it decodes to {len(key)} bytes; use {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}"
    return None


def new_secret() -> str:
    """A fresh signing secret in the whsec_ form every Standard Webhooks library reads."""
    return _SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Answer:
    """What one POST came to."""

    status_code: int | None
    error: str | None
    retry_after: float | None = None
    #: nothing to retry: the subscription is gone from the config file
    give_up: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retriable(self) -> bool:
        code = self.status_code
        if self.give_up:
            return False
        return code is None or code in _RETRIED_4XX or code < 400 or code >= 500


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds to wait: either delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if (seconds := whole_number(value)) is not None:
        return float(seconds)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - now).total_seconds())


def backoff(attempts: int, base: float, rng: random.Random) -> float:
    """Exponential with full jitter in its upper half: `attempts` failures so far (1 or more)."""
    ceiling = min(MAX_DELAY, base * 2 ** (attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


class Deliverer:
    """Publishes, queues and sends; one per worker process (or thread, in tests)."""

    def __init__(
        self,
        engine: Engine,
        config: GatewayConfig,
        signing: dict[tuple[str, str], Webhook],
        *,
        backoff_base: float = BACKOFF_BASE,
        timeout: tuple[float, float] = HTTP_TIMEOUT,
        horizon: timedelta = RETRY_HORIZON,
        poll_seconds: float = POLL_SECONDS,
        retention: timedelta = RETENTION,
        prune_every: timedelta = PRUNE_EVERY,
    ) -> None:
        self.engine, self.config, self.signing = engine, config, signing
        self.backoff_base, self.timeout, self.horizon, self.poll_seconds = backoff_base, timeout, horizon, poll_seconds
        self.retention, self.prune_every = retention, prune_every
        self._pruned_at: float | None = None  # time.monotonic() of this worker's last prune
        self.rng = random.Random()
        self.project_keys = [project.key for project in config.projects]

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; a database outage is waited out, never fatal."""
        pause = DATABASE_RETRY_SECONDS
        while not stop.is_set():
            try:
                busy = self.run_once()
                pause = DATABASE_RETRY_SECONDS
            except (DataError, IntegrityError):
                raise  # a row the database refuses is no outage: waiting it out would only hide it
            except SQLAlchemyError as error:
                log.warning("database unavailable, retrying in %.0f s: %s", pause, str(error).splitlines()[0])
                stop.wait(pause)
                pause = min(60.0, pause * 2)
                continue
            if not busy:
                stop.wait(self.poll_seconds)

    def run_once(self) -> int:
        """One pass: publish, queue, prune when due, and send all that is due; how many sends were tried."""
        with Session(self.engine, expire_on_commit=False) as session:
            journal.publish(session, self.project_keys)
            deliveries.queue(session, self.config)
            self._prune_when_due(session)
        sent = 0
        while self._send_one():
            sent += 1
        return sent

    def _prune_when_due(self, session: Session) -> None:
        """The first pass prunes, then one an hour: old rows pile up slowly, and each prune scans for them."""
        started = time.monotonic()
        if self._pruned_at is not None and started - self._pruned_at < self.prune_every.total_seconds():
            return
        gone = retention.prune(session, utcnow() - self.retention)
        self._pruned_at = started
        if any(gone):
            log.info("pruned %d deliveries and %d events older than %s", *gone, self.retention)

    def _send_one(self) -> bool:
        """Claim one due delivery, send it, record the outcome, commit; False when none is due."""
        with Session(self.engine, expire_on_commit=False) as session:
            claimed = deliveries.claim(session, utcnow())
            if claimed is None:
                session.rollback()
                return False
            try:
                answer = self._post(claimed.event, self.signing.get((claimed.subscription.project_key, claimed.subscription.url)), claimed.subscription.url)
                self._record(session, claimed.delivery, answer)
            except SQLAlchemyError:
                raise  # the database's trouble, not this delivery's: run() waits it out
            except Exception as error:  # noqa: BLE001 - one odd answer must not stop every delivery
                # Uncaught, it would end the worker, and end it again after each restart on this same delivery.
                log.exception("delivery %s: unexpected error; it will be retried", claimed.delivery.id)
                self._record(session, claimed.delivery, Answer(None, f"unexpected error: {type(error).__name__}: {error}"))
            session.commit()
            return True

    def _post(self, event: PublishedEvent, signer: Webhook | None, url: str) -> Answer:
        if signer is None:  # a subscription removed from the config since it was queued
            return Answer(None, "the subscription is no longer in the config file; not sent", give_up=True)
        now = datetime.now(timezone.utc)
        headers = {
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event.event_id, now, event.body),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            response = deadline_http.post(
                url, data=event.body.encode(), headers=headers, connect_seconds=self.timeout[0], answer_seconds=self.timeout[1]
            )
        except requests.ConnectTimeout:
            return Answer(None, f"could not connect within {self.timeout[0]:g} s")
        except requests.Timeout:
            return Answer(None, f"timed out after {self.timeout[1]:g} s")
        except requests.ConnectionError as error:
            return Answer(None, f"could not connect: {type(error).__name__}")
        except requests.RequestException as error:
            return Answer(None, f"request failed: {type(error).__name__}: {error}")
        error = None if 200 <= response.status_code < 300 else f"answered {response.status_code} {response.reason or ''}".strip()
        return Answer(response.status_code, error, retry_after_seconds(response.headers.get("Retry-After"), now))

    def _record(self, session: Session, delivery: EventDelivery, answer: Answer) -> None:
        now = utcnow()
        if answer.ok:
            deliveries.record_delivered(session, delivery, answer.status_code, now)
            return
        if not answer.retriable:
            log.warning("delivery %s stopped: %s", delivery.id, answer.error)
            reason = answer.error if answer.give_up else f"{answer.error}; a 4xx other than 408/429 is not retried"
            deliveries.record_failed(session, delivery, answer.status_code, reason)
            return
        wait = backoff(delivery.attempts + 1, self.backoff_base, self.rng)
        if answer.retry_after is not None:  # even past MAX_DELAY: the receiver said when; the horizon is the only cap
            wait = max(wait, min(answer.retry_after, self.horizon.total_seconds()))
        retry_at = now + timedelta(seconds=wait)
        if retry_at > deliveries.retry_deadline(delivery, self.horizon):
            deliveries.record_failed(session, delivery, answer.status_code, f"{answer.error}; gave up after {self.horizon}")
            return
        deliveries.record_retry(session, delivery, answer.status_code, answer.error or "failed", retry_at)
