"""Handoff destinations: their shape and the rules every one must meet.

One set of rules serves the config file, the API and the console, so a destination that is
accepted anywhere can always be dialed.
"""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import quote

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.infra.safe_text import NO_NUL


#: ASCII digits only (Python's \d takes any script's): the API documents and checks it as is.
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
E164 = re.compile(E164_PATTERN)
_E164_WITH_EXTENSION = re.compile(r"^(\+[1-9]\d{1,14});ext=(\d{1,10})$")
_SIP_URI = re.compile(r"^sips?:[^\s<>\"?&]+$", re.IGNORECASE)
_EXTENSION = re.compile(r"^\d{1,15}$")
#: Letters, digits, '-', '_' and '.': a SIP stack decodes a URI header's name, so '%0D%0A'
#: in one would become a line break in the INVITE.
_HEADER_NAME = re.compile(r"^X-[A-Za-z0-9][A-Za-z0-9\-_.]*$")
#: A percent-encoded control character (%00-%1F, %7F): a SIP stack decodes it into the message.
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9a-f]|7f)", re.IGNORECASE)

#: Twilio refuses a SIP URI (headers included) of 255 characters or more ...
MAX_SIP_URI_LENGTH = 254
#: ... and custom headers of 1,024 characters or more.
MAX_SIP_HEADERS_LENGTH = 1023
#: A conversation id is a UUID's text form: the width of its column, and of the
#: `X-Conversation-Id` header that always travels.
CONVERSATION_ID_LENGTH = 36

Method = Literal["refer", "invite", "bye"]

METHOD_HELP = {
    "refer": "SIP REFER: asks the caller's SIP side to transfer the call (SIP legs only).",
    "invite": "SIP INVITE: Twilio dials the agent (a phone number or SIP URI) and bridges the call.",
    "bye": "SIP BYE: hangs up Twilio's leg so the customer's SBC takes the call back.",
}


#: CR, LF and every other control character (Unicode category Cc: C0, DEL and C1, NEL among
#: them), the line and paragraph separators some SIP stacks and log viewers treat as line
#: breaks, and what else no TwiML document can carry (lone surrogates, U+FFFE, U+FFFF).
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def has_control_character(value: str) -> bool:
    """True when the value holds a character that could inject a header line or break TwiML."""
    return _CONTROL_CHARACTER.search(value) is not None


@dataclass(frozen=True)
class Route:
    """Where a transfer goes, parsed once so the TwiML can be built without string sniffing."""

    kind: Literal["number", "sip"]
    target: str
    send_digits: str | None = None


_NUMBER_PROBLEMS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "has no country code in use",
    phonenumbers.ValidationResult.TOO_SHORT: "is too short for a phone number of its country",
    phonenumbers.ValidationResult.TOO_LONG: "is too long for a phone number of its country",
    phonenumbers.ValidationResult.INVALID_LENGTH: "does not have a length numbers of its country have",
}


