"""Slow clients and slow calls to Twilio cannot stall the webhooks, under gunicorn as the Procfile runs it."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from tests.gunicorn_support import gunicorn_as_in_the_procfile
from tests.support import ASSISTANT_NUMBER, CONFIG_KEY, add_assistant_number, call_params, sign

SLOW_CLIENTS = 20
#: Twilio gives up on a webhook after 15 s; the issue asks for an answer in under 2.
ANSWER_WITHIN_SECONDS = 2.0


def signed_call(base: str, call_sid: str, to: str = "+14155550199") -> tuple[int, float]:
    params = call_params(call_sid, to=to)
    request = urllib.request.Request(
        f"{base}/voice/call", data=urlencode(params).encode(),
        headers={"X-Twilio-Signature": sign(f"{base}/voice/call", params)},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=15) as response:
        response.read()
        return response.status, time.monotonic() - started


class SlowClients:
    """Connections that send nothing at all, or headers and then a byte of body now and then."""

    def __init__(self, port: int, count: int, *, trickle: bool) -> None:
        self.sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.answers: dict[int, bytes] = {}
        self._stop = threading.Event()
        if trickle:
            head = (f"POST /voice/call HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                    "application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n").encode()
            for sock in self.sockets:
                sock.sendall(head)
            self._thread = threading.Thread(target=self._trickle, daemon=True)
            self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(0.3):
            for index, sock in enumerate(self.sockets):
                if index in self.answers:
                    continue
                try:
                    sock.sendall(b"a")
                except OSError:
                    self.answers[index] = b""

    def read_answers(self, timeout: float) -> list[bytes]:
        for index, sock in enumerate(self.sockets):
            sock.settimeout(timeout)
            try:
                self.answers.setdefault(index, sock.recv(200))
            except OSError:
                self.answers.setdefault(index, b"")
        return [self.answers[index] for index in range(len(self.sockets))]

    def close(self) -> None:
        self._stop.set()
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["idle", "trickling"])
def test_webhooks_are_answered_fast_while_slow_clients_hold_connections(tmp_path, config_path, trickle):
    with gunicorn_as_in_the_procfile(tmp_path, config_path) as (base, port):
        slow = SlowClients(port, SLOW_CLIENTS, trickle=trickle)
        try:
            time.sleep(0.5)  # they have all been accepted and are holding on
            for index in range(5):
                status, seconds = signed_call(base, f"CA{index:032x}")
                assert status == 200
                assert seconds < ANSWER_WITHIN_SECONDS, f"a webhook waited {seconds:.1f} s behind slow clients"
            if trickle:
                # The body read is bounded: each trickler is answered 408 and its thread set free.
                answers = slow.read_answers(timeout=10)
                assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:3]
        finally:
            slow.close()


@contextlib.contextmanager
def silent_proxy():
    """An HTTPS proxy that accepts connections and never answers: Twilio is unreachable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for sock in held:
            sock.close()
        listener.close()


def test_api_handoffs_waiting_on_twilio_do_not_take_the_webhooks_place(tmp_path, config_path):
    add_assistant_number(config_path)
    with silent_proxy() as proxy, gunicorn_as_in_the_procfile(
        tmp_path, config_path, HTTPS_PROXY=proxy, https_proxy=proxy, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"
    ) as (base, _port):
        # Live calls an assistant answers first: each can be handed off through the API.
        conversation_ids = []
        for index in range(SLOW_CLIENTS):
            call_sid = f"CA{index + 100:032x}"
            assert signed_call(base, call_sid, to=ASSISTANT_NUMBER)[0] == 200
            listed = urllib.request.urlopen(urllib.request.Request(
                f"{base}/v1/acme/frontdesk/conversations?call_sid={call_sid}", headers={"x-api-key": CONFIG_KEY}))
            conversation_ids.append(json.loads(listed.read())["items"][0]["id"])

        def hand_off(conversation_id: str) -> int:
            request = urllib.request.Request(
                f"{base}/v1/acme/frontdesk/conversations/{conversation_id}/handoff", data=b"{}", method="POST",
                headers={"x-api-key": CONFIG_KEY, "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        with ThreadPoolExecutor(SLOW_CLIENTS) as pool:
            waiting = [pool.submit(hand_off, conversation_id) for conversation_id in conversation_ids]
            time.sleep(1.0)  # every handoff is now waiting on Twilio
            assert not any(future.done() for future in waiting)
            for index in range(5):
                status, seconds = signed_call(base, f"CA{index + 500:032x}")
                assert status == 200
                assert seconds < ANSWER_WITHIN_SECONDS, f"a webhook waited {seconds:.1f} s behind API calls"
            assert [future.result() for future in waiting] == [502] * SLOW_CLIENTS  # twilio_unreachable
