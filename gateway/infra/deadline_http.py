"""HTTP POSTs whose answer has a deadline in all, not only a timeout on each socket read.

requests' read timeout bounds each read from the socket, so a server that trickles its answer
(a byte every few seconds) is never cut off and holds the caller for as long as it likes. Here
a timer shuts the connection's socket once the answer is late: the blocked read ends at once,
and the caller gets `requests.Timeout` as for any other timeout. Each POST opens its own
connection, so the socket the timer shuts is always the one of this POST.
"""
from __future__ import annotations

import socket
import threading

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: The deadline of the POST the current thread is making (connections are made on its thread).
_current = threading.local()


class _Deadline:
    """Shuts a socket `seconds` after it connected, unless cancelled first."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False
        self._timer: threading.Timer | None = None

    def watch(self, sock: socket.socket) -> None:
        self.cancel()  # one timer a POST, even if its connection were made again
        self._timer = threading.Timer(self.seconds, self._cut, args=(sock,))
        self._timer.daemon = True
        self._timer.start()

    def _cut(self, sock: socket.socket) -> None:
        self.passed = True
        try:
            # socket.socket's own shutdown, under TLS too: it ends a read blocked in another thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the answer came in time after all

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Watched:
    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        deadline = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)  # type: ignore[attr-defined]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_WATCHED_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        """Through $HTTP(S)_PROXY too: requests makes its own pools for a proxy, and a trickling
        answer through unwatched ones held the worker as before. (A SOCKS proxy's pools are its
        own classes; its answers keep requests' per-read timeout only.)"""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def post(url: str, *, data: bytes, headers: dict[str, str], connect_seconds: float, answer_seconds: float) -> requests.Response:
    """POST without following redirects; the answer's status line and headers, its body unread.

    Raises requests.Timeout when connecting takes over `connect_seconds` or the answer (status
    line and headers, from the moment the connection is made) over `answer_seconds` in all;
    other requests exceptions as requests raises them. The body is never read: a receiver
    cannot make the caller hold an endless or huge one in memory.
    """
    deadline = _Deadline(answer_seconds)
    _current.deadline = deadline
    try:
        with requests.Session() as session:
            session.mount("http://", _Adapter())
            session.mount("https://", _Adapter())
            response = session.post(
                url, data=data, headers=headers, timeout=(connect_seconds, answer_seconds), stream=True, allow_redirects=False
            )
            response.close()
    except requests.RequestException:
        if not deadline.passed:
            raise
    finally:
        deadline.cancel()
        _current.deadline = None
    # Checked after a "successful" answer too: http.client reads a cut connection as the end of the headers.
    if deadline.passed:
        raise requests.Timeout(f"no answer within {answer_seconds:g} s")
    return response
