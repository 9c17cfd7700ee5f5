"""$variables, header injection and Twilio's SIP length limits, end to end and at the core."""
from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import ValidationError

from gateway.config.destinations import Destination, check_destination
from gateway.voice.routing import CallContext, fill_variables, plan_transfer
from gateway.voice.twiml import TwimlRenderer
from tests.support import ASSISTANT_NUMBER, add_assistant_number, call_params, post_signed, twiml_root

CONVERSATION_ID = "3f1c6a0e-8a4b-4c39-9d0b-1b2f3c4d5e6f"


def headers_in(uri: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(uri).query, keep_blank_values=True))


def context(**values) -> CallContext:
    return CallContext(conversation_id=CONVERSATION_ID, **values)


def test_every_documented_variable_is_filled():
    ctx = context(
        shared_id="crm-7",
        caller_id="+14155551234",
        called_number="+14155550199",
        call_sid="CA123",
        reason="refund",
        data={"account_number": 991, "vip": True, "cart": {"items": 2}},
    )
    template = "$caller_id|$called_number|$call_sid|$conversation_id|$shared_id|$reason|${account_number}|$vip|$cart"
    assert fill_variables(template, ctx.variables()) == (
        f'+14155551234|+14155550199|CA123|{CONVERSATION_ID}|crm-7|refund|991|true|{{"items":2}}'
    )


def test_unknown_variables_are_empty_and_dollars_survive():
    assert fill_variables("[$nothing] costs $5 and $$", context().variables()) == "[] costs $5 and $"


def test_data_cannot_override_a_built_in_variable():
    ctx = context(caller_id="+14155551234", data={"caller_id": "spoofed"})
    assert fill_variables("$caller_id", ctx.variables()) == "+14155551234"


def test_values_are_percent_encoded_in_the_sip_uri():
    destination = Destination(name="d", method="invite", route="sip:a@pbx.test", sip_headers={"X-Note": "$note"})
    transfer = plan_transfer(destination, context(data={"note": "a&b=c d?"}), sip_domain=None)
    assert "X-Note=a%26b%3Dc%20d%3F" in transfer.sip_uri
    assert headers_in(transfer.sip_uri)["X-Note"] == "a&b=c d?"


def test_a_value_with_a_line_break_is_refused_and_logged(caplog):
    caplog.set_level(logging.WARNING)
    destination = Destination(
        name="d", method="refer", route="sip:a@pbx.test", sip_headers={"X-Evil": "$note", "X-Ok": "fine"}
    )
    transfer = plan_transfer(destination, context(data={"note": "x\r\nVia: attacker"}), sip_domain=None)
    assert headers_in(transfer.sip_uri) == {"X-Ok": "fine", "X-Conversation-Id": CONVERSATION_ID}
    assert "refused SIP header X-Evil" in caplog.text


def test_overflowing_values_drop_the_longest_optional_header(caplog):
    caplog.set_level(logging.WARNING)
    destination = Destination(
        name="d",
        method="invite",
        route="sip:agent@pbx.test",
        sip_headers={"X-Short": "$short", "X-Long": "$long"},
    )
    transfer = plan_transfer(destination, context(data={"short": "s", "long": "L" * 300}), sip_domain=None)
    assert len(transfer.sip_uri) < 255
    assert headers_in(transfer.sip_uri) == {"X-Short": "s", "X-Conversation-Id": CONVERSATION_ID}
    assert "dropped SIP header X-Long" in caplog.text


def test_bye_parameters_are_encoded_as_sip_header_values_are():
    """The same encoding as a <Sip> URI's headers: a typed %0D%0A can't become a line break."""
    destination = Destination(name="sbc", method="bye", sip_headers={"X-Reason": "$reason", "X-Typed": "$typed"})
    transfer = plan_transfer(destination, context(reason="a&b c", data={"typed": "x%0D%0AX-Injected: 1"}), sip_domain=None)
    assert transfer.headers == (
        ("X-Reason", "a%26b%20c"),
        ("X-Typed", "x%250D%250AX-Injected%3A%201"),
        ("X-Conversation-Id", CONVERSATION_ID),
    )
    sip = Destination(name="pbx", method="invite", route="sip:a@pbx.example.com", sip_headers=destination.sip_headers)
    uri = plan_transfer(sip, context(reason="a&b c", data={"typed": "x%0D%0AX-Injected: 1"}), sip_domain=None).sip_uri
    assert uri.endswith("?" + "&".join(f"{name}={value}" for name, value in transfer.headers))


def test_bye_parameters_keep_within_twilios_header_limit(caplog):
    caplog.set_level(logging.WARNING)
    destination = Destination(name="sbc", method="bye", sip_headers={"X-Long": "$long", "X-Short": "ok"})
    transfer = plan_transfer(destination, context(data={"long": "é" * 400}), sip_domain=None)
    assert transfer.headers == (("X-Short", "ok"), ("X-Conversation-Id", CONVERSATION_ID))
    assert "dropped SIP header X-Long" in caplog.text


