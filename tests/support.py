"""Shared test material: the test config, Twilio request signing, and TwiML comparison."""
from __future__ import annotations

import hashlib
import shutil
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from twilio.request_validator import RequestValidator

from gateway.storage.store import make_engine

CHECKOUT = Path(__file__).resolve().parent.parent
#: What a clean clone would not hold: local state and build output (for copies of the checkout).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", "spool", "*.db*", ".env",
    ".pytest_cache", "gateway.toml",
)

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
BASE_URL = "http://localhost"

CONFIG_KEY = "config-file-key-for-acme"
CONFIG_KEY_SHA256 = hashlib.sha256(CONFIG_KEY.encode()).hexdigest()

ACME = "ws-acme/PROJECT-frontdesk"

#: Keys of the texting projects (SMS and chat tests): one without an assistant, one with.
TEXTING_KEY = "config-file-key-for-initech-texting"
BOT_KEY = "config-file-key-for-initech-bot"
MESSAGING_SERVICE_SID = "MG" + "a" * 32
ASSISTANT_URL = "https://bot.initech.test/chat"

CONFIG_TOML = f"""
[[projects]]
account_id = "ws-acme"
project_id = "PROJECT-frontdesk"
default_destination = "Front desk"
max_attempts = 3
sip_domain = "pbx.acme.test"
api_key_sha256 = ["{CONFIG_KEY_SHA256}"]
sms_help_text = "Acme support. Reply STOP to opt out."

[[projects.destinations]]
name = "Front desk"
description = "Operators"
method = "invite"
route = "+14155550100"
timeout = 20
utterance = "Let me transfer you to someone who can help."
reason = "needs_human"
handoff_keywords = ["agent", "human"]

[[projects.destinations]]
name = "Extension desk"
method = "invite"
route = "+14155550101;ext=1234"

[[projects.destinations]]
name = "Billing"
method = "invite"
route = "sip:billing@pbx.acme.test"
timeout = 25
reason = "billing_question"
sip_headers = {{ "X-Caller-ID" = "$caller_id", "X-Reason" = "$reason", "X-Account" = "$account_number" }}

[[projects.destinations]]
name = "Tier 2"
method = "refer"
route = "2001"
sip_headers = {{ "X-Topic" = "$topic", "X-Called" = "$called_number" }}

[[projects.destinations]]
name = "Secure desk"
method = "refer"
route = "sips:desk@pbx.acme.test;transport=tls"

[[projects.destinations]]
name = "SBC"
method = "bye"
utterance = "Returning you to the main line."
sip_headers = {{ "X-Handoff-Reason" = "$reason", "X-Call" = "$call_sid" }}

[[projects.numbers]]
number = "+14155550199"
destination = "Front desk"
fallback = ["Billing"]
a2p_10dlc = "registered"

[[projects.numbers]]
number = "+14155550198"
destination = "Extension desk"

[[projects.numbers]]
number = "+14155550197"
destination = "Billing"
fallback = ["Tier 2", "Secure desk"]

[[projects.numbers]]
number = "+14155550196"
destination = "Tier 2"

[[projects.numbers]]
number = "+14155550195"
destination = "SBC"

[[projects.numbers]]
number = "+14155550194"
destination = "Secure desk"

[[projects]]
account_id = "ws-globex"
project_id = "PROJECT-support"
default_destination = "Desk"

[[projects.destinations]]
name = "Desk"
method = "invite"
route = "+14155550200"

[[projects.numbers]]
number = "+14155550299"
destination = "Desk"
a2p_10dlc = "registered"  # so its SMS replies may go out

[[projects]]
account_id = "ws-initech"
project_id = "PROJECT-texting"
default_destination = "Agents"
api_key_sha256 = ["{hashlib.sha256(TEXTING_KEY.encode()).hexdigest()}"]
sms_help_text = "Initech texting. Reply STOP to opt out."

[[projects.destinations]]
name = "Agents"
method = "invite"
route = "+14155550300"
utterance = "Connecting you with an agent; they will text you shortly."
reason = "customer_asked"
handoff_keywords = ["agent", "talk to a person"]

[[projects.destinations]]
name = "Billing desk"
method = "invite"
route = "sip:billing@pbx.initech.test"
handoff_keywords = ["invoice"]

[[projects.numbers]]
number = "+14155550399"
destination = "Agents"
a2p_10dlc = "registered"

[[projects.numbers]]
number = "+14155550398"
destination = "Agents"
a2p_10dlc = "unregistered"

[[projects.numbers]]
number = "+14155550397"
destination = "Agents"
a2p_10dlc = "pending"

[[projects.numbers]]
number = "+14155550396"
destination = "Agents"
messaging_service_sid = "{MESSAGING_SERVICE_SID}"

[[projects.numbers]]
number = "+14155550395"
destination = "Agents"

[[projects.numbers]]
number = "+18885550399"
destination = "Agents"

[[projects.numbers]]
number = "+447700900399"
destination = "Agents"

[[projects]]
account_id = "ws-initech"
project_id = "PROJECT-bot"
default_destination = "Agents"
api_key_sha256 = ["{hashlib.sha256(BOT_KEY.encode()).hexdigest()}"]
assistant_webhook = "{ASSISTANT_URL}"

[[projects.destinations]]
name = "Agents"
method = "invite"
route = "+14155550400"
reason = "needs_human"
utterance = "An agent will text you in a moment."

[[projects.destinations]]
name = "Refunds"
method = "invite"
route = "sip:refunds@pbx.initech.test"
reason = "refund"

[[projects.numbers]]
number = "+14155550499"
destination = "Agents"

[[projects.numbers]]
number = "+18885550499"
destination = "Agents"
"""

