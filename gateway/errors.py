"""The one error the core raises when it refuses a request: a status, a snake_case code, a sentence.

The status is the SPEC §5 table's (400 malformed, 404 unknown, 409 conflict, 422 refused by a
rule, 502/503/504 when Twilio or the assistant fails us). One handler in the web layer turns it
into the SPEC's error JSON (gateway/web/errors.py); the console shows it beside the form field
it names; the CLI prints its code and sentence. No Flask here.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError


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


@dataclass(frozen=True)
class Refusal:
    """How a bad value of one field is answered, when the SPEC gives that field its own code
    (`invalid_to`, `invalid_message`, ...): put it in the field's `Annotated[...]`."""

    code: str
    message: str

    def error(self, field: str | None = None) -> GatewayError:
        return GatewayError(400, self.code, self.message, field)


def invalid_input(error: ValidationError, model: type[BaseModel], code: str) -> GatewayError:
    """The first problem pydantic found in a body for `model`, as a 400 naming the field: the
    field's own `Refusal` when it has one, else `code` with "field: problem"."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    refusal = _refusal_of(model, first["loc"][0]) if first["loc"] else None
    if refusal is not None:
        return refusal.error(field)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field; check the spelling"
    return GatewayError(400, code, f"{field or 'body'}: {message}", field)


def _refusal_of(model: type[BaseModel], name: str | int) -> Refusal | None:
    """The `Refusal` of the field that `name` (as the body spells it, alias or not) stands for."""
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return next((marker for marker in field.metadata if isinstance(marker, Refusal)), None)
    return None
