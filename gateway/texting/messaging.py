"""SMS policy: which senders may text (A2P 10DLC), who opted out, what Twilio's errors mean, sending.

No Flask here: the blueprints pass an `Outbox` (the Twilio client, the campaign cache and the
status callback URL); a refused send raises GatewayError, which the web layer answers.
"""
from __future__ import annotations

import json
import logging
import textwrap
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import requests
from sqlmodel import Session
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from gateway.infra import metrics
from gateway.storage import message_store
from gateway.texting import chat
from gateway.config.file import NumberConfig, NumberRoute, ProjectConfig
from gateway.config.destinations import E164, Destination
from gateway.errors import GatewayError
from gateway.storage.models import Conversation, SmsMessage

log = logging.getLogger(__name__)

#: Twilio's limit for one message body (it splits longer texts into segments up to this).
MAX_BODY_LENGTH = 1600
#: At most this many <Message>s answer one text; a longer reply is cut (`message_parts`).
MAX_REPLY_PARTS = 4
#: How long a campaign status read from Twilio is trusted before asking again.
CAMPAIGN_CACHE_SECONDS = 300.0

TOLL_FREE_PREFIXES = ("800", "833", "844", "855", "866", "877", "888")

#: Twilio's standard opt-out, opt-in and help keywords (the whole message, any case).
OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})
DEFAULT_HELP_TEXT = "Reply STOP to stop receiving messages, START to receive them again."

#: Twilio's error codes in words a person can act on. Explained, never branched on (but 21610).
ERROR_EXPLANATIONS = {
    21211: "The To number is not a valid phone number; send it in E.164 form, e.g. +14155550123.",
    21408: "Texts to this country are not enabled on the account; allow it in the Twilio Console "
    "under Messaging > Settings > Geo permissions.",
    21606: "The From number is not an SMS-capable number of this Twilio account.",
    21610: "The recipient texted STOP to this sender; nothing can be sent until they text START.",
    21614: "The To number is not a mobile number and cannot receive texts.",
    30003: "The recipient's phone is unreachable (off, out of coverage or unable to take texts); try later.",
    30005: "The recipient's number is unknown to its carrier or no longer in service; check the number.",
    30006: "The number is a landline or its carrier cannot take texts; use a mobile number or call.",
    30007: "The carrier filtered the message as spam or unwanted; review the content and the sender's "
    "A2P 10DLC or toll-free registration.",
    30008: "The carrier reported an unknown error; retry later, and give Twilio support the message SID "
    "if it keeps happening.",
    30032: "The toll-free sender is not verified; finish toll-free verification in the Twilio Console.",
    30034: "The sender is a US 10DLC number not registered for A2P 10DLC, so carriers block it; "
    "register a brand and campaign and add the number to the campaign's messaging service.",
}


def explain(error_code: int | None) -> str | None:
    if error_code is None:
        return None
    return ERROR_EXPLANATIONS.get(error_code, f"Twilio error {error_code}; see https://www.twilio.com/docs/api/errors/{error_code}")


# --- numbers and A2P 10DLC ------------------------------------------------------------------

class NumberKind(Enum):
    US_LONG_CODE = "us_long_code"
    TOLL_FREE = "toll_free"
    SHORT_CODE = "short_code"
    OTHER = "other"  # outside the North American plan: no 10DLC rules


def classify(number: str) -> NumberKind:
    """Which carrier rules apply to a sender. +1 numbers outside toll-free count as US long codes."""
    if number.isdigit() and 5 <= len(number) <= 6:
        return NumberKind.SHORT_CODE
    if number.startswith("+1") and len(number) == 12 and number[1:].isdigit():
        return NumberKind.TOLL_FREE if number[2:5] in TOLL_FREE_PREFIXES else NumberKind.US_LONG_CODE
    return NumberKind.OTHER


