"""GET /openapi.json: a valid OpenAPI 3 document covering every /v1 route the app serves.

Every /v1 response of the whole suite is also checked against it (tests/openapi_conformance.py,
installed by the make_app fixture).
"""
from __future__ import annotations

import itertools

from flask import url_for
from openapi_spec_validator import validate

from gateway import MAX_REQUEST_BYTES
from gateway.texting import chat, messaging
from tests.messaging_support import CUSTOMER, TEXTING, accept_messages
from tests.openapi_conformance import _template
from tests.support import CONFIG_KEY, TEXTING_KEY


def test_the_document_is_valid_openapi(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    validate(response.get_json())


def test_every_v1_route_and_method_is_documented(app, client):
    paths = client.get("/openapi.json").get_json()["paths"]
    served = {
        (_template(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in paths.items() for method in item if method != "parameters"}
    assert served == documented


def test_the_document_is_also_under_the_api_base_as_the_spec_lists_it(client):
    under_base = client.get("/v1/acme/frontdesk/openapi.json", headers={"x-api-key": CONFIG_KEY})
    assert under_base.status_code == 200
    assert under_base.get_json() == client.get("/openapi.json").get_json()
    assert client.get("/v1/acme/frontdesk/openapi.json").status_code == 401


def test_what_the_edge_refuses_before_any_view_is_documented_on_every_operation(app, client):
    """A NUL in any query or path value is 400 invalid_parameter on every operation, and a body
    over the limit 413 request_too_large on every one that takes a body: both are in the document."""
    document = client.get("/openapi.json").get_json()
    headers = {"x-api-key": CONFIG_KEY}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        with app.test_request_context():
            values = {name: "x" for name in rule.arguments}
            path = url_for(rule.endpoint, **{**values, "account_id": "acme", "project_id": "frontdesk"})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][_template(rule.rule)][method.lower()]
            nul = client.open(path, method=method, query_string={"note": "a\x00b"}, headers=headers)
            assert (nul.status_code, nul.get_json()["error"]["code"]) == (400, "invalid_parameter"), (method, path)
            assert "400" in operation["responses"], (method, path)
            if "requestBody" not in operation:
                continue
            body = b"{" + b" " * MAX_REQUEST_BYTES + b"}"
            too_large = client.open(path, method=method, data=body, content_type="application/json", headers=headers)
            assert (too_large.status_code, too_large.get_json()["error"]["code"]) == (413, "request_too_large")
            assert "413" in operation["responses"], (method, path)


# --- the document's limits are the ones the API enforces -------------------------------------

def _string_limits(document: dict, schema_ref: str) -> dict[str, int]:
    """field -> maxLength of each property of a request body that has one (nullable ones too)."""
    schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    return {
        field: variant["maxLength"]
        for field, prop in schema["properties"].items()
        for variant in [prop, *prop.get("anyOf", [])]
        if "maxLength" in variant
    }


def test_every_documented_length_limit_is_the_one_enforced(client, twilio_api):
    """Each string limit a request body documents takes exactly that many characters and refuses
    one more with the body's 400, so the document and the validation cannot disagree."""
    accept_messages(twilio_api)
    headers = {"x-api-key": TEXTING_KEY}
    fresh = itertools.count()

    def new_chat() -> str:
        return client.post(f"{TEXTING}/chat/create", headers=headers).get_json()["conversation_id"]

    def new_destination() -> str:
        name = f"Desk {next(fresh)}"
        assert client.post(f"{TEXTING}/handoff_destinations", json={"name": name, "method": "bye"}, headers=headers).status_code == 201
        return name

    # (method, path template) -> (the path to send to, made afresh for each request; a valid body)
    takers = {
        ("post", "/chat/create"): (lambda: "/chat/create", lambda: {}),
        ("post", "/chat/respond"): (lambda: "/chat/respond", lambda: {"conversation_id": new_chat(), "message": "hi"}),
        ("post", "/chat/close"): (lambda: "/chat/close", lambda: {"conversation_id": new_chat()}),
        ("post", "/sms"): (lambda: "/sms", lambda: {"to": CUSTOMER, "body": "hi"}),
        ("post", "/handoff_destinations"): (
            lambda: "/handoff_destinations",
            lambda: {"name": f"Desk {next(fresh)}", "method": "bye"},
        ),
        ("patch", "/handoff_destinations/{name}"): (lambda: f"/handoff_destinations/{new_destination()}", lambda: {}),
        ("post", "/conversations/{conversation_id}/handoff"): (
            lambda: f"/conversations/{new_chat()}/handoff",
            lambda: {},
        ),
    }
    document = client.get("/openapi.json").get_json()
    base = "/v1/{account_id}/{project_id}"
    bodies = {
        (method, path.removeprefix(base)): operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters" and "requestBody" in operation
    }
    assert set(bodies) == set(takers), "give each operation that takes a body a valid one above"

    checked = {}
    for (method, template), schema_ref in bodies.items():
        path_of, body_of = takers[(method, template)]
        for field, limit in _string_limits(document, schema_ref).items():
            at_limit = client.open(
                TEXTING + path_of(), method=method.upper(), json={**body_of(), field: "x" * limit}, headers=headers
            )
            assert at_limit.status_code != 400, (template, field, at_limit.get_json())
            over = client.open(
                TEXTING + path_of(), method=method.upper(), json={**body_of(), field: "x" * (limit + 1)}, headers=headers
            )
            assert over.status_code == 400, (template, field)
            assert over.get_json()["error"]["code"] != "invalid_json", (template, field)
            checked[(template, field)] = limit
    assert checked[("/sms", "body")] == messaging.MAX_BODY_LENGTH
    assert checked[("/chat/respond", "message")] == chat.MAX_MESSAGE_LENGTH
    assert checked[("/handoff_destinations", "name")] == 100
