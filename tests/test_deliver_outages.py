"""`gateway deliver` as a real process: kill it, the receiver, or the database mid-run, and lose nothing.

Every event must reach the receiver exactly as the feed records it (same id, same body, a valid
signature), each conversation's in order. At least once: an event in flight when something
died may arrive twice, with the same webhook-id, which is what receivers deduplicate on.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select
from standardwebhooks.webhooks import Webhook

from gateway.storage.models import EventDelivery
from tests.events_support import SECRET, SECRET_ENV, Receiver, call_with_fallback, subscribe, wait_for
from tests.forwarder import Forwarder
from tests.support import CONFIG_KEY

GATEWAY = Path(sys.executable).with_name("gateway")
CALLS_BEFORE, CALLS_DURING = 4, 2


@pytest.fixture
def receiver():
    started = Receiver(delay=0.1).start()
    yield started
    started.stop()


@pytest.fixture
def subscribed(make_app, config_path, receiver):
    subscribe(config_path, receiver.url)
    return make_app()


class Worker:
    """`gateway deliver` in its own process, as the Procfile runs it."""

    def __init__(self, tmp_path: Path, config_path: Path, database_url: str) -> None:
        self.log = tmp_path / "worker.log"
        self.env = {
            **os.environ,
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_CONFIG": str(config_path),
            SECRET_ENV: SECRET,
        }
        self.cwd = tmp_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [str(GATEWAY), "deliver", "--first-retry", "0.2"], cwd=self.cwd, env=self.env, stdout=log, stderr=log
            )
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def workers(tmp_path, config_path):
    started: list[Worker] = []

    def start(database_url: str) -> Worker:
        worker = Worker(tmp_path, config_path, database_url).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def make_calls(app, prefix: str, count: int) -> None:
    client = app.test_client()
    for index in range(count):
        call_with_fallback(client, "CA" + prefix + f"{index:031x}")


def recorded_events(app) -> list[dict]:
    response = app.test_client().get("/v1/acme/frontdesk/events?limit=200", headers={"x-api-key": CONFIG_KEY})
    return response.get_json()["items"]


def all_arrived(app, receiver) -> bool:
    return {event["id"] for event in recorded_events(app)} <= set(receiver.ids())


def assert_every_event_arrived_exactly_as_recorded(app, receiver, expected: int) -> None:
    recorded = recorded_events(app)
    assert len(recorded) == expected
    verifier = Webhook(SECRET)
    first_copy: dict[str, dict] = {}
    arrival_order: list[str] = []
    for item in receiver.received:
        event = verifier.verify(item.body, item.headers)
        assert event["id"] == item.headers["webhook-id"]
        if event["id"] in first_copy:
            assert event == first_copy[event["id"]], "a retry must carry the same body"
        else:
            first_copy[event["id"]] = event
            arrival_order.append(event["id"])
    assert [first_copy[event["id"]] for event in recorded] == recorded
    for conversation_id in {event["data"]["id"] for event in recorded}:
        in_feed = [event["id"] for event in recorded if event["data"]["id"] == conversation_id]
        arrived = [event_id for event_id in arrival_order if event_id in in_feed]
        assert arrived == in_feed, "a conversation's events arrive in order"


def retried_deliveries(app) -> int:
    with Session(app.extensions["gateway"].engine) as session:
        return len(session.exec(select(EventDelivery).where(EventDelivery.attempts > 1)).all())


def test_killing_the_worker_mid_run_loses_nothing(subscribed, receiver, workers, database_url):
    make_calls(subscribed, "a", CALLS_BEFORE)
    first = workers(database_url)
    assert wait_for(lambda: len(receiver.received) >= 5)
    first.kill()
    killed_at = len(receiver.received)
    make_calls(subscribed, "b", CALLS_DURING)  # events while no worker runs
    time.sleep(0.5)
    assert len(receiver.received) <= killed_at + 1, "nothing is delivered while the worker is dead"

    workers(database_url)
    assert wait_for(lambda: all_arrived(subscribed, receiver), timeout=60)
    assert_every_event_arrived_exactly_as_recorded(subscribed, receiver, 5 * (CALLS_BEFORE + CALLS_DURING))


def test_a_receiver_that_goes_down_gets_everything_when_it_is_back(subscribed, receiver, workers, database_url):
    make_calls(subscribed, "a", CALLS_BEFORE)
    workers(database_url)
    assert wait_for(lambda: len(receiver.received) >= 5)
    receiver.stop()
    make_calls(subscribed, "b", CALLS_DURING)
    assert wait_for(lambda: retried_deliveries(subscribed) > 0), "the worker saw the receiver down"
    time.sleep(1.0)
    receiver.start()  # the same port

    assert wait_for(lambda: all_arrived(subscribed, receiver), timeout=60)
    assert_every_event_arrived_exactly_as_recorded(subscribed, receiver, 5 * (CALLS_BEFORE + CALLS_DURING))


def test_a_database_outage_mid_run_loses_nothing(subscribed, receiver, workers, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("a SQLite file cannot be stopped while open; the outage is tested on PostgreSQL")
    url = make_url(database_url)
    forwarder = Forwarder((url.host or "127.0.0.1", url.port or 5432))
    forwarder.start()
    try:
        make_calls(subscribed, "a", CALLS_BEFORE)
        workers(url.set(host="127.0.0.1", port=forwarder.port).render_as_string(hide_password=False))
        assert wait_for(lambda: len(receiver.received) >= 5)
        forwarder.stop()  # the worker's database is gone: open connections cut, new ones refused
        make_calls(subscribed, "b", CALLS_DURING)  # the gateway itself still reaches it directly
        time.sleep(2.0)
        stalled_at = len(receiver.received)
        time.sleep(0.5)
        assert len(receiver.received) == stalled_at, "the worker sends nothing it cannot record"
        forwarder.start()

        assert wait_for(lambda: all_arrived(subscribed, receiver), timeout=90)
    finally:
        forwarder.stop()
    assert_every_event_arrived_exactly_as_recorded(subscribed, receiver, 5 * (CALLS_BEFORE + CALLS_DURING))
