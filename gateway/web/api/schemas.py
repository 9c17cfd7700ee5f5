"""Every body the /v1 API takes or gives, as pydantic models: the one declaration of each.

The bodies the API takes are the models it validates with (an `@api.operation(body=...)` view
gets its body checked by one). /openapi.json is generated from all of them (gateway/web/api/openapi.py),
so a limit is written once and the document states the limit the code enforces. The bodies the
API gives are built by gateway/presenters.py; the test suite checks every answer it sees against
these models' schemas (tests/openapi_conformance.py).

Two models live with the rules they carry and are used here as they are: `HandoffRequest`
(gateway/handoff_requests.py) and `Destination` (gateway/config/destinations.py, shared with the config
file and the console).
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from gateway.config import event_types
from gateway.handoffs import handoff
from gateway.handoffs.catalog import Source
from gateway.texting.chat import CustomerMessage
from gateway.config.destinations import E164_PATTERN, Destination, DestinationName
from gateway.errors import Refusal
from gateway.handoff_requests import HandoffRequest  # noqa: F401 - a body model of this module
from gateway.texting.messaging import MAX_BODY_LENGTH
from gateway.infra.safe_text import NO_NUL, NOT_BLANK

MAX_SHARED_ID_LENGTH = 200


def left_out(description: str | None = None):
    """A field a body may leave out but never holds null. (A default factory, where a default
    of None would put `"default": null` in a schema that refuses null.)"""
    return Field(default_factory=lambda: None, description=description)


#: As Twilio takes a number; surrounding spaces are forgiven.
PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=E164_PATTERN),
    Field(description="E.164", examples=["+14155550123"]),
]

# --- bodies the API takes ---------------------------------------------------------------------


class SmsRequest(BaseModel):
    """`POST /sms`. Each field has the SPEC's own 400 code; unknown fields are ignored."""

    to: Annotated[
        PhoneNumber, Refusal("invalid_to", "`to` must be a phone number in E.164 form, e.g. +14155550123.")
    ]
    body: Annotated[
        str,
        StringConstraints(max_length=MAX_BODY_LENGTH, pattern=NOT_BLANK),
        Refusal(
            "invalid_body", f"`body` must be text that is not blank, of at most {MAX_BODY_LENGTH} characters (Twilio's limit)."
        ),
    ]
    from_number: Annotated[
        PhoneNumber | None,
        Refusal("invalid_from", "`from` must be one of the project's numbers in E.164 form, or left out."),
    ] = Field(None, alias="from", description="One of the project's numbers; default: the first that can send.")


class ChatCreateRequest(BaseModel):
    """`POST /chat/create`; no body at all is fine."""

    shared_id: Annotated[
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_SHARED_ID_LENGTH, pattern=NO_NUL)] | None,
        Refusal("invalid_shared_id", f"`shared_id` must be text of 1 to {MAX_SHARED_ID_LENGTH} characters."),
    ] = None
    data: Annotated[dict[str, Any], Refusal("invalid_data", "`data` must be a JSON object.")] = Field(
        default_factory=dict
    )


#: The chat a turn or a close is for.
ChatId = Annotated[
    str,
    StringConstraints(min_length=1),
    Refusal("missing_conversation_id", "Give the `conversation_id` that chat/create returned."),
]


class ChatRespondRequest(BaseModel):
    """`POST /chat/respond`: one customer turn."""

    conversation_id: ChatId
    message: CustomerMessage


class ChatCloseRequest(BaseModel):
    """`POST /chat/close`."""

    conversation_id: ChatId


class DestinationPatch(Destination):
    """`PATCH /handoff_destinations/{name}`: any of a destination's fields; those left out keep
    their stored values."""

    name: DestinationName = left_out()


# --- bodies the API gives ---------------------------------------------------------------------


class HistoryEntry(BaseModel):
    state: str = Field(description="handoff_initiated, handoff_completed, handoff_failed or a topic")
    at: datetime
    destination: str | None
    detail: str | None = Field(description="Twilio's status and SIP code for this step")


class Handoff(BaseModel):
    destination: str | None
    reason: str | None
    utterance: str | None
    attempts: int = Field(ge=0)
    updated_at: datetime
    history: list[HistoryEntry] = Field(description="Oldest first.")


class HandoffState(BaseModel):
    """The screen-pop document (SPEC §5 `GET /handoff_state`)."""

    id: str
    shared_id: str | None
    data: dict[str, Any]
    state: Literal[handoff.LIFECYCLE_STATES] | None
    topic: str | None
    handoff: Handoff


class Conversation(BaseModel):
    id: str
    shared_id: str | None
    channel: Literal["voice", "sms", "chat"]
    call_sid: str | None
    from_number: str | None = Field(alias="from")
    to: str | None
    state: str | None
    topic: str | None
    destination: str | None
    reason: str | None
    attempts: int
    call_status: str | None
    duration_seconds: int | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None


class ConversationPage(BaseModel):
    items: list[Conversation] = Field(description="Newest first.")
    next_cursor: str | None


class ConversationDetail(Conversation):
    data: dict[str, Any]
    handoff: Handoff


class DestinationEntry(Destination):
    """A destination as the API shows it: every field, and where it is kept."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    source: Source = Field(description="config: read-only here, change the config file; database: made through the API or console")


class DestinationList(BaseModel):
    items: list[DestinationEntry]


class Event(BaseModel):
    id: str = Field(description="Unique; the same in every delivery of this event (webhook-id).")
    type: Literal[event_types.EVENT_TYPES]
    created_at: datetime
    account_id: str
    project_id: str
    data: HandoffState


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str = Field(description="Pass as `after` to get the events that follow.")


class StatusEntry(BaseModel):
    status: str
    error_code: int | None
    at: datetime


class Message(BaseModel):
    """A text, sent or received."""

    sid: str
    conversation_id: str | None
    direction: Literal["inbound", "outbound"]
    from_number: str = Field(alias="from")
    to: str
    body: str
    status: str = Field(examples=["delivered"])
    error_code: int | None
    error_explanation: str | None
    created_at: datetime
    updated_at: datetime
    status_history: list[StatusEntry]


class ChatCreated(BaseModel):
    conversation_id: str
    shared_id: str | None
    channel: Literal["chat"]
    data: dict[str, Any]
    started_at: datetime


class ChatHandoff(BaseModel):
    destination: str
    reason: str | None


class ChatTurn(BaseModel):
    conversation_id: str
    response: str
    end_conversation: bool
    handoff: ChatHandoff = left_out("Only when the chat was handed off.")


class ChatClosed(BaseModel):
    conversation_id: str
    closed: bool
    ended_at: datetime


class TranscriptLine(BaseModel):
    role: Literal["customer", "assistant"]
    text: str
    at: datetime


class Transcript(BaseModel):
    conversation_id: str
    items: list[TranscriptLine] = Field(description="Oldest first.")


class OpenApiDocument(RootModel[dict[str, Any]]):
    """This document."""


class ErrorDetail(BaseModel):
    code: str = Field(description="snake_case; what went wrong")
    message: str = Field(description="One sentence a person can act on.")
    twilio_code: int | None = Field(None, description="With `twilio_error` only.")
    explanation: str | None = Field(None, description="With `twilio_error` only.")


class Error(BaseModel):
    """Every 4xx and 5xx answer of the API (SPEC §5)."""

    error: ErrorDetail
