"""Network failures on send, against real local sockets (responses sits above urllib3's retries).

make_client retries only failures to connect, where nothing reached Twilio. A request that was
sent and then lost its answer is never retried, so a text is never sent twice.
"""
from __future__ import annotations

import socket
import threading

import pytest
from sqlmodel import select

from gateway.storage.models import SmsMessage
from tests.messaging_support import CUSTOMER, TEXTING
from tests.support import TEXTING_KEY


class SilentServer:
    """Accepts connections, reads each whole request, then hangs up without answering."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.requests.append(self._read_request(connection))

    @staticmethod
    def _read_request(connection: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(body) < length:
            body += connection.recv(65536)
        return data

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._thread.join(timeout=5)


def point_twilio_at(app, base_url: str) -> None:
    """Send the app's REST calls to `base_url` through the very adapter make_client configured."""
    client = app.extensions["gateway"].twilio
    session = client.http_client.session
    session.mount(base_url + "/", session.get_adapter("https://api.twilio.com"))
    client.api.base_url = base_url


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def send(client):
    return client.post(f"{TEXTING}/sms", json={"to": CUSTOMER, "body": "hi"}, headers={"x-api-key": TEXTING_KEY})


def test_lost_answer_is_504_and_the_request_is_sent_exactly_once(app, silent_server, session):
    point_twilio_at(app, f"http://127.0.0.1:{silent_server.port}")
    response = send(app.test_client())
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "twilio_no_answer"
    assert "may have been sent" in error["message"]
    assert len(silent_server.requests) == 1
    assert silent_server.requests[0].startswith(b"POST /2010-04-01/Accounts/")
    assert session.exec(select(SmsMessage)).all() == []


def test_refused_connection_is_503_and_says_nothing_was_sent(app):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free_port = probe.getsockname()[1]
    point_twilio_at(app, f"http://127.0.0.1:{free_port}")
    response = send(app.test_client())
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "twilio_unreachable"
    assert "nothing was sent" in error["message"]
