"""From a destination and a conversation to a transfer plan: target, SIP headers, $variables.

Pure functions: no Flask, no database. The TwiML templates only lay out what this decides.
"""
from __future__ import annotations

import json
import logging
import string
from functools import lru_cache
from dataclasses import dataclass, field
from urllib.parse import quote

from gateway.config.destinations import (
    MAX_SIP_HEADERS_LENGTH,
    MAX_SIP_URI_LENGTH,
    Destination,
    Method,
    Route,
    has_control_character,
    parse_route,
)

log = logging.getLogger(__name__)

CONVERSATION_ID_HEADER = "X-Conversation-Id"
SHARED_ID_HEADER = "X-Shared-Id"


@dataclass(frozen=True)
class CallContext:
    """What `$variables` can name, taken from the conversation being handed off."""

    conversation_id: str
    shared_id: str | None = None
    caller_id: str | None = None
    called_number: str | None = None
    call_sid: str | None = None
    reason: str | None = None
    topic: str | None = None
    data: dict = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        """Data keys first, so the built-in names cannot be overridden by an assistant's data."""
        values = {key: _as_text(value) for key, value in self.data.items()}
        values.update(
            caller_id=self.caller_id or "",
            called_number=self.called_number or "",
            call_sid=self.call_sid or "",
            conversation_id=self.conversation_id,
            shared_id=self.shared_id or "",
            reason=self.reason or "",
            topic=self.topic or "",
        )
        return values


@dataclass(frozen=True)
class Transfer:
    """Everything the TwiML for one handoff attempt needs."""

    method: Method
    destination: str
    utterance: str | None
    timeout: int | None = None
    route: Route | None = None
    sip_uri: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class _EmptyForUnknown(dict):
    """An unknown $variable becomes empty text rather than leaking `$name` to the agent."""

    def __missing__(self, key: str) -> str:
        log.info("sip header variable $%s has no value; sent empty", key)
        return ""


def fill_variables(template: str, variables: dict[str, str]) -> str:
    """Substitute `$name` and `${name}`; `$$` and a lone `$` stay literal dollar signs."""
    return _template(template).safe_substitute(_EmptyForUnknown(variables))


@lru_cache(maxsize=4096)
def _template(text: str) -> string.Template:
    """A header value's template, built once: a gateway has few, and every call fills them."""
    return string.Template(text)


def plan_transfer(
    destination: Destination,
    context: CallContext,
    *,
    sip_domain: str | None,
    utterance: str | None = None,
) -> Transfer:
    """Decide the target and headers for one attempt; a bad header is dropped, never fatal."""
    headers = _filled_headers(destination, context)
    spoken = utterance if utterance is not None else destination.utterance
    if destination.method == "bye":
        return Transfer("bye", destination.name, spoken, headers=tuple(_encoded_within_limits(headers, None)))
    route = parse_route(destination.route or "", method=destination.method, sip_domain=sip_domain)
    sip_uri = _sip_uri_within_limits(route.target, headers) if route.kind == "sip" else None
    return Transfer(
        destination.method,
        destination.name,
        spoken,
        timeout=destination.timeout,
        route=route,
        sip_uri=sip_uri,
    )


def _filled_headers(destination: Destination, context: CallContext) -> list[tuple[str, str]]:
    variables = context.variables()
    headers: list[tuple[str, str]] = []
    for name, template in destination.sip_headers.items():
        value = fill_variables(template, variables)
        if has_control_character(value):
            log.warning(
                "refused SIP header %s for conversation %s: its value holds a control character",
                name,
                context.conversation_id,
            )
            continue
        headers.append((name, value))
    headers.append((CONVERSATION_ID_HEADER, context.conversation_id))
    if context.shared_id and not has_control_character(context.shared_id):
        headers.append((SHARED_ID_HEADER, context.shared_id))
    return headers


def _sip_uri_within_limits(target: str, headers: list[tuple[str, str]]) -> str:
    """Append headers as URI parameters, within Twilio's limits (see `_encoded_within_limits`)."""
    query = "&".join(f"{name}={value}" for name, value in _encoded_within_limits(headers, target))
    return f"{target}?{query}" if query else target


def _encoded_within_limits(headers: list[tuple[str, str]], target: str | None) -> list[tuple[str, str]]:
    """Header values percent-encoded, dropping the longest optional one until Twilio's limits hold.

    `<Sip>` headers (`target` is the SIP URI) and a `bye`'s `<Parameter>`s (`target` None) are
    encoded alike, so a `%0D%0A` typed into a value reaches no SIP stack as a line break.
    """
    kept = [(name, quote(value, safe="")) for name, value in headers]
    while True:
        query_length = len("&".join(f"{name}={value}" for name, value in kept))
        uri_length = len(target) + 1 + query_length if target else 0
        if query_length <= MAX_SIP_HEADERS_LENGTH and uri_length <= MAX_SIP_URI_LENGTH:
            return kept
        optional = [h for h in kept if h[0] != CONVERSATION_ID_HEADER]
        if not optional:
            return []
        longest = max(optional, key=lambda h: len(h[0]) + len(h[1]))
        log.warning(
            "dropped SIP header %s (%d characters encoded) to keep within Twilio's limits",
            longest[0],
            len(longest[1]),
        )
        kept.remove(longest)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