def check_phone_number(number: str) -> None:
    """Raise ValueError unless `number` could be a real phone number for its country code.

    Only the length for the country is checked (libphonenumber's "possible"), not whether
    the range is assigned, so 555 test numbers and Ofcom drama numbers keep working.
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise ValueError(f"{number} is not a phone number; write it in E.164 like +14155550100") from None
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason not in (phonenumbers.ValidationResult.IS_POSSIBLE, phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        problem = _NUMBER_PROBLEMS.get(reason, "is not a possible phone number")
        raise ValueError(f"{number} {problem} (+{parsed.country_code}); write it in E.164 like +14155550100")


@lru_cache(maxsize=4096)
def parse_route(route: str, *, method: Method, sip_domain: str | None) -> Route:
    """Turn a configured route into a dialable target, or raise ValueError saying how to fix it.

    Cached: the few routes a gateway has are parsed once, not on every call.
    """
    route = route.strip()
    if match := _E164_WITH_EXTENSION.match(route):
        number, extension = match.groups()
        check_phone_number(number)
        if method == "refer":
            raise ValueError("refer cannot send extension digits; use method invite for this route")
        return Route("number", number, send_digits="ww" + extension)
    if E164.match(route):
        check_phone_number(route)
        if method == "refer":
            if not sip_domain:
                raise ValueError(
                    "refer needs a SIP target: use a sip: URI, set the project's sip_domain, "
                    "or use method invite to dial a phone number"
                )
            return Route("sip", f"sip:{route}@{sip_domain}")
        return Route("number", route)
    if _SIP_URI.match(route):
        if has_control_character(route) or _ENCODED_CONTROL.search(route):
            raise ValueError("the SIP URI holds a control character (raw or percent-encoded); remove it")
        return Route("sip", route)
    if _EXTENSION.match(route):
        if not sip_domain:
            raise ValueError(
                f"the bare extension {route!r} needs the project's sip_domain "
                "(or write a full sip: URI)"
            )
        return Route("sip", f"sip:{route}@{sip_domain}")
    raise ValueError(
        f"{route!r} is not a route; use an E.164 number (+14155550100), "
        "+14155550100;ext=1234, a sip:/sips: URI, or an extension with sip_domain"
    )


#: A destination's name, wherever a body may carry one (a PATCH may leave it out).
DestinationName = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]


class Destination(BaseModel):
    """A handoff destination as the operator writes it (SPEC §2)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: DestinationName
    description: str = Field("", max_length=500, pattern=NO_NUL)
    method: Method = Field("refer", description="refer is the default")
    route: str | None = Field(
        None, description="E.164, E.164;ext=N, sip:/sips: URI, or an extension with sip_domain; none for bye"
    )
    timeout: int | None = Field(None, ge=5, le=600)
    sip_headers: dict[str, str] = Field(default_factory=dict, description="names start with X-; values may hold $variables")
    utterance: str | None = Field(None, max_length=1000)
    reason: str | None = Field(None, max_length=200)
    handoff_keywords: list[str] = Field(default_factory=list)

    @field_validator("name", mode="before")
    @classmethod
    def _normalised_name(cls, name: object) -> object:
        """NFKC, so "Front\u00a0desk" and "Front desk" are one name; see `name_key` for case."""
        return unicodedata.normalize("NFKC", name).strip() if isinstance(name, str) else name

    @field_validator("name")
    @classmethod
    def _name_fits_a_url_path_segment(cls, name: str) -> str:
        """The API addresses a destination as /handoff_destinations/{name}: one path segment."""
        if "/" in name or "\\" in name:
            raise ValueError(f"{name!r} holds a slash, which cannot travel in a URL path segment; use another character")
        if name in (".", ".."):
            raise ValueError(f"{name!r} is not a name a URL can carry (clients resolve it as a path); use letters")
        if has_control_character(name):
            raise ValueError("the name holds a control character (CR, LF, ...); remove it")
        return name

    @field_validator("sip_headers")
    @classmethod
    def _headers_are_custom(cls, headers: dict[str, str]) -> dict[str, str]:
        """Twilio only forwards custom headers, whose names start with X-."""
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} must start with X- (for example X-{name})")
            if has_control_character(value):
                raise ValueError(f"header {name} holds a control character (CR, LF, ...)")
        return headers

    @field_validator("handoff_keywords")
    @classmethod
    def _keywords_lowercase(cls, keywords: list[str]) -> list[str]:
        """Keywords are matched case-insensitively against chat and SMS text."""
        return [keyword.strip().lower() for keyword in keywords if keyword.strip()]


def name_key(name: str) -> str:
    """What makes two destination names the same: NFKC, trimmed, without regard to case."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).strip().casefold())


def check_destination(destination: Destination, *, sip_domain: str | None) -> tuple[str, str] | None:
    """Return (field, problem) when the destination could not be dialed, else None."""
    if destination.method == "bye":
        if destination.route:
            return "route", "a bye destination has no route (the SBC takes the call back)"
        return _headers_too_long(len(configured_header_string(destination)))  # its <Parameter>s keep the same limit
    if not destination.route:
        return "route", f"a {destination.method} destination needs a route"
    try:
        route = parse_route(destination.route, method=destination.method, sip_domain=sip_domain)
    except ValueError as problem:
        return "route", str(problem)
    if route.kind == "sip":
        headers_length = len(configured_header_string(destination))
        if problem := _headers_too_long(headers_length):
            return problem
        uri_length = len(route.target) + 1 + headers_length
        if uri_length > MAX_SIP_URI_LENGTH:
            return "sip_headers", (
                f"the SIP URI with its headers takes {uri_length} characters before any "
                "$variable is filled in; Twilio allows under 255"
            )
    return None


def _headers_too_long(headers_length: int) -> tuple[str, str] | None:
    if headers_length > MAX_SIP_HEADERS_LENGTH:
        return "sip_headers", f"the SIP headers take {headers_length} characters; Twilio allows under 1,024"
    return None


def configured_header_string(destination: Destination) -> str:
    """The header part of the SIP URI with every $variable empty: the shortest it can get.

    Values are percent-encoded as `routing` sends them, so 'é' counts as the six characters it takes.
    """
    parts = [f"{name}={quote(_without_variables(value), safe='')}" for name, value in destination.sip_headers.items()]
    parts.append("X-Conversation-Id=" + "0" * CONVERSATION_ID_LENGTH)
    return "&".join(parts)


class _EveryVariableEmpty(dict):
    def __missing__(self, _name: str) -> str:
        return ""


def _without_variables(value: str) -> str:
    """The value as sent with every $variable empty: `$$` is one dollar sign, as
    gateway/voice/routing.py's `fill_variables` (string.Template) sends it."""
    return string.Template(value).safe_substitute(_EveryVariableEmpty())
