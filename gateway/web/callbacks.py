"""How the web layer hands the call core its renderer and the URLs Twilio will call back on."""
from __future__ import annotations

from gateway.voice.callflow import CallFlow
from gateway.voice.twiml import Links
from gateway.web import current_gateway
from gateway.web.signature import public_base_url


def call_flow() -> CallFlow:
    return CallFlow(current_gateway().renderer, Links(public_base_url()))
