"""What one running gateway holds: built once by the app factory, shared by every request."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from gateway.storage import schema
from gateway.config.file import GatewayConfig
from gateway.texting.messaging import CampaignCache
from gateway.settings import Settings
from gateway.storage.sign_in_throttle import SignInThrottle
from gateway.voice.spool import Spool
from gateway.voice.twiml import TwimlRenderer


@dataclass
class Gateway:
    settings: Settings
    config: GatewayConfig
    engine: Engine
    renderer: TwimlRenderer
    #: None when TWILIO_AUTH_TOKEN is missing: webhooks then answer 503, never pass unchecked.
    validator: RequestValidator | None
    #: None without TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN: REST actions answer 503.
    twilio: Client | None
    #: A2P 10DLC campaign statuses read from Twilio, kept a few minutes.
    campaigns: CampaignCache = field(default_factory=CampaignCache)
    #: What the voice webhooks could not store while the database was down (gateway/voice/call_records.py).
    spool: Spool | None = None
    #: Wrong console passwords per address, so the shared password cannot be guessed at speed.
    sign_in_throttle: SignInThrottle = field(default_factory=SignInThrottle)
    #: False until the schema is known to be at head: the database was down or behind at start.
    schema_ready: bool = False

    def ensure_schema(self) -> None:
        """Check the schema once (making the tables of an empty database): at start-up, or on
        first use if the database was down or behind then.

        Raises the database's error while it is unreachable, and schema.DatabaseBehind while it
        is behind; both are OperationalErrors, on which the webhooks fail open.
        """
        if not self.schema_ready:
            schema.check(self.engine)
            self.schema_ready = True
