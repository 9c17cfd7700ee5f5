"""Operations: health and readiness probes, Prometheus metrics, JSON logs without secrets, limits."""
from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from gateway.infra import jsonlog, metrics
from gateway.storage.models import Conversation
from gateway.web.logcontext import configure_logging, json_handler
from tests.support import ACME, AUTH_TOKEN, CONFIG_KEY, call_params, make_database_unreachable, post_signed

UNKNOWN_KEY = "an-api-key-nobody-made-0123456789"


def samples(client) -> dict[tuple[str, frozenset], float]:
    """The /metrics page as {(sample name, labels): value}, read by prometheus-client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_readyz_answers_503_with_the_reason_when_the_database_is_unreachable(app, database_url, tmp_path):
    make_database_unreachable(app, database_url, tmp_path)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["reason"].startswith("database unreachable: OperationalError: ")
    assert response.headers["Content-Type"] == "application/json"


def test_metrics_count_webhooks_handoffs_and_signature_failures_by_route(client, make_app):
    assert post_signed(client, "/voice/call", call_params()).status_code == 200
    assert post_signed(client, "/voice/call", call_params(to="+14155550197", call_sid="CA" + "2" * 32)).status_code == 200
    assert post_signed(client, "/voice/call", call_params(), token="not-the-token").status_code == 403
    assert client.get(f"/v1/{ACME}/handoff_state?id=nope", headers={"x-api-key": CONFIG_KEY}).status_code == 404

    seen = samples(client)
    voice = frozenset({("route", "/voice/call"), ("method", "POST")})
    assert seen[("gateway_request_duration_seconds_count", voice)] == 3
    api = frozenset({("route", "/v1/<account_id>/<project_id>/handoff_state"), ("method", "GET")})
    assert seen[("gateway_request_duration_seconds_count", api)] == 1
    initiated = {("state", "handoff_initiated")}
    assert seen[("gateway_handoff_transitions_total", frozenset(initiated | {("destination", "Front desk")}))] == 1
    assert seen[("gateway_handoff_transitions_total", frozenset(initiated | {("destination", "Billing")}))] == 1
    assert seen[("gateway_twilio_signature_failures_total", frozenset({("route", "/voice/call")}))] == 1

    # Another app in the same process has its own registry.
    other = samples(make_app().test_client())
    assert ("gateway_twilio_signature_failures_total", frozenset({("route", "/voice/call")})) not in other


def test_unmatched_paths_share_one_latency_label(client):
    client.get("/no/such/path")
    client.get("/another/random/path")
    seen = samples(client)
    assert seen[("gateway_request_duration_seconds_count", frozenset({("route", "unmatched"), ("method", "GET")}))] == 2


def test_sms_refusals_are_counted_by_reason(app):
    with app.app_context():
        metrics.activate(app.extensions["metrics"])
        try:
            metrics.sms_refused("recipient_opted_out")
            metrics.sms_refused("recipient_opted_out")
            metrics.sms_refused("a2p_10dlc_unregistered")
        finally:
            metrics.activate(None)
    seen = samples(app.test_client())
    assert seen[("gateway_sms_refused_total", frozenset({("reason", "recipient_opted_out")}))] == 2
    assert seen[("gateway_sms_refused_total", frozenset({("reason", "a2p_10dlc_unregistered")}))] == 1


def test_outside_a_request_the_core_counts_nothing_and_does_not_fail():
    metrics.sms_refused("recipient_opted_out")
    metrics.handoff_recorded("handoff_initiated", "Front desk")


@pytest.fixture
def json_log(app):
    """What the app's JSON log handler writes, as it would in production, one dict per line."""
    stream = io.StringIO()
    handler = json_handler(app.extensions["gateway"].settings.auth_token, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)


def test_log_lines_are_json_objects_with_the_call_sid(client, json_log):
    call_sid = "CA" + "7" * 32
    post_signed(client, "/voice/call?conversation_id=c-123", call_params(call_sid=call_sid), token="wrong-token-000")
    (line,) = [line for line in json_log() if line["logger"] == "gateway.web.signature"]
    assert line["level"] == "WARNING"
    assert line["call_sid"] == call_sid
    assert line["conversation_id"] == "c-123"
    assert line["path"] == "/voice/call"
    assert "X-Twilio-Signature does not verify" in line["message"]
    assert line["time"].endswith("+00:00")


def test_a_conversation_bound_by_the_core_is_on_later_lines(app, json_log):
    with app.test_request_context("/voice/call", method="POST", data={"CallSid": "CA1"}):
        jsonlog.bind(conversation_id="conv-1")
        logging.getLogger("gateway.test").warning("after the handoff was recorded")
        jsonlog.clear()
    (line,) = json_log()
    assert (line["call_sid"], line["conversation_id"]) == ("CA1", "conv-1")


def test_auth_tokens_and_api_keys_never_reach_the_log(client, app, json_log, caplog):
    caplog.set_level(logging.DEBUG)
    post_signed(client, "/voice/call", call_params(), token="wrong-token-000")
    client.get(f"/v1/{ACME}/handoff_state?id=x", headers={"x-api-key": UNKNOWN_KEY})
    client.get(f"/v1/{ACME}/handoff_state?id=x", headers={"x-api-key": CONFIG_KEY})
    # Even a careless line that names them is redacted, traceback included.
    with app.test_request_context("/v1/x", headers={"x-api-key": UNKNOWN_KEY}):
        try:
            raise RuntimeError(f"token {AUTH_TOKEN}")
        except RuntimeError:
            logging.getLogger("gateway.test").exception("key %s and token %s", UNKNOWN_KEY, AUTH_TOKEN)

    written = "\n".join(json.dumps(line) for line in json_log())
    for secret in (AUTH_TOKEN, UNKNOWN_KEY, CONFIG_KEY):
        assert secret not in written
        assert secret not in caplog.text
    careless = json_log()[-1]
    assert careless["message"] == "key [redacted] and token [redacted]"
    assert "token [redacted]" in careless["exception"]


def test_create_app_configures_json_logging_only_when_nothing_else_did(app):
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        configure_logging(AUTH_TOKEN)  # pytest's handlers are there: left alone
        assert root.handlers == saved
        root.handlers = []
        configure_logging(AUTH_TOKEN)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, jsonlog.JsonFormatter)
    finally:
        root.handlers = saved


def test_a_body_over_the_size_limit_is_refused_with_413(client, session):
    params = call_params(Padding="x" * (300 * 1024))
    response = post_signed(client, "/voice/call", params)
    assert response.status_code == 413
    assert session.exec(select(Conversation)).all() == []


def test_the_twilio_rest_client_times_out_as_configured(make_app):
    app = make_app(twilio_timeout_seconds=3.5)
    assert app.extensions["gateway"].twilio.http_client.timeout == 3.5
