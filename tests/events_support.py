"""Shared material for the event tests: a loopback receiver, a call's whole life, subscription config."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.support import ACCOUNT_SID, call_params, post_signed, twiml_root

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_ENV = "ACME_CRM_WEBHOOK_SECRET"
ACME_MARKER = '[[projects]]\naccount_id = "ws-globex"'


def subscribe(config_path, url: str, *, types: list[str] | None = None, secret_env: str = SECRET_ENV) -> None:
    """Add an [[projects.event_webhooks]] entry to the acme project of a test config file."""
    lines = [f'[[projects.event_webhooks]]\nurl = {json.dumps(url)}\nsecret_env = "{secret_env}"']  # a TOML basic string
    if types is not None:
        lines.append("types = " + json.dumps(types))
    entry = "\n".join(lines) + "\n\n"
    text = config_path.read_text()
    assert ACME_MARKER in text
    config_path.write_text(text.replace(ACME_MARKER, entry + ACME_MARKER, 1))


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    at: float

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A CRM's webhook endpoint on 127.0.0.1 that records every request and answers as scripted.

    `answers` is consumed one per request (status, headers); once empty every request gets 204.
    """

    answers: list[tuple[int, dict]] = field(default_factory=list)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/handoff"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                event_id = self.headers.get("webhook-id", "")
                with receiver._lock:
                    if receiver.in_flight.get(event_id):
                        receiver.overlaps.append(event_id)
                    receiver.in_flight[event_id] = receiver.in_flight.get(event_id, 0) + 1
                    status, headers = receiver.answers.pop(0) if receiver.answers else (204, {})
                time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.in_flight[event_id] -= 1
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        with self._lock:
            return [item.headers["webhook-id"] for item in self.received]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def action_path(response) -> str:
    root = twiml_root(response.data)
    element = root.find("Dial") if root.find("Dial") is not None else root.find("Refer")
    parts = urlsplit(element.get("action"))
    return f"{parts.path}?{parts.query}"


def twilio_posts(client, path: str, call_sid: str, **form):
    response = post_signed(client, path, {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, **form})
    assert response.status_code in (200, 204), response.text
    return response


def call_with_fallback(client, call_sid: str) -> None:
    """A call to +14155550199: Front desk is busy, the Billing fallback answers, the caller hangs up.

    Its history: initiated, failed, initiated (a retry), completed; then the call ends.
    """
    first = post_signed(client, "/voice/call", call_params(call_sid=call_sid))
    assert first.status_code == 200
    second = twilio_posts(client, action_path(first), call_sid, DialCallStatus="busy")
    twilio_posts(client, action_path(second), call_sid, DialCallStatus="completed", DialCallSid="CA" + "e" * 32)
    twilio_posts(client, "/voice/status", call_sid, CallStatus="completed", CallDuration="61", SequenceNumber="3")


LIFECYCLE_TYPES = [
    "handoff.initiated",
    "handoff.failed",
    "handoff.retrying",
    "handoff.completed",
    "conversation.ended",
]
