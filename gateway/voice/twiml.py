"""Render `templates_twiml/*.xml` into TwiML text. Jinja autoescaping does all XML escaping.

Every value is also cleared of characters XML cannot carry (gateway/infra/safe_text.py) as it goes
in, whatever its source: a caller's SIP header, an API handoff's utterance, stored data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.voice.routing import Transfer
from gateway.infra.safe_text import xml_legal

#: Inside the package, so an installed wheel carries it; in a checkout it links to the top-level
#: templates_twiml/ folder.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates_twiml"

UNKNOWN_NUMBER_APOLOGY = "Sorry, this number is not set up to take calls yet. Goodbye."
NO_AGENT_APOLOGY = "Sorry, we could not reach an agent right now. Please call again later. Goodbye."


@dataclass(frozen=True)
class Links:
    """Absolute URLs Twilio calls back on, built from the public base URL."""

    base_url: str

    def dial_status(self, conversation_id: str, attempt: int) -> str:
        """The attempt number travels in the URL, so a late result can't fail a newer attempt."""
        return f"{self.base_url}/voice/dial-status?conversation_id={conversation_id}&attempt={attempt}"

    def whisper(self, conversation_id: str) -> str:
        return f"{self.base_url}/voice/whisper?conversation_id={conversation_id}"

    def stream_ended(self, conversation_id: str) -> str:
        return f"{self.base_url}/voice/stream-ended?conversation_id={conversation_id}"


def _xml_legal_value(value):
    return xml_legal(value) if isinstance(value, str) else value


class TwimlRenderer:
    """Templates are compiled once per app: the call path only fills them in."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["xml"], default_for_string=True),
            undefined=StrictUndefined,
            auto_reload=False,
            finalize=_xml_legal_value,
        )
        # Every render copies the environment's globals into its context; the templates use
        # none of Jinja's defaults (range, lipsum, ...), so there is nothing to copy.
        self._env.globals.clear()
        self._templates = {
            name.removesuffix(".xml"): self._env.get_template(name)
            for name in self._env.list_templates(extensions=["xml"])
            if not name.startswith("_")
        }

    def _render(self, name: str, **values) -> str:
        return self._templates[name].render(**values)

    def transfer(self, transfer: Transfer, links: Links, conversation_id: str, attempt: int) -> str:
        """The TwiML for one handoff attempt, per the destination's method (SPEC §4)."""
        common = dict(
            utterance=transfer.utterance,
            timeout=transfer.timeout,
            action_url=links.dial_status(conversation_id, attempt),
        )
        if transfer.method == "bye":
            return self._render("bye", utterance=transfer.utterance, headers=transfer.headers)
        if transfer.method == "refer":
            return self._render("refer", sip_uri=transfer.sip_uri, **common)
        if transfer.route.kind == "number":
            return self._render(
                "dial_number",
                number=transfer.route.target,
                send_digits=transfer.route.send_digits,
                whisper_url=links.whisper(conversation_id),
                **common,
            )
        return self._render("dial_sip", sip_uri=transfer.sip_uri, **common)

    def apology(self, message: str) -> str:
        return self._render("apology", message=message)

    def hangup(self) -> str:
        return self._render("hangup")

    def whisper(self, message: str) -> str:
        return self._render("whisper", message=message)

    def connect_stream(self, stream_url: str, parameters: list[tuple[str, str]], action_url: str) -> str:
        return self._render(
            "connect_stream", stream_url=stream_url, parameters=parameters, action_url=action_url
        )

    def messages(self, texts: list[str]) -> str:
        """An SMS webhook's answer: one <Message> per reply text, or an empty <Response/>."""
        return self._render("sms_reply", texts=texts)
