"""GET /v1/{account_id}/{project_id}/handoff_state: the screen-pop an agent desktop reads."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlmodel import select

from gateway.storage import store
from gateway.cli import main
from gateway.storage.models import ApiKey
from tests.support import CONFIG_KEY, call_params, post_signed

CALL_SID = "CA" + "b" * 32
PATH = "/v1/ws-acme/PROJECT-frontdesk/handoff_state"


def api_get(client, path, key=CONFIG_KEY, **params):
    headers = {"x-api-key": key} if key is not None else {}
    return client.get(path, query_string=params, headers=headers)


@pytest.fixture
def call(client, session):
    post_signed(client, "/voice/call", call_params(call_sid=CALL_SID, **{"SipHeader_X-Shared-Id": "crm-42"}))
    session.expire_all()
    return store.conversation_by_call_sid(session, CALL_SID)


def test_by_id_returns_the_documented_shape(client, call):
    response = api_get(client, PATH, id=call.id)
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "id": call.id,
        "shared_id": "crm-42",
        "data": {},
        "state": "handoff_initiated",
        "topic": None,
        "handoff": {
            "destination": "Front desk",
            "reason": "needs_human",
            "utterance": "Let me transfer you to someone who can help.",
            "attempts": 1,
            "updated_at": body["handoff"]["updated_at"],
            "history": [
                {
                    "state": "handoff_initiated",
                    "at": body["handoff"]["history"][0]["at"],
                    "destination": "Front desk",
                    "detail": None,
                }
            ],
        },
    }
    assert body["handoff"]["updated_at"].endswith("Z")


def test_by_shared_id_and_shared_id_wins(client, call, session):
    other_sid = "CA" + "c" * 32
    post_signed(client, "/voice/call", call_params(call_sid=other_sid, to="+14155550197"))
    other = store.conversation_by_call_sid(session, other_sid)

    assert api_get(client, PATH, shared_id="crm-42").get_json()["id"] == call.id
    both = api_get(client, PATH, id=other.id, shared_id="crm-42")
    assert both.get_json()["id"] == call.id


@pytest.mark.parametrize("account,project", [("acme", "frontdesk"), ("ws-acme", "frontdesk"), ("acme", "PROJECT-frontdesk")])
def test_slug_and_prefixed_ids_name_the_same_project(client, call, account, project):
    response = api_get(client, f"/v1/{account}/{project}/handoff_state", id=call.id)
    assert response.status_code == 200
    assert response.get_json()["id"] == call.id


def test_no_identifier_is_400(client, call):
    response = api_get(client, PATH)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "missing_identifier"


def test_missing_and_unknown_keys_are_401(client, call):
    missing = api_get(client, PATH, key=None, id=call.id)
    assert (missing.status_code, missing.get_json()["error"]["code"]) == (401, "missing_api_key")
    unknown = api_get(client, PATH, key="nope", id=call.id)
    assert (unknown.status_code, unknown.get_json()["error"]["code"]) == (401, "invalid_api_key")


def test_a_key_of_another_project_is_403(client, call):
    response = api_get(client, "/v1/ws-globex/PROJECT-support/handoff_state", id=call.id)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_unknown_project_and_conversation_are_404(client, call):
    assert api_get(client, "/v1/ws-nobody/PROJECT-x/handoff_state", id=call.id).status_code == 404
    # Without a real key, an unknown project looks like a real one: 401, so names can't be probed.
    assert api_get(client, "/v1/ws-nobody/PROJECT-x/handoff_state", key="nope", id=call.id).status_code == 401
    response = api_get(client, PATH, id="not-a-conversation")
    assert response.status_code == 404
    assert "message" in response.get_json()["error"]


def test_a_key_made_by_the_cli_works_and_is_stored_hashed(client, call, make_settings, monkeypatch, session):
    settings = make_settings()
    monkeypatch.setenv("GATEWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GATEWAY_CONFIG", str(settings.config_path))
    result = CliRunner().invoke(main, ["api-key", "create", "--account", "acme", "--project", "frontdesk"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[0]

    assert api_get(client, PATH, key=key, id=call.id).status_code == 200
    assert api_get(client, "/v1/globex/support/handoff_state", key=key, id=call.id).status_code == 403
    stored = session.exec(select(ApiKey)).all()
    assert len(stored) == 1
    assert key not in str(stored[0].model_dump())


def test_a_method_the_path_does_not_take_is_405_with_allow(client):
    response = client.post("/v1/ws-acme/PROJECT-frontdesk/handoff_state", headers={"x-api-key": CONFIG_KEY})
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}  # RFC 9110: a 405 names the methods allowed
