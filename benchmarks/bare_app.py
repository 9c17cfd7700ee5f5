"""The baseline for benchmarks/webhook_throughput.py: Flask answering a fixed TwiML, nothing else."""
from flask import Flask, Response

app = Flask(__name__)

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hello</Say></Response>'


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/voice/call")
def call():
    return Response(TWIML, mimetype="text/xml")
