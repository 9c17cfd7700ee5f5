"""How the web layer sends texts: shared by the SMS webhooks and the API (neither imports the other)."""
from __future__ import annotations

from gateway.texting.messaging import Outbox
from gateway.web import current_gateway
from gateway.web.signature import public_base_url


def outbox() -> Outbox:
    """Sending as the running gateway does: its client, its campaign cache, our status callback URL."""
    gateway = current_gateway()
    return Outbox(gateway.twilio, gateway.campaigns, public_base_url() + "/sms/status")
