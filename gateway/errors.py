"""The one error the core raises when it refuses a request: a status, a snake_case code, a sentence.

The status is the SPEC §5 table's (400 malformed, 404 unknown, 409 conflict, 422 refused by a
rule, 502/503/504 when Twilio or the assistant fails us). One handler in the web layer turns it
into the SPEC's error JSON (gateway/web/errors.py); the console shows it beside the form field
it names; the CLI prints its code and sentence. No Flask here.
"""
from __future__ import annotations


class GatewayError(Exception):
    """A refused or failed request, phrased for whoever sent it."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **details) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        #: One sentence a person can act on.
        self.message = message
        #: The input field at fault, when there is one (the console shows the message beside it).
        self.field = field
        #: Extra fields beside code and message in the API's answer (e.g. Twilio's own error code).
        self.details = details
