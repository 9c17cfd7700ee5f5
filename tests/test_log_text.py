"""Values that come from request headers (or the path) never forge or hide log text."""
from __future__ import annotations

import io
import json
import logging
import sys
import unicodedata

import pytest

from gateway.infra import jsonlog
from gateway.web.logcontext import json_handler
from tests.console_support import PASSWORD_HASH, sign_in
from tests.support import call_params, post_signed

#: A forged next line, an ANSI colour that would hide text, a right-to-left override, a tag character.
HOSTILE = ["\r\n{\"level\": \"INFO\", \"message\": \"forged\"}", "\x1b[8m", "\u202e", "\U000e0041", "\x85", "\u2028"]


#: HTTP clients (Werkzeug's test client among them) refuse a raw line break in a header.
IN_A_HEADER = [hostile for hostile in HOSTILE if "\n" not in hostile]


def raw_characters(text: str) -> set[str]:
    return {ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\n"}


@pytest.fixture
def json_lines(app):
    """What the gateway's own JSON handler writes while the test runs."""
    stream = io.StringIO()
    handler = json_handler(app.extensions["gateway"].settings.auth_token, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.mark.parametrize("hostile", IN_A_HEADER)
def test_a_hostile_host_header_is_logged_escaped(client, caplog, json_lines, hostile):
    caplog.set_level(logging.WARNING)
    response = post_signed(client, "/voice/call", call_params(), headers={"Host": "localhost" + hostile})
    assert response.status_code == 403
    text_logs = [record.getMessage() for record in caplog.records if "refused /voice/call" in record.getMessage()]
    assert text_logs and all(not raw_characters(message) and "\n" not in message for message in text_logs)
    lines = json_lines.getvalue().splitlines()
    assert lines and not raw_characters(json_lines.getvalue())
    assert all(json.loads(line)["level"] in ("WARNING", "ERROR", "INFO") for line in lines)
    assert not any(json.loads(line)["message"] == "forged" for line in lines)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_path_is_logged_escaped(client, caplog, json_lines, hostile):
    caplog.set_level(logging.WARNING)
    path = "/voice/call" + hostile
    client.post(path, data=call_params())
    for record in caplog.records:
        assert not raw_characters(record.getMessage()) and "\n" not in record.getMessage()
    assert not raw_characters(json_lines.getvalue())
    for line in json_lines.getvalue().splitlines():
        json.loads(line)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_forwarded_address_is_logged_and_counted_escaped(make_app, caplog, hostile):
    caplog.set_level(logging.WARNING)
    app = make_app(console_password_hash=PASSWORD_HASH, trusted_proxies=1)
    client = app.test_client()
    client.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.9" + hostile
    assert sign_in(client, password="guess").status_code == 401
    refused = [r.getMessage() for r in caplog.records if "console sign-in refused" in r.getMessage()]
    assert refused and not raw_characters(refused[0]) and "\n" not in refused[0]
    if "," not in hostile:  # ProxyFix takes the last of a comma-separated list
        assert "203.0.113.9" + hostile.encode("unicode_escape").decode() in refused[0]


def test_the_unsafe_set_is_unicodes_controls_formats_and_separators():
    unsafe = {chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp")}
    assert {ch for ch in map(chr, range(sys.maxunicode + 1)) if jsonlog.printable(ch) != ch} == unsafe
