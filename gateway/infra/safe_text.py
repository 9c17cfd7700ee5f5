"""Characters XML 1.0 cannot carry, removed from text that came from outside.

Twilio refuses a TwiML document holding one (error 12100, and the caller is dropped): NUL and
the other C0 controls but tab, CR and LF, lone UTF-16 surrogates, U+FFFE and U+FFFF. The same
characters are what PostgreSQL (NUL) and UTF-8 (surrogates) cannot store either.
"""
from __future__ import annotations

import re

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")

#: The same refusal as JSON Schema patterns, for pydantic fields: it checks them and /openapi.json
#: shows them, so the fuzzer knows NUL is refused. (JSON text is checked as a whole first, by
#: `is_storable`; the patterns say what that means for one field.)
NO_NUL = "^[^\\u0000]*$"
#: No NUL, and something besides whitespace: for values that must say something.
NOT_BLANK = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def xml_legal(text: str) -> str:
    return _NOT_XML_CHAR.sub("", text)


def whole_number(text: str) -> int | None:
    """Digits 0-9 as a number, else None. `str.isdigit()` alone also takes '²' and other Unicode
    digits (a header or form byte 0xB2 reads as '²'), which `int()` then refuses with a 500."""
    return int(text) if text.isascii() and text.isdigit() else None


def is_storable(text: str) -> bool:
    """No NUL (PostgreSQL text can't hold it) and no lone surrogate (UTF-8 can't encode it)."""
    return _UNSTORABLE_CHAR.search(text) is None
