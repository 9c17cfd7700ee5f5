"""The one place a Twilio REST client is made: credentials from settings, bounded timeouts."""
from __future__ import annotations

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from gateway.settings import Settings

#: Connection failures (nothing reached Twilio) are retried; a sent request never is.
CONNECT_RETRIES = 2


def make_client(settings: Settings) -> Client | None:
    """A client for REST calls, or None when the account SID or auth token is missing."""
    if not (settings.twilio_account_sid and settings.auth_token):
        return None
    http_client = TwilioHttpClient(timeout=settings.twilio_timeout_seconds, max_retries=CONNECT_RETRIES)
    # environment={} keeps TWILIO_REGION / TWILIO_EDGE from silently changing the API host.
    return Client(
        settings.twilio_account_sid, settings.auth_token, http_client=http_client, environment={}
    )
