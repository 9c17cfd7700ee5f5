"""GET /openapi.json: a valid OpenAPI 3 document covering every /v1 route the app serves.

Every /v1 response of the whole suite is also checked against it (tests/openapi_conformance.py,
installed by the make_app fixture).
"""
from __future__ import annotations

from openapi_spec_validator import validate

from tests.openapi_conformance import _template
from tests.support import CONFIG_KEY


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
