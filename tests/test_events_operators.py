"""Operators see deliveries: the console page and its Redeliver button, `gateway events`, /metrics."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, select

from gateway.events import deliver
from gateway.cli import main
from gateway.storage.models import EventDelivery
from tests.console_support import PASSWORD_HASH, post_form, sign_in, text_of
from tests.events_support import SECRET, SECRET_ENV, Receiver, call_with_fallback, subscribe

CALL_SID = "CA" + "7c" * 16


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def subscribed(make_app, config_path, receiver):
    subscribe(config_path, receiver.url)
    return make_app(console_password_hash=PASSWORD_HASH)


def one_pass(app) -> None:
    gateway = app.extensions["gateway"]
    deliver.Deliverer(gateway.engine, gateway.config, deliver.signers(gateway.config, {SECRET_ENV: SECRET})).run_once()


def deliveries(app) -> list[EventDelivery]:
    with Session(app.extensions["gateway"].engine) as session:
        return list(session.exec(select(EventDelivery).order_by(EventDelivery.id)))


def gauges(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_the_console_shows_each_delivery_and_redelivers_one(subscribed, receiver):
    # Two calls: the first's first event gets 503 (retried later; the rest of that call waits),
    # the second's gets 410 (stopped; the rest of that call goes on).
    receiver.answers = [(503, {}), (410, {})]
    call_with_fallback(subscribed.test_client(), CALL_SID)
    call_with_fallback(subscribed.test_client(), "CA" + "8d" * 16)
    one_pass(subscribed)
    client = subscribed.test_client()
    sign_in(client)

    page = client.get("/console/events")
    assert page.status_code == 200
    text = text_of(page)
    assert receiver.url in text and f"${SECRET_ENV}" in text
    assert "answered 503" in text and "answered 410" in text and "not retried" in text
    statuses = re.findall(r'<span class="status [a-z]+">([a-z]+)</span>', page.get_data(as_text=True))
    assert sorted(statuses) == ["delivered"] * 4 + ["failed"] + ["pending"] * 5

    stopped = next(d for d in deliveries(subscribed) if d.status == "failed")
    answer = post_form(client, f"/console/events/deliveries/{stopped.id}/redeliver")
    assert answer.status_code == 302
    assert "will be sent again" in text_of(client.get("/console/events"))
    one_pass(subscribed)
    again = next(d for d in deliveries(subscribed) if d.id == stopped.id)
    assert (again.status, again.attempts) == ("delivered", 2)
    assert receiver.ids().count(receiver.ids()[1]) == 2, "the same event id arrives again"


def test_the_console_needs_a_signed_in_operator_and_a_csrf_token(subscribed):
    client = subscribed.test_client()
    assert client.get("/console/events").status_code == 302
    sign_in(client)
    assert client.post("/console/events/deliveries/1/redeliver").status_code == 400
    assert post_form(client, "/console/events/deliveries/999/redeliver").status_code == 404


def test_a_project_without_subscriptions_says_how_to_add_one(make_app):
    client = make_app(console_password_hash=PASSWORD_HASH).test_client()
    sign_in(client)
    assert "event_webhooks" in text_of(client.get("/console/events"))


def test_gateway_events_list_and_redeliver(subscribed, receiver, config_path, database_url):
    receiver.answers = [(404, {})]
    call_with_fallback(subscribed.test_client(), CALL_SID)
    one_pass(subscribed)
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": database_url}
    runner = CliRunner()

    listed = runner.invoke(main, ["events", "list", "--status", "failed"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0
    (line,) = listed.stdout.splitlines()
    stopped = deliveries(subscribed)[0]
    assert line.startswith(f"{stopped.id}  failed")
    assert "handoff.initiated" in line and "answered 404" in line and receiver.url in line

    assert runner.invoke(main, ["events", "redeliver", str(stopped.id)], env=env).exit_code == 0
    pending = runner.invoke(main, ["events", "list", "--status", "pending"], env=env)
    assert f"{stopped.id}  pending" in pending.stdout and "next try" in pending.stdout

    unknown = runner.invoke(main, ["events", "redeliver", "999"], env=env)
    assert unknown.exit_code == 1 and "gateway events list" in unknown.stderr


def test_gateway_deliver_refuses_to_start_without_the_secret(subscribed, config_path, database_url):
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": database_url, SECRET_ENV: ""}
    result = CliRunner().invoke(main, ["deliver", "--once"], env=env)
    assert result.exit_code == 1
    assert SECRET_ENV in result.stderr and "whsec_" in result.stderr


def test_gateway_deliver_once_delivers_and_new_secret_makes_a_usable_secret(subscribed, receiver, config_path, database_url):
    call_with_fallback(subscribed.test_client(), CALL_SID)
    secret = CliRunner().invoke(main, ["events", "new-secret"]).stdout.strip()
    assert secret.startswith("whsec_") and deliver.Webhook(secret)
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": database_url, SECRET_ENV: secret}
    result = CliRunner().invoke(main, ["deliver", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(receiver.received) == 5
    deliver.Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)


def test_metrics_count_deliveries_by_outcome_and_the_oldest_undelivered_age(subscribed, receiver):
    client = subscribed.test_client()
    assert gauges(client)[("gateway_event_oldest_undelivered_age_seconds", frozenset())] == 0
    receiver.answers = [(500, {}), (400, {})]
    call_with_fallback(client, CALL_SID)
    call_with_fallback(client, "CA" + "8d" * 16)
    one_pass(subscribed)

    seen = gauges(client)
    # The first call's first event waits for a retry and holds back the other four of that call;
    # the second call's first event was refused (400) and the other four went on.
    by_outcome = {outcome: seen[("gateway_event_deliveries", frozenset({("outcome", outcome)}))] for outcome in ("pending", "failed", "delivered")}
    assert by_outcome == {"pending": 5, "failed": 1, "delivered": 4}
    assert seen[("gateway_event_oldest_undelivered_age_seconds", frozenset())] > 0
