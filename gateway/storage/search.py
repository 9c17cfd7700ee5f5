"""What an operator's one search box can name: a shared_id, a CallSid, a conversation id or a phone number.

The text itself is matched exactly against the ids; when it reads as a phone number in any
common form (`(415) 555-1234`, `+1 415 555 1234`, `14155551234`), its E.164 form (how Twilio
sends numbers, so how they are stored) is matched against the caller and the number called.
The `from` and `to` filters read a number the same way (`as_stored_number`). No database and no
HTTP here: `store.list_conversations` turns the terms into its query.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

#: Only digits and what people write between them: letters would be read as a vanity number
#: (phonenumbers maps 1-800-FLOWERS to digits), and a UUID or CallSid is not a phone number.
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{4,40}$")
#: A number written without its country code is read as one of this country's when the
#: project's own numbers say nothing (a project without numbers, say).
FALLBACK_REGION = "US"


@dataclass(frozen=True)
class SearchTerms:
    """What to compare: `text` with the ids and the caller, `numbers` with the caller,
    `called` with the number called (only the project's own numbers: calls go to those)."""

    text: str
    numbers: tuple[str, ...] = ()
    called: tuple[str, ...] = ()


def home_region(own_numbers: Iterable[str]) -> str:
    """The country of the project's first number that has one: how its customers write theirs."""
    for number in own_numbers:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            continue
        if region and region != "ZZ":
            return region
    return FALLBACK_REGION


def as_e164(text: str, region: str) -> str | None:
    """The E.164 form of a phone number as people write it, or None when it is not one."""
    if not _PHONE_LIKE.match(text) or sum(ch.isdigit() for ch in text) < 4:
        return None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def as_stored_number(text: str, own_numbers: Iterable[str]) -> str:
    """A caller or called number as a person wrote it, in the E.164 form it is stored in: a `+`
    typed unencoded in a URL arrives as a space, and `(415) 555-1234` is the same number. Text
    that is not a phone number (`client:alice`, `anonymous`) is kept as written."""
    return as_e164(text.strip(), home_region(own_numbers)) or text


def terms_for(text: str, own_numbers: Iterable[str]) -> SearchTerms | None:
    """The terms of one search; None for blank text (no search at all)."""
    text = text.strip()
    if not text:
        return None
    own = list(own_numbers)
    number = as_e164(text, home_region(own))
    if number is None:
        return SearchTerms(text)
    return SearchTerms(text, numbers=(number,), called=(number,) if number in own else ())
