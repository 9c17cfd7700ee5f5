"""Schemathesis fuzzes every operation /openapi.json lists: no 5xx, every answer as documented.

It authenticates with the config file's key and stays in the acme/frontdesk project (else it
would only ever see 401 and 404), and now and then swaps in a conversation or destination
that exists, so the 200, 202 and 409 answers get fuzzed too. Twilio's REST API is mocked.
"""
from __future__ import annotations

import json

import re

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway.storage import store
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tests.messaging_support import accept_messages
from tests.support import ACCOUNT_SID, CONFIG_KEY, call_params, post_signed

EXAMPLES_PER_OPERATION = 25
SEEDED_CALLS = ["CA" + f"{index:032x}" for index in range(3)]
CONFIG_DESTINATIONS = ["Front desk", "Billing"]
PROJECT = {"account_id": "acme", "project_id": "frontdesk"}
#: Destination writes obey the config file's rules (a route that parses for its method and the
#: project's sip_domain, X- header names, Twilio's SIP URI limits), more than a JSON Schema can
#: say; their documented 400 names the rule, so schema-valid input may rightly get it.
RULE_CHECKED = {
    # The sender must be a number of the project, registered for A2P 10DLC, and the recipient
    # must not have texted STOP: documented 400/422 refusals no schema can foresee.
    "POST /v1/{account_id}/{project_id}/sms",
    "POST /v1/{account_id}/{project_id}/handoff_destinations",
    "PATCH /v1/{account_id}/{project_id}/handoff_destinations/{name}",
}


@pytest.fixture
def seeded_ids(app, session):
    """Three live calls in acme/frontdesk, one with a shared_id; their conversation ids."""
    client = app.test_client()
    for index, call_sid in enumerate(SEEDED_CALLS):
        extra = {"SipHeader_X-Shared-Id": "crm-42"} if index == 0 else {}
        assert post_signed(client, "/voice/call", call_params(call_sid=call_sid, **extra)).status_code == 200
    session.expire_all()
    return [store.conversation_by_call_sid(session, call_sid).id for call_sid in SEEDED_CALLS]


@pytest.fixture
def real_cursor(app, seeded_ids):
    page = app.test_client().get("/v1/acme/frontdesk/conversations?limit=1", headers={"x-api-key": CONFIG_KEY})
    return page.get_json()["next_cursor"]


@pytest.fixture
def api_schema(app, seeded_ids):
    config = schemathesis.Config.from_dict(
        {
            "headers": {"x-api-key": CONFIG_KEY},
        }
    )
    return schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)


@pytest.fixture
def twilio_rest():
    """Twilio accepts every redirect of a live call and every text."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.POST,
            re.compile(rf"https://api\.twilio\.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA[0-9a-f]+\.json"),
            json={"sid": SEEDED_CALLS[0], "account_sid": ACCOUNT_SID, "status": "in-progress"},
        )
        accept_messages(mock)
        yield mock


def _known(value: str, choices: list[str]) -> str:
    """Half of the generated values, deterministically, become one that exists."""
    digest = sum(value.encode())
    return choices[digest % len(choices)] if digest % 2 == 0 else value


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_documented_operation_answers_as_documented(api_schema, seeded_ids, real_cursor, twilio_rest, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, "the fuzzer sees fewer operations than the API has"
    fuzzed = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=PROJECT))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            parameters = case.path_parameters or {}
            if isinstance(parameters.get("conversation_id"), str):
                parameters["conversation_id"] = _known(parameters["conversation_id"], seeded_ids)
            if isinstance(parameters.get("name"), str):
                parameters["name"] = _known(parameters["name"], CONFIG_DESTINATIONS)
            query = case.query or {}
            if isinstance(query.get("id"), str):
                query["id"] = _known(query["id"], seeded_ids)
            excluded = [positive_data_acceptance] if operation.label in RULE_CHECKED else []
            if operation.path.endswith("/handoff_state") and not (query.get("id") or query.get("shared_id")):
                # "One of id or shared_id" has no OpenAPI form for query parameters; the 400 is documented.
                excluded.append(positive_data_acceptance)
            if isinstance(query.get("cursor"), str):
                query["cursor"] = _known(query["cursor"], [real_cursor])
                if query["cursor"] != real_cursor:
                    # Opaque: a well-formed cursor the API never gave out is rightly refused (400).
                    excluded.append(positive_data_acceptance)
            if "\\u0000" in json.dumps(case.body, default=str):
                # NUL anywhere in a body is refused (PostgreSQL text cannot hold it); inside
                # free-form `data` objects or ignored extra keys the document does not say so.
                excluded.append(positive_data_acceptance)
            case.call_and_validate(excluded_checks=excluded)

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid: its only parameters are pinned.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed.append(operation.label)
    assert len(fuzzed) >= 5, fuzzed
