"""A yardstick for benchmarks/webhook_throughput.py: the least a /voice/call can do and still count.

Issue 6's "quick sketch": Twilio's signature check, one SQLite insert, a fixed TwiML answer.
No config, no routing, no history, no fail-open, no metrics. Its ratio to the bare app shows
how close to the target this machine lets any design that checks and stores each call come.
"""
import os
import sqlite3
import threading
import uuid

from flask import Flask, Response, request
from twilio.request_validator import RequestValidator

DATABASE = os.environ["SKETCH_DATABASE"]
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>+14155550100</Number></Dial></Response>'

app = Flask(__name__)
validator = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])
_connections = threading.local()  # one per thread: gthread workers serve requests in threads

with sqlite3.connect(DATABASE) as setup:
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS calls (id TEXT PRIMARY KEY, call_sid TEXT UNIQUE, caller TEXT)")
setup.close()


def connection() -> sqlite3.Connection:
    """Opened in the thread that uses it (threads only exist after gunicorn forks its workers)."""
    if getattr(_connections, "opened", None) is None:
        _connections.opened = sqlite3.connect(DATABASE, isolation_level=None, timeout=5)
        _connections.opened.execute("PRAGMA synchronous=NORMAL")
    return _connections.opened


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/voice/call")
def call():
    if not validator.validate(request.url, request.form, request.headers.get("X-Twilio-Signature", "")):
        return Response("Invalid Twilio signature.\n", 403)
    connection().execute(
        "INSERT INTO calls VALUES (?, ?, ?)", (str(uuid.uuid4()), request.form["CallSid"], request.form["From"])
    )
    return Response(TWIML, mimetype="text/xml")
