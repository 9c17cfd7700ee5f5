"""One domain error, one place that maps it: every refusal the core makes reaches the API in the
SPEC §5 shape through the app's single handler, whichever part of the core raised it."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import gateway
from gateway.errors import GatewayError
from gateway.web import errors as web_errors
from tests.support import ACME, CONFIG_KEY

#: Exceptions that never become a response: each is handled where it is raised.
INTERNAL = {
    "gateway.config.file.ConfigError",  # stops start-up with its one line
    "gateway.settings.SettingsError",  # stops start-up with a line per bad variable
    "gateway.handoffs.handoff.TransitionError",  # a race the core resolves itself
    "gateway.voice.spool.RecordRejected",  # a spool record set aside
    "gateway.voice.spool.ReplayUnfinished",  # a new call goes on, a callback fails open
    "gateway.voice.call_records.ReplayBusy",  # the webhook fails open
    "gateway.storage.schema.DatabaseBehind",  # an OperationalError: fails open, or 503 naming the command
    "gateway.storage.schema.UpgradeRefused",  # stops `gateway db upgrade` with its message
    "gateway.storage.schema.NothingToRevise",  # stops `gateway db revision` with its message
    "gateway.events.deliver.SecretMissing",  # stops `gateway deliver` at start with its one line
    "gateway.infra.strict_json.NonStandardJson",  # the API turns it into a 400 invalid_json GatewayError
    "gateway.storage.store.SomeCallsKnown",  # a commit group writes its calls one by one
}


def _gateway_modules():
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if ".migrations" not in info.name:
            yield importlib.import_module(info.name)


def test_the_core_has_one_error_type_for_what_it_refuses():
    defined = {
        f"{module.__name__}.{name}"
        for module in _gateway_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
    }
    assert defined - INTERNAL == {"gateway.errors.GatewayError"}


def test_only_the_app_maps_the_error_and_no_blueprint_does_it_again(app):
    mapped = [
        (blueprint, handler)
        for blueprint, by_status in app.error_handler_spec.items()
        for handlers in by_status.values()
        for error_class, handler in handlers.items()
        if issubclass(error_class, GatewayError)
    ]
    assert mapped == [(None, web_errors.handle_gateway_error)]


def test_refusals_from_every_part_of_the_core_answer_in_the_spec_shape(client):
    """catalog (409), handoff requests (404), chat (409) and messaging (400), through one handler."""
    headers = {"x-api-key": CONFIG_KEY}
    base = f"/v1/{ACME}"
    duplicate = client.post(f"{base}/handoff_destinations", json={"name": "Front desk", "method": "bye"}, headers=headers)
    unknown = client.post(f"{base}/conversations/nobody/handoff", json={}, headers=headers)
    chat = client.post(f"{base}/chat/create", headers=headers).get_json()
    client.post(f"{base}/chat/close", json={"conversation_id": chat["conversation_id"]}, headers=headers)
    closed = client.post(f"{base}/chat/respond", json={"conversation_id": chat["conversation_id"], "message": "hi"}, headers=headers)
    bad_sms = client.post(f"{base}/sms", json={"to": "nobody", "body": "hi"}, headers=headers)

    answers = [(r.status_code, r.get_json()["error"]["code"]) for r in (duplicate, unknown, closed, bad_sms)]
    assert answers == [
        (409, "duplicate_destination"),
        (404, "conversation_not_found"),
        (409, "conversation_closed"),
        (400, "invalid_to"),
    ]
    for response in (duplicate, unknown, closed, bad_sms):
        assert set(response.get_json()) == {"error"}
        assert response.get_json()["error"]["message"]
