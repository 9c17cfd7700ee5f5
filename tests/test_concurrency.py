"""2,000 signed webhooks from many threads against a real threaded server on PostgreSQL.

Twilio retries and our own racing twins send the same CallSid and the same dial result more
than once, at the same moment. The database must end with one conversation per CallSid and
each transition once, by constraints and row locks, however the threads interleave.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlmodel import Session, select
from werkzeug.serving import make_server

from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent
from tests.support import call_params, sign, twiml_root

TOTAL_REQUESTS = 2000
CALLS = 240
THREADS = 24
DEADLINE_SECONDS = 90  # the whole run; it takes a few seconds
NUMBER = "+14155550199"  # Front desk, then Billing, then Front desk (the default); max_attempts 3


@pytest.fixture
def live_server(database_url, make_app):
    """The app behind werkzeug's threaded server on a free loopback port."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the concurrency test runs on PostgreSQL, the backend for several gateway instances")
    app = make_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def call_sid(index: int) -> str:
    return f"CA{index:032x}"


class Driver:
    """Posts signed webhooks from a thread pool, failing fast and within one overall deadline."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.deadline = time.monotonic() + DEADLINE_SECONDS
        self.sent = 0

    def post(self, path: str, params: dict) -> requests.Response:
        url = self.base_url + path
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": sign(url, params)}, timeout=15)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
        return response

    def run(self, pool: ThreadPoolExecutor, jobs: list[tuple[object, str, dict]]) -> list[tuple[object, bytes]]:
        """(tag, TwiML) of every job, all sent at once in the given (shuffled) order."""
        futures = [(tag, pool.submit(self.post, path, params)) for tag, path, params in jobs]
        done, not_done = wait([f for _tag, f in futures], timeout=self.deadline - time.monotonic(), return_when=FIRST_EXCEPTION)
        for future in not_done:
            future.cancel()
        for future in done:
            future.result()  # raise the first failure
        assert not not_done, f"{len(not_done)} requests did not finish within {DEADLINE_SECONDS}s"
        self.sent += len(jobs)
        return [(tag, future.result().content) for tag, future in futures]


def dial_job(index: int, conversation_id: str, attempt: int, status: str) -> tuple[object, str, dict]:
    path = f"/voice/dial-status?conversation_id={conversation_id}&attempt={attempt}"
    params = call_params(call_sid=call_sid(index), to=NUMBER, CallStatus="in-progress", DialCallStatus=status)
    return (index, attempt, status), path, params


def action_of(twiml: bytes) -> tuple[str, int]:
    dial = twiml_root(twiml).find("Dial")
    query = parse_qs(urlsplit(dial.get("action")).query)
    return query["conversation_id"][0], int(query["attempt"][0])


def test_racing_webhooks_leave_one_conversation_per_call_and_each_transition_once(live_server):
    app, base_url = live_server
    rng = random.Random(6)
    driver = Driver(base_url)
    copies = {index: rng.randint(2, 4) for index in range(CALLS)}
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        # 1. Every call arrives 2-4 times at once.
        jobs = [(i, "/voice/call", call_params(call_sid=call_sid(i), to=NUMBER)) for i in range(CALLS) for _ in range(copies[i])]
        rng.shuffle(jobs)
        answers: dict[int, set] = {}
        for index, twiml in driver.run(pool, jobs):
            answers.setdefault(index, set()).add(action_of(twiml))
        assert all(len(seen) == 1 for seen in answers.values()), "twins of a call were given different conversations"
        conversation_of = {index: next(iter(seen))[0] for index, seen in answers.items()}
        assert all(attempt == 1 for seen in answers.values() for _id, attempt in seen)

        # 2. Attempt 1 fails, and Twilio's result for it arrives 2-4 times at once.
        jobs = [dial_job(i, conversation_of[i], 1, "busy") for i in range(CALLS) for _ in range(rng.randint(2, 4))]
        rng.shuffle(jobs)
        for (index, _attempt, _status), twiml in driver.run(pool, jobs):
            assert action_of(twiml) == (conversation_of[index], 2)

        # 3. Attempt 2's result (answered for even calls, not for odd ones) races a late,
        #    contradicting result for attempt 1; the rest of the 2,000 are repeats of attempt 2's.
        jobs = [dial_job(i, conversation_of[i], 1, "completed") for i in range(CALLS)]
        jobs += [dial_job(i, conversation_of[i], 2, "completed" if i % 2 == 0 else "no-answer") for i in range(CALLS)]
        while driver.sent + len(jobs) < TOTAL_REQUESTS:
            i = rng.randrange(CALLS)
            jobs.append(dial_job(i, conversation_of[i], 2, "completed" if i % 2 == 0 else "no-answer"))
        rng.shuffle(jobs)
        for (index, attempt, _status), twiml in driver.run(pool, jobs):
            if attempt == 2 and index % 2 == 0:
                assert [child.tag for child in twiml_root(twiml)] == ["Hangup"]
            elif attempt == 2:
                assert action_of(twiml) == (conversation_of[index], 3)
    assert driver.sent == TOTAL_REQUESTS

    with Session(app.extensions["gateway"].engine) as session:
        conversations = session.exec(select(Conversation)).all()
        assert sorted(c.call_sid for c in conversations) == [call_sid(i) for i in range(CALLS)]
        assert {c.id for c in conversations} == set(conversation_of.values())
        events = session.exec(select(HandoffEvent)).all()
        assert not [key for key, n in Counter((e.conversation_id, e.dedupe_key) for e in events).items() if n > 1]
        for index in range(CALLS):
            conversation = store.find_by_id(session, conversation_of[index])
            history = [(e.state, e.destination, e.detail) for e in store.history(session, conversation.id)]
            expected = [
                ("handoff_initiated", "Front desk", None),
                ("handoff_failed", "Front desk", "DialCallStatus=busy"),
                ("handoff_initiated", "Billing", None),
            ]
            if index % 2 == 0:
                expected.append(("handoff_completed", "Billing", "DialCallStatus=completed"))
                assert (conversation.state, conversation.attempts) == ("handoff_completed", 2)
            else:
                expected.append(("handoff_failed", "Billing", "DialCallStatus=no-answer"))
                expected.append(("handoff_initiated", "Front desk", None))
                assert (conversation.state, conversation.attempts) == ("handoff_initiated", 3)
            assert history == expected, conversation.call_sid
            assert conversation.attempts == sum(state == "handoff_initiated" for state, _d, _x in history)
