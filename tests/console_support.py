"""Signing in to the console from Flask's test client, and reading what its pages show.

Also a pytest plugin (see conftest.py): `console_app` (the gateway with the console on) and
`operator` (a client signed in to it); a module may override `console_app` with its own.
"""
from __future__ import annotations

import contextlib
import html
import re
import threading

import pytest
from werkzeug.datastructures import MultiDict

from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

PASSWORD = "correct horse battery staple"
#: A cheap hash keeps the tests fast; the console accepts any werkzeug hash method.
PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


def csrf_of(client) -> str:
    with client.session_transaction("/console/") as session:
        if "csrf_token" not in session:
            session["csrf_token"] = "test-csrf-token"
        return session["csrf_token"]


def project_of(client) -> str:
    """The project this session's pages show (the config's first until one is chosen)."""
    with client.session_transaction("/console/") as session:
        chosen = session.get("project", "")
    config = client.application.extensions["gateway"].config
    return (config.project_by_key(chosen) or config.projects[0]).key


def post_form(client, path: str, data=None, **kwargs):
    """POST a console form with this session's CSRF token and, unless `data` names another, the
    project of the page it came from, as the browser would."""
    data = list((data or {}).items()) if isinstance(data, dict) else list(data or [])
    data.append(("csrf_token", csrf_of(client)))
    if "page_project" not in dict(data):
        data.append(("page_project", project_of(client)))
    return client.post(path, data=MultiDict(data), **kwargs)


def sign_in(client, password: str = PASSWORD):
    client.get("/console/login")
    return post_form(client, "/console/login", {"password": password})


def text_of(response) -> str:
    """The page as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", response.get_data(as_text=True), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def field_error(response, field: str) -> str | None:
    match = re.search(rf'<p class="field-error" id="{field}-error"[^>]*>(.*?)</p>', response.get_data(as_text=True), re.S)
    return html.unescape(match.group(1)).strip() if match else None


@contextlib.contextmanager
def serve(app):
    """Serve the app on a free loopback port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def console_app(make_app):
    return make_app(console_password_hash=PASSWORD_HASH)


@pytest.fixture
def operator(console_app):
    client = console_app.test_client()
    assert sign_in(client).status_code == 302
    return client