class CampaignCache:
    """A2P campaign statuses per messaging service, asked of Twilio at most every few minutes."""

    def __init__(self, ttl_seconds: float = CAMPAIGN_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._ttl, self._clock = ttl_seconds, clock
        self._answers: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def statuses(self, client: Client, messaging_service_sid: str) -> tuple[str, ...]:
        """The campaign_status of each campaign on the service (usually one, or none)."""
        now = self._clock()
        with self._lock:
            cached = self._answers.get(messaging_service_sid)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        campaigns = client.messaging.v1.services(messaging_service_sid).us_app_to_person.list()
        answer = tuple((campaign.campaign_status or "UNKNOWN").upper() for campaign in campaigns)
        with self._lock:
            self._answers[messaging_service_sid] = (now, answer)
        return answer


_REGISTER_STEP = (
    "register a brand and campaign in the Twilio Console (Messaging > Regulatory compliance > "
    "A2P 10DLC), add the number to the campaign's messaging service, then set "
    'a2p_10dlc = "registered" (or its messaging_service_sid) in the config; a toll-free number '
    "can send meanwhile"
)


def check_a2p_10dlc(sender: NumberConfig, client: Client | None, campaigns: CampaignCache) -> None:
    """Raise a 422 unless the sender may text US carriers (SPEC §5); other senders pass."""
    if classify(sender.number) is not NumberKind.US_LONG_CODE:
        return
    number = sender.number
    if sender.a2p_10dlc == "registered":
        return
    if sender.a2p_10dlc == "pending":
        _refuse_unregistered(
            f"{number}'s A2P 10DLC registration is pending, and carriers block unregistered traffic "
            '(error 30034); once Twilio shows the campaign as verified, set a2p_10dlc = "registered".'
        )
    if sender.a2p_10dlc == "unregistered":
        _refuse_unregistered(f"{number} is a US 10DLC number not registered for A2P 10DLC; {_REGISTER_STEP}.")
    if sender.messaging_service_sid is None:
        _refuse_unregistered(
            f"The config does not say whether {number} is registered for A2P 10DLC; set its a2p_10dlc "
            "(registered, pending or unregistered) or its messaging_service_sid so the gateway can ask Twilio."
        )
    service = sender.messaging_service_sid
    if client is None:
        raise _no_client()
    try:
        statuses = campaigns.statuses(client, service)
    except TwilioException as error:
        code, words = _twilio_failure(error)
        raise GatewayError(
            502,
            "twilio_error",
            f"Could not read the A2P 10DLC campaign of messaging service {service} from Twilio "
            f"({words}); nothing was sent.",
            twilio_code=code,
            explanation=explain(code),
        ) from None
    except requests.RequestException as error:
        raise GatewayError(
            503,
            "twilio_unreachable",
            f"Could not reach Twilio to check the A2P 10DLC campaign of {service} ({type(error).__name__}); "
            "nothing was sent. Try again.",
        ) from None
    if "VERIFIED" in statuses:
        return
    if not statuses:
        _refuse_unregistered(f"Messaging service {service} of {number} has no A2P 10DLC campaign; {_REGISTER_STEP}.")
    _refuse_unregistered(
        f"The A2P 10DLC campaign of messaging service {service} ({number}) is {', '.join(statuses)}, "
        "not VERIFIED; wait for Twilio to verify it, or fix what the Twilio Console reports."
    )


def _twilio_failure(error: TwilioException) -> tuple[int | None, str]:
    """Twilio's error code and words; list pages fail with a bare TwilioException holding the response."""
    if isinstance(error, TwilioRestException):
        return error.code, error.msg
    response = error.args[1] if len(error.args) > 1 else None
    try:
        payload = json.loads(response.text)
        return payload.get("code"), payload.get("message") or str(error.args[0])
    except (AttributeError, TypeError, ValueError):
        return None, str(error.args[0]) if error.args else "unknown error"


def _refuse_unregistered(message: str):
    raise GatewayError(422, "a2p_10dlc_unregistered", message + " Nothing was sent.")


def _no_client() -> GatewayError:
    return GatewayError(
        503,
        "twilio_not_configured",
        "Sending needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the gateway's environment; nothing was sent.",
    )


# --- sending --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outbox:
    """What sending needs from the running gateway."""

    client: Client | None
    campaigns: CampaignCache
    status_callback: str


def choose_sender(project: ProjectConfig, from_number: str | None) -> NumberConfig:
    """The named number of the project, or its first number that the 10DLC rules let send."""
    if from_number is not None:
        sender = next((n for n in project.numbers if n.number == from_number), None)
        if sender is None:
            known = ", ".join(n.number for n in project.numbers) or "none"
            raise GatewayError(400, "invalid_from", f"{from_number} is not a number of this project (its numbers: {known}).")
        return sender
    if not project.numbers:
        raise GatewayError(422, "no_sender", "This project has no Twilio number to send from; add a [[projects.numbers]] entry.")
    return next((n for n in project.numbers if _may_send(n)), project.numbers[0])


def _count_if_refused_by_rule(refusal: GatewayError) -> None:
    """A 422 is a text refused by a rule (opt-out, 10DLC), not a breakage: operators watch this count."""
    if refusal.status == 422:
        metrics.sms_refused(refusal.code)


def reaches_us_carriers(recipient: str) -> bool:
    """A2P 10DLC governs texts to US numbers only. Canada shares +1 and no prefix tells it
    apart, so a +1 recipient is always checked: the check errs on the side of refusing."""
    return recipient.startswith("+1")


def _may_send(number: NumberConfig) -> bool:
    """Can send as far as the config tells; the first number's refusal explains the rest."""
    if classify(number.number) is not NumberKind.US_LONG_CODE:
        return True
    return number.a2p_10dlc == "registered" or (number.a2p_10dlc is None and number.messaging_service_sid is not None)


def send_sms(
    session: Session,
    outbox: Outbox,
    project: ProjectConfig,
    *,
    to: str,
    body: str,
    from_number: str | None = None,
    conversation_id: str | None = None,
) -> SmsMessage:
    """Check in SPEC order (the input's sender, opt-out, 10DLC), then send once and keep the message
    (committed). The input's shape is checked before: the API's by its `SmsRequest` body, and a
    handoff note is made to fit.

    Nothing is written before Twilio answers, so no lock is held while it is asked.
    """
    try:
        sender = choose_sender(project, from_number)
        if message_store.is_opted_out(session, project.key, to):
            raise GatewayError(
                422,
                "recipient_opted_out",
                f"{to} texted STOP to this project, so nothing was sent; they must text START to receive texts again.",
            )
        if reaches_us_carriers(to):
            check_a2p_10dlc(sender, outbox.client, outbox.campaigns)
    except GatewayError as refusal:
        _count_if_refused_by_rule(refusal)
        raise
    if outbox.client is None:
        raise _no_client()
    try:
        sent = outbox.client.messages.create(
            to=to, from_=sender.number, body=body, status_callback=outbox.status_callback
        )
    except TwilioRestException as error:
        if error.code == 21610:  # Twilio knows of a STOP we missed: remember it
            message_store.opt_out(session, project.key, to, keyword="twilio_21610")
            session.commit()
        raise GatewayError(
            422 if error.status == 400 else 502,
            "twilio_error",
            f"Twilio refused the message (error {error.code}): {explain(error.code) or error.msg}",
            twilio_code=error.code,
            explanation=explain(error.code),
        ) from None
    except requests.RequestException as error:
        raise _network_error(error) from None
    message = message_store.add_outbound(
        session,
        sid=sent.sid,
        project_key=project.key,
        conversation_id=conversation_id,
        from_number=sender.number,
        to_number=to,
        body=body,
        status=sent.status or "queued",
        error_code=sent.error_code,
    )
    session.commit()
    return message


def _network_error(error: requests.RequestException) -> GatewayError:
    """Only a failure to connect proves nothing reached Twilio; anything later might have sent it."""
    if _never_connected(error):
        return GatewayError(
            503,
            "twilio_unreachable",
            f"Could not connect to Twilio ({type(error).__name__}), even after retrying; nothing was sent. Try again.",
        )
    return GatewayError(
        504,
        "twilio_no_answer",
        f"Twilio did not answer ({type(error).__name__}). The message may have been sent, so it was not "
        "retried (that could send it twice); check Twilio's message log before sending it again.",
    )


def _never_connected(error: requests.RequestException) -> bool:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


# --- inbound texts --------------------------------------------------------------------------

class Keyword(Enum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


def keyword_of(body: str) -> Keyword | None:
    """A keyword counts only as the whole message (any case, spaces and end punctuation aside)."""
    word = " ".join(body.split()).strip(".!?,;:'\" ").upper()
    if word in OPT_OUT_WORDS:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    if word in HELP_WORDS:
        return Keyword.HELP
    return None


@dataclass(frozen=True)
class Media:
    """A picture or file sent with a text: Twilio keeps it, behind the account's credentials."""

    url: str
    content_type: str


@dataclass(frozen=True)
class InboundSms:
    sid: str
    from_number: str
    to_number: str
    body: str
    media: tuple[Media, ...] = ()

    @property
    def text(self) -> str:
        """The customer's line of the thread: the body, then a line per attachment, so a
        picture sent without words is a turn like any other and an operator can find it."""
        lines = [self.body] if self.body.strip() else []
        for index, item in enumerate(self.media):
            line = f"[media {item.content_type or 'unknown type'}: {item.url}]"
            left = len(self.media) - index
            # Twilio's 1,600 characters and ten long URLs can outgrow a chat message: the customer's
            # words must never be refused for the sake of the links.
            if sum(map(len, lines)) + len(lines) + len(line) + len("\n[99 more attachments]") > chat.MAX_MESSAGE_LENGTH:
                lines.append(f"[{left} more attachment{'s' if left > 1 else ''}]")
                break
            lines.append(line)
        return "\n".join(lines)


@dataclass
class InboundResult:
    """The texts to answer with in TwiML (none: an empty <Response/>)."""

    replies: list[str] = field(default_factory=list)
    conversation: Conversation | None = None


def handle_inbound(session: Session, outbox: Outbox, route: NumberRoute, sms: InboundSms) -> InboundResult:
    """STOP/START/HELP first; any other text is a turn of the customer's SMS thread. Committed.

    A reply goes back as TwiML, which Twilio sends from the number that was texted: to a US
    number, only when that number passes the A2P 10DLC check any send passes (carriers block
    the rest, error 30034). Otherwise the turn and any handoff are kept and the reply is not
    sent: the refusal is logged and counted, as an API send's would be.
    """
    result = _handle_inbound(session, outbox, route, sms)
    session.commit()
    result.replies = [part for reply in result.replies for part in message_parts(reply)]
    if result.replies and reaches_us_carriers(sms.from_number):
        try:
            check_a2p_10dlc(route.number, outbox.client, outbox.campaigns)
        except GatewayError as refusal:
            log.warning("SMS %s: no reply from %s to %s: %s", sms.sid, sms.to_number, sms.from_number, refusal.message)
            _count_if_refused_by_rule(refusal)
            result.replies = []
    return result


def message_parts(text: str) -> list[str]:
    """A reply cut into bodies Twilio takes (a longer <Message> is refused whole, error 21617):
    at whitespace where there is some, in order, each line break kept; at most MAX_REPLY_PARTS,
    the last ending in "…" when the reply is longer (each part is paid for, and an assistant
    that answers a novel should not text one)."""
    if len(text) <= MAX_BODY_LENGTH:
        return [text]
    parts = textwrap.wrap(text, MAX_BODY_LENGTH, expand_tabs=False, replace_whitespace=False, break_on_hyphens=False)
    if len(parts) > MAX_REPLY_PARTS:
        parts = parts[:MAX_REPLY_PARTS]
        parts[-1] = parts[-1][: MAX_BODY_LENGTH - 1] + "…"
    return parts


def _handle_inbound(session: Session, outbox: Outbox, route: NumberRoute, sms: InboundSms) -> InboundResult:
    project = route.project
    if not message_store.record_inbound(
        session,
        sid=sms.sid,
        project_key=project.key,
        from_number=sms.from_number,
        to_number=sms.to_number,
        body=sms.body,
    ):
        log.info("SMS %s was already handled (Twilio retried); answering nothing", sms.sid)
        return InboundResult()
    keyword = keyword_of(sms.body)
    if keyword is Keyword.OPT_OUT:
        # Twilio confirms the opt-out itself and would block any reply of ours (21610).
        message_store.opt_out(session, project.key, sms.from_number, keyword=" ".join(sms.body.split()).upper()[:20])
        log.info("%s opted out of %s's texts", sms.from_number, project.key)
        return InboundResult()
    if keyword is Keyword.OPT_IN:
        message_store.opt_in(session, project.key, sms.from_number)  # Twilio sends the confirmation
        log.info("%s opted back in to %s's texts", sms.from_number, project.key)
        return InboundResult()
    if keyword is Keyword.HELP:
        return InboundResult([project.sms_help_text or DEFAULT_HELP_TEXT])
    if message_store.is_opted_out(session, project.key, sms.from_number):
        log.info("SMS %s from opted-out %s: kept, not answered", sms.sid, sms.from_number)
        return InboundResult()

    conversation = message_store.open_thread(session, project.key, sms.from_number, sms.to_number)
    message_store.link_message(session, sms.sid, conversation.id)
    if conversation.state is not None:
        message_store.add_chat_message(session, conversation, role="customer", text=sms.text)
        log.info("SMS %s joins handed-off conversation %s; the agent answers, not us", sms.sid, conversation.id)
        return InboundResult(conversation=conversation)
    try:
        turn = chat.respond(session, project, conversation, sms.text)
    except GatewayError as error:
        log.warning("SMS conversation %s: %s; apologising", conversation.id, error.message)
        return InboundResult([chat.APOLOGY], conversation)
    if turn.handoff is not None:
        notify_destination(session, outbox, project, conversation, turn.handoff, sender=sms.to_number, last_message=sms.text)
    return InboundResult([turn.response], conversation)


def notify_destination(
    session: Session,
    outbox: Outbox,
    project: ProjectConfig,
    conversation: Conversation,
    destination: Destination,
    *,
    sender: str,
    last_message: str,
) -> SmsMessage | None:
    """Text a phone-number destination who is waiting and why; any failure is logged, not raised."""
    if not destination.route or not E164.match(destination.route):
        return None
    note = (
        f"Handoff: SMS customer {conversation.from_number} needs {destination.name}"
        f" ({conversation.reason or 'no reason given'}). Conversation {conversation.id}."
        f' Last message: "{last_message}"'
    )[:MAX_BODY_LENGTH]
    try:
        return send_sms(
            session, outbox, project, to=destination.route, body=note, from_number=sender, conversation_id=conversation.id
        )
    except GatewayError as error:
        log.warning(
            "conversation %s: could not text %s (%s) about the handoff: %s",
            conversation.id,
            destination.name,
            destination.route,
            error.message,
        )
        return None
