"""Destination names and routes: one name however it is typed, and routes that are real numbers."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from gateway.config.file import ConfigError, load_config
from gateway.storage.models import StoredDestination
from tests.support import ACME, CONFIG_KEY, CONFIG_TOML, CONFIG_WITH_SALES

BASE = "/v1/ws-acme/PROJECT-frontdesk/handoff_destinations"
KEY = {"x-api-key": CONFIG_KEY}
DESK = {"method": "invite", "route": "+14155550123"}


def create(client, name: str, **fields):
    return client.post(BASE, json={"name": name, **DESK, **fields}, headers=KEY)


def error_of(response) -> tuple[int, str, str]:
    error = response.get_json()["error"]
    return response.status_code, error["code"], error["message"]


def stored_names(session) -> list[str]:
    session.expire_all()
    return [row.name for row in session.exec(select(StoredDestination).order_by(StoredDestination.id))]


@pytest.mark.parametrize("variant", ["front desk", "FRONT DESK", "Front\u00a0desk", " Front desk ", "Ｆｒｏｎｔ ｄｅｓｋ"])
def test_a_name_that_differs_from_a_config_destination_only_in_case_or_form_is_taken(client, session, variant):
    status, code, message = error_of(create(client, variant))
    assert (status, code) == (409, "duplicate_destination")
    assert message == "A destination named 'Front desk' already exists."  # the one that holds the name
    assert stored_names(session) == []


@pytest.mark.parametrize("variant", ["escalations", "ESCALATIONS", "Escalations\u00a0", "\u2003Escalations", "Ｅｓｃａｌａｔｉｏｎｓ"])
def test_stored_names_are_unique_without_regard_to_case_or_unicode_form(client, session, variant):
    assert create(client, "Escalations").status_code == 201
    assert error_of(create(client, variant))[:2] == (409, "duplicate_destination")
    assert stored_names(session) == ["Escalations"]


def test_names_are_stored_normalised_and_found_however_they_are_typed(client, session):
    response = create(client, "\u00a0Ｅｓｃａｌａｔｉｏｎｓ\u00a0team ")
    assert response.status_code == 201
    assert response.get_json()["name"] == "Escalations team"
    assert stored_names(session) == ["Escalations team"]
    found = client.get(f"{BASE}/escalations%20TEAM", headers=KEY)
    assert found.status_code == 200 and found.get_json()["name"] == "Escalations team"
    assert client.patch(f"{BASE}/ESCALATIONS%20TEAM", json={"timeout": 30}, headers=KEY).status_code == 200
    assert client.delete(f"{BASE}/escalations team", headers=KEY).status_code == 204
    assert stored_names(session) == []


def test_a_rename_onto_another_name_in_another_case_is_refused(client, session):
    assert create(client, "Escalations").status_code == 201
    assert create(client, "Overflow").status_code == 201
    response = client.patch(f"{BASE}/Overflow", json={"name": "escalations"}, headers=KEY)
    assert error_of(response)[:2] == (409, "duplicate_destination")
    # Changing only the case of its own name is not a clash.
    assert client.patch(f"{BASE}/Overflow", json={"name": "OVERFLOW"}, headers=KEY).status_code == 200
    assert stored_names(session) == ["Escalations", "OVERFLOW"]


def test_a_config_destination_is_managed_by_config_in_any_case(client):
    response = client.patch(f"{BASE}/front%20DESK", json={"timeout": 30}, headers=KEY)
    assert error_of(response)[:2] == (409, "managed_by_config")


def test_a_name_the_file_took_from_a_stored_destination_is_the_files_to_the_api(client, session, make_app, config_path):
    """The file's entry wins the name, so the API answers as for any config destination (SPEC §5:
    409 `managed_by_config`); `gateway destinations remove` removes the stored one
    (tests/test_cli_operator.py)."""
    assert create(client, "Sales").status_code == 201
    config_path.write_text(CONFIG_WITH_SALES)
    restarted = make_app().test_client()
    assert restarted.get(f"{BASE}/Sales", headers=KEY).get_json()["route"] == "+14155550112"
    assert error_of(restarted.delete(f"{BASE}/Sales", headers=KEY))[:2] == (409, "managed_by_config")
    assert stored_names(session) == ["Sales"]


def test_the_database_itself_refuses_two_names_that_differ_only_in_case(app, session):
    """Racing creates both pass the look-up; the unique key on the normalised name stops the second."""
    session.add(StoredDestination(project_key=ACME, name="Desk", name_key="desk", body={"name": "Desk"}))
    session.commit()
    session.add(StoredDestination(project_key=ACME, name="DESK", name_key="desk", body={"name": "DESK"}))
    with pytest.raises(IntegrityError):
        session.commit()


@pytest.mark.parametrize("name", ["a/b", "Sales/EMEA", "back\\slash", "..", ".", "two\r\nlines"])
def test_a_name_that_cannot_travel_in_a_url_path_segment_is_refused_at_create(client, session, name):
    status, code, message = error_of(create(client, name))
    assert (status, code) == (400, "invalid_destination")
    assert message.startswith("name: ")
    assert stored_names(session) == []


@pytest.mark.parametrize(
    "route, problem",
    [
        ("+1415", "too short"),
        ("+12", "is not a phone number"),
        ("+141555501234567", "too long"),
        ("+999123456", "is not a phone number"),
        ("+1415;ext=12", "too short"),
    ],
)
def test_a_route_that_is_not_a_real_number_is_refused_naming_the_field(client, session, route, problem):
    status, code, message = error_of(create(client, "Desk", route=route))
    assert (status, code) == (400, "invalid_destination")
    assert message.startswith("route: ") and problem in message and "E.164" in message
    assert stored_names(session) == []


@pytest.mark.parametrize("route", ["+14155550123", "+15005550006", "+447700900123", "+18885550100", "+14155550101;ext=12"])
def test_555_and_other_test_numbers_still_work(client, session, route):
    assert create(client, "Desk", route=route).status_code == 201


def test_the_config_file_refuses_names_that_differ_only_in_case(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG_TOML.replace('name = "Extension desk"', 'name = "front DESK"', 1))
    with pytest.raises(ConfigError, match=r"destinations\[1\] \('front DESK'\): name: another destination .* same name"):
        load_config(path)


def test_the_config_file_refuses_a_route_that_is_too_short(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG_TOML.replace('route = "+14155550100"', 'route = "+1415"', 1))
    with pytest.raises(ConfigError, match=r"destinations\[0\] \('Front desk'\): route: \+1415 is too short"):
        load_config(path)