def test_a_caller_id_with_a_line_break_still_reaches_the_agent(client, caplog):
    """Even a hostile caller id only loses its header: the caller is never dropped."""
    caplog.set_level(logging.WARNING)
    params = call_params(to="+14155550197", From="+1415\r\nX-Injected: 1")
    response = post_signed(client, "/voice/call", params)
    assert response.status_code == 200
    uri = twiml_root(response.data).find("Dial/Sip").text
    assert "X-Caller-ID" not in headers_in(uri)
    assert "\r" not in uri and "\n" not in uri
    assert "refused SIP header X-Caller-ID" in caplog.text


def test_c1_controls_and_line_separators_are_refused_too(caplog):
    caplog.set_level(logging.WARNING)
    destination = Destination(name="d", method="bye", sip_headers={"X-A": "$a", "X-B": "$b", "X-C": "$c"})
    transfer = plan_transfer(
        destination, context(data={"a": "x\u0085y", "b": "x\u2028y", "c": "café ☎"}), sip_domain=None
    )
    assert transfer.headers == (("X-C", "caf%C3%A9%20%E2%98%8E"), ("X-Conversation-Id", CONVERSATION_ID))


# --- characters a TwiML document cannot carry, and what a SIP stack would decode ------------------

#: What a form can bring (valid UTF-8), and what only JSON or stored data can (a lone surrogate).
IN_A_FORM = ["\ufffe", "\uffff", "\x0b", "\x00"]
NOT_IN_XML = [*IN_A_FORM, "\ud800"]


@pytest.mark.parametrize("character", IN_A_FORM)
def test_a_sip_callers_shared_id_never_breaks_the_twiml(client, config_path, make_app, character):
    """A SIP trunk can send any header text; the caller must still get a document Twilio parses."""
    add_assistant_number(config_path)
    client = make_app().test_client()
    shared = {"SipHeader_X-Shared-Id": f"crm-{character}-42"}
    for number in (ASSISTANT_NUMBER, "+14155550195"):  # <Connect><Stream> parameters; a bye's <Parameter>s
        response = post_signed(client, "/voice/call", call_params(call_sid="CA" + "5" * 31 + number[-1], to=number, **shared))
        assert response.status_code == 200
        twiml_root(response.data)  # parses


@pytest.mark.parametrize("character", NOT_IN_XML)
def test_data_that_cannot_travel_loses_its_header_not_the_destination(character, caplog):
    destination = Destination(name="d", method="invite", route="sip:a@pbx.test", sip_headers={"X-A": "$a", "X-Ok": "ok"})
    transfer = plan_transfer(destination, context(data={"a": f"x{character}y"}), sip_domain=None)
    assert headers_in(transfer.sip_uri) == {"X-Ok": "ok", "X-Conversation-Id": CONVERSATION_ID}


def test_a_spoken_utterance_or_reason_with_such_characters_still_renders():
    renderer = TwimlRenderer()
    twiml = renderer.apology("Hold on\x0b please\ufffe")
    assert twiml_root(twiml).find("Say").text == "Hold on please"


@pytest.mark.parametrize("name", ["X-A%0D%0AX-Injected%3A%20yes%0D%0AX-B", "X-A+B", "X-A!"])
def test_header_names_a_sip_stack_would_decode_into_the_message_are_refused(name):
    with pytest.raises(ValidationError):
        Destination(name="d", method="invite", route="sip:agent@pbx.test", sip_headers={name: "1"})


@pytest.mark.parametrize("route", ["sip:a%0D%0AX-Inj:%20y@pbx.test", "sip:a%7f@pbx.test", "sip:a\x01b@pbx.test"])
def test_routes_with_control_characters_raw_or_encoded_are_refused(route):
    problem = check_destination(Destination(name="d", method="invite", route=route), sip_domain=None)
    assert problem is not None and problem[0] == "route"


def test_the_config_check_counts_header_values_as_they_are_sent_percent_encoded():
    """SPEC §4: a destination that cannot fit is refused when checked, not trimmed on every call."""
    fits_raw_only = Destination(name="d", method="invite", route="sip:a@h.test", sip_headers={"X-Note": "é" * 60})
    problem = check_destination(fits_raw_only, sip_domain=None)
    assert problem is not None and problem[0] == "sip_headers"


def test_a_bye_whose_parameters_cannot_fit_is_refused_when_checked():
    """SPEC §4: a destination that cannot fit is refused when the config is checked; a bye's
    <Parameter>s keep the same 1,024-character limit (found by an outside review: its check
    skipped them, and every call dropped the header)."""
    destination = Destination(name="sbc", method="bye", sip_headers={"X-Big": "a" * 1100})
    problem = check_destination(destination, sip_domain=None)
    assert problem is not None and problem[0] == "sip_headers"


def test_the_config_check_counts_a_literal_dollar_as_it_is_sent():
    """`$$` is sent as one dollar sign followed by the rest, not dropped as a $variable."""
    destination = Destination(name="b", method="invite", route="sip:b@h.test", sip_headers={"X-Price": "$$" + "a" * 250})
    problem = check_destination(destination, sip_domain=None)
    assert problem is not None and problem[0] == "sip_headers"
    assert fill_variables("$$" + "a" * 3, {}) == "$aaa"