#: The same with a file destination "sales" first in acme/frontdesk (a name a stored "Sales" may hold).
CONFIG_WITH_SALES = CONFIG_TOML.replace(
    "[[projects.destinations]]",
    '[[projects.destinations]]\nname = "sales"\nmethod = "invite"\nroute = "+14155550112"\n\n[[projects.destinations]]',
    1,
)


def sign(url: str, params: dict, token: str = AUTH_TOKEN) -> str:
    """The X-Twilio-Signature Twilio would send, computed by twilio's own validator."""
    return RequestValidator(token).compute_signature(url, params)


def call_params(call_sid: str = "CA" + "1" * 32, to: str = "+14155550199", **extra) -> dict:
    """The form Twilio posts to the voice webhook for an inbound call."""
    params = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": "+14155551234",
        "To": to,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    params.update(extra)
    # Twilio sends each twice, under a second name (see gateway/web/signature.py).
    params.setdefault("Called", params["To"])
    params.setdefault("Caller", params["From"])
    return params


def post_signed(client, path: str, params: dict, *, base_url: str = BASE_URL, token: str = AUTH_TOKEN, headers=None):
    """POST a form as Twilio would, signed for `base_url + path`."""
    all_headers = {"X-Twilio-Signature": sign(base_url + path, params, token)}
    all_headers.update(headers or {})
    return client.post(path, data=params, headers=all_headers)


def canonical(xml_text: str | bytes) -> str:
    """Compare TwiML by meaning: attribute order and the XML declaration do not matter."""
    if isinstance(xml_text, bytes):
        xml_text = xml_text.decode()
    return ET.canonicalize(xml_data=xml_text, strip_text=True)


def same_twiml(ours: str | bytes, reference) -> bool:
    return canonical(ours) == canonical(str(reference))


def twiml_root(xml_text: str | bytes) -> ET.Element:
    return ET.fromstring(xml_text)


ASSISTANT_NUMBER = "+14155550193"


def add_assistant_number(config_path) -> None:
    """Add a number that an assistant answers first (<Connect><Stream>) to a test config file."""
    marker = '[[projects.numbers]]\nnumber = "+14155550194"'
    config_path.write_text(
        config_path.read_text().replace(
            marker,
            f'[[projects.numbers]]\nnumber = "{ASSISTANT_NUMBER}"\nassistant_url = "wss://bot.acme.test/stream"\n\n{marker}',
        )
    )


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_database_unreachable(app, database_url: str, tmp_path) -> None:
    """Point a running app at a database that cannot answer: a missing folder, or a closed port."""
    gateway = app.extensions["gateway"]
    gateway.engine.dispose()
    if database_url.startswith("sqlite"):
        gateway.engine = make_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'gateway.db'}")
    else:
        gateway.engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/gateway")
