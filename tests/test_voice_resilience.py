"""Voice webhooks answer TwiML whatever a stored row says, and route calls that arrive over SIP."""
from __future__ import annotations

from sqlmodel import select

from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent, StoredDestination
from tests.support import ACME, call_params, post_signed, twiml_root

CALL_SID = "CA" + "5" * 32


def point_call_at(session, name: str) -> None:
    """Make the stored call's current destination `name`, as an API handoff would have."""
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    conversation.destination = name
    session.add(conversation)
    session.commit()


def test_a_stored_destination_the_config_can_no_longer_dial_falls_back_to_the_default(make_app, config_path, session):
    # Saved through the API while the project had a sip_domain; the operator removed it since.
    config_path.write_text(
        config_path.read_text().replace('sip_domain = "pbx.acme.test"\n', "", 1).replace('route = "2001"', 'route = "sip:2001@pbx.acme.test"')
    )
    client = make_app().test_client()
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to="+14155550197"))
    session.add(StoredDestination(project_key=ACME, name="Old PBX", name_key="old pbx", body={"name": "Old PBX", "method": "refer", "route": "2002"}))
    session.commit()
    point_call_at(session, "Old PBX")

    response = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to="+14155550197"))
    assert response.status_code == 200
    assert twiml_root(response.data).find("Dial/Number").text == "+14155550100"  # the default, Front desk


def test_a_stored_row_that_no_longer_parses_still_gets_the_numbers_twiml(client, session):
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to="+14155550199"))
    session.add(StoredDestination(project_key=ACME, name="Hand edited", name_key="hand edited", body={"name": "Hand edited", "method": "teleport"}))
    session.commit()
    point_call_at(session, "Hand edited")

    response = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to="+14155550199"))
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert twiml_root(response.data).find("Dial/Number").text == "+14155550100"


def test_a_call_over_a_sip_domain_routes_by_the_number_in_its_uri(client, session):
    to = "sip:+14155550196@acme.sip.twilio.com;transport=tls"
    response = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to=to))

    assert twiml_root(response.data).find("Refer/Sip").text.startswith("sip:2001@pbx.acme.test?")
    conversation = store.conversation_by_call_sid(session, CALL_SID)
    assert conversation.to_number == "+14155550196"
    assert session.exec(select(HandoffEvent)).first().destination == "Tier 2"


def test_a_sip_uri_without_a_number_is_an_unknown_number(client, session):
    response = post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, to="sip:frontdesk@acme.sip.twilio.com"))
    assert [child.tag for child in twiml_root(response.data)] == ["Say", "Hangup"]
    assert session.exec(select(Conversation)).all() == []
