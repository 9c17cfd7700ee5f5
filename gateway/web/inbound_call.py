"""`POST /voice/call` answered in front of Flask: every call starts here, so it skips the framework.

Flask's request context, routing, teardown and form parsing cost about as much as answering a
call does (docs/performance.md). This plain WSGI callable handles the one request every call
makes, with the same signature check (gateway/web/signature.py), use case, storage and
fail-open as the Flask view, and counts it in the same metrics and log context. Anything that
is not a plain, valid Twilio form for a configured number — a refusal, an unknown number, a
body too large or of another type, any other path — falls through to Flask unchanged, so
every refusal and error answer still comes from one place: the voice blueprint.
"""
from __future__ import annotations

import io
import logging
import time
from urllib.parse import parse_qsl

from flask import Flask
from werkzeug.datastructures import MultiDict

from gateway.infra import jsonlog, metrics
from gateway.voice import calls
from gateway.voice.callflow import CALL_FIELDS, CallFlow, InboundCall
from gateway.voice.twiml import NO_AGENT_APOLOGY, Links
from gateway.web.signature import base_url_of, missing_fields, signature_refusal

log = logging.getLogger(__name__)

PATH = "/voice/call"
FORM = "application/x-www-form-urlencoded"


class _Form(MultiDict):
    """The call's form, read without an exception per absent field.

    twilio's validator asks every field for `getall` before `getlist` (an AttributeError each
    on a MultiDict), and MultiDict.get builds an HTTP 400 exception for every absent field it is
    asked for (the optional `SipHeader_X-Shared-Id`, the twins' checks).
    """

    getall = MultiDict.getlist

    def get(self, key, default=None, type=None):  # noqa: A002 - MultiDict's own signature
        if type is None and dict.__contains__(self, key):
            return dict.__getitem__(self, key)[0]
        return default if type is None else super().get(key, default, type)


class InboundCallEndpoint:
    """Wraps the Flask app's WSGI callable: `app.wsgi_app = InboundCallEndpoint(app, app.wsgi_app)`."""

    def __init__(self, app: Flask, fall_through) -> None:
        self.app = app
        self.fall_through = fall_through
        self.max_body = app.config["MAX_CONTENT_LENGTH"]
        self.max_fields = app.config["MAX_FORM_PARTS"]
        self.gateway = app.extensions["gateway"]
        self.metrics = app.extensions["metrics"]
        self.latency = self.metrics.request_latency.labels(route=PATH, method="POST")

    def __call__(self, environ: dict, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.fall_through(environ, start_response)
        started = time.perf_counter()
        body = self._body(environ)
        answer = self._answer(environ, body) if body is not None else None
        if answer is None:
            if body is not None:
                environ["wsgi.input"] = io.BytesIO(body)  # Flask reads the same bytes again
            return self.fall_through(environ, start_response)
        if not environ.get(metrics.UNCOUNTED):
            self.latency.observe(time.perf_counter() - started)
        payload = answer.encode()
        start_response("200 OK", [("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", str(len(payload)))])
        return [payload]

    def _body(self, environ: dict) -> bytes | None:
        """The form's bytes, or None to leave the request (chunked, too large, not a form) to Flask."""
        if environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() != FORM:
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 <= length <= self.max_body:
            return None
        return environ["wsgi.input"].read(length)

    def _answer(self, environ: dict, body: bytes) -> str | None:
        """The TwiML for a valid call to a configured number; None for anything Flask must answer."""
        gateway = self.gateway
        if gateway.validator is None:
            return None
        try:
            form = _Form(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=self.max_fields))
        except ValueError:  # not UTF-8, or too many fields: Flask's parser gives the answer
            return None
        base_url = base_url_of(gateway, environ)
        query = environ.get("QUERY_STRING", "")
        url = base_url + PATH + (f"?{query}" if query else "")
        if signature_refusal(gateway, url, form, environ.get("HTTP_X_TWILIO_SIGNATURE", "")) or missing_fields(
            form, CALL_FIELDS
        ):
            return None
        inbound = InboundCall.from_twilio(form)
        route = gateway.config.route_for(inbound.to_number)
        if route is None:
            return None
        flow = CallFlow(gateway.renderer, Links(base_url))
        jsonlog.clear()
        jsonlog.bind(method="POST", path=PATH, call_sid=inbound.call_sid)
        metrics.activate(None if environ.get(metrics.UNCOUNTED) else self.metrics)
        try:
            return calls.take_call(gateway, route, inbound, flow)
        except Exception:  # even the fail-open answer failed: an answer that needs nothing
            log.exception("unexpected error on %s; answering plainly", PATH)
            return gateway.renderer.apology(NO_AGENT_APOLOGY)
        finally:
            metrics.activate(None)
            jsonlog.clear()
