"""The operator commands of `gateway`: hash-password, numbers, destinations (list, add, update, remove), simulate-call."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import responses
from click.testing import CliRunner
from sqlalchemy import text
from werkzeug.security import check_password_hash

from gateway import create_app
from gateway.storage import store
from gateway.cli import main
from tests.events_support import call_with_fallback
from tests.console_support import PASSWORD_HASH, post_form, serve, sign_in
from tests.support import AUTH_TOKEN, CONFIG_KEY, CONFIG_WITH_SALES, twiml_root


@pytest.fixture
def env(config_path, database_url):
    return {
        "GATEWAY_CONFIG": str(config_path),
        "GATEWAY_DATABASE_URL": database_url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "GATEWAY_PUBLIC_URL": "",
    }


def run(env, *args, input=None):
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


@pytest.mark.parametrize("command", ["hash-password", "numbers", "destinations", "simulate-call"])
def test_each_command_explains_itself(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main " + command in result.output or "Usage: gateway " + command in result.output


def test_hash_password_prints_a_hash_the_console_accepts():
    result = CliRunner().invoke(main, ["hash-password"], input="s3cret-pass\ns3cret-pass\n")
    assert result.exit_code == 0
    printed = result.stdout.strip().splitlines()[-1]
    assert check_password_hash(printed, "s3cret-pass")
    assert "s3cret-pass" not in result.stdout


def test_hash_password_refuses_a_short_password():
    result = CliRunner().invoke(main, ["hash-password"], input="short\nshort\n")
    assert result.exit_code == 1
    assert "at least 8 characters" in result.stderr


def test_numbers_lists_where_each_number_routes(env):
    result = run(env, "numbers")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "ws-acme/PROJECT-frontdesk"
    assert "  +14155550199  -> Front desk  then Billing  (SMS from the number itself; 10DLC registered)" in lines
    assert "  +14155550197  -> Billing  then Tier 2, Secure desk  (SMS from the number itself; 10DLC unknown)" in lines
    assert "  +14155550299  -> Desk  (SMS from the number itself; 10DLC registered)" in lines


def test_destinations_lists_both_sources(env, make_app, config_path):
    app = make_app(console_password_hash=PASSWORD_HASH)
    client = app.test_client()
    sign_in(client)
    post_form(client, "/console/handoffs/new", {"name": "Sales", "method": "invite", "route": "+14155550111"})

    result = run(env, "destinations", "--account", "acme", "--project", "frontdesk")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "ws-acme/PROJECT-frontdesk"
    assert f"  Front desk  invite +14155550100  [config {config_path}]" in lines
    assert f"  SBC  bye  [config {config_path}]" in lines
    assert "  Sales  invite +14155550111  [database]" in lines
    assert "ws-globex/PROJECT-support" not in result.stdout

    everything = run(env, "destinations")
    assert "ws-globex/PROJECT-support" in everything.stdout and "Sales" in everything.stdout


def test_destinations_of_one_account_lists_each_of_its_projects(env):
    result = run(env, "destinations", "--account", "initech")
    assert result.exit_code == 0, result.output
    projects = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert projects == ["ws-initech/PROJECT-texting", "ws-initech/PROJECT-bot"]

    unknown = run(env, "destinations", "--account", "nobody")
    assert (unknown.exit_code, unknown.stderr.split(" in ")[0]) == (1, "no account nobody")
    alone = run(env, "destinations", "--project", "frontdesk")
    assert (alone.exit_code, alone.stderr) == (2, "give both --account and --project\n")


def test_a_stored_destination_the_file_took_the_name_of_is_marked_and_removable(env, config_path):
    project = ("--account", "acme", "--project", "frontdesk")
    assert run(env, "destinations", "add", "Sales", *project, "--method", "invite", "--route", "+14155550111").exit_code == 0
    config_path.write_text(CONFIG_WITH_SALES)
    lines = run(env, "destinations", *project).stdout.splitlines()
    assert f"  sales  invite +14155550112  [config {config_path}]" in lines
    assert ("  Sales  invite +14155550111  [database; unused, the config file's takes this name: "
            "`destinations remove` removes this one]") in lines

    removed = run(env, "destinations", "remove", "Sales", *project)
    assert (removed.exit_code, removed.stdout) == (0, "removed Sales from ws-acme/PROJECT-frontdesk\n")
    assert [line for line in run(env, "destinations", *project).stdout.splitlines() if "Sales" in line or "sales" in line] == [
        f"  sales  invite +14155550112  [config {config_path}]"
    ]


def test_destinations_of_an_unknown_project(env):
    result = run(env, "destinations", "--account", "nobody", "--project", "x")
    assert result.exit_code == 1
    assert "no project nobody/x" in result.stderr


def test_destinations_are_added_updated_and_removed_from_the_cli(env, make_app, config_path):
    """SPEC §1: operators manage destinations through the API, the CLI and the console alike."""
    project = ("--account", "acme", "--project", "frontdesk")
    added = run(
        env, "destinations", "add", "Escalations", *project, "--method", "invite",
        "--route", "sip:escalations@pbx.acme.test", "--reason", "escalation",
        "--sip-header", "X-Caller=$caller_id", "--sip-header", "X-Ticket=$ticket",
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "added Escalations to ws-acme/PROJECT-frontdesk"

    # The API reads back what the CLI stored.
    client = make_app().test_client()
    stored = client.get("/v1/acme/frontdesk/handoff_destinations/Escalations", headers={"x-api-key": CONFIG_KEY})
    assert stored.status_code == 200
    body = stored.get_json()
    assert (body["method"], body["route"], body["reason"]) == ("invite", "sip:escalations@pbx.acme.test", "escalation")
    assert body["sip_headers"] == {"X-Caller": "$caller_id", "X-Ticket": "$ticket"}

    updated = run(env, "destinations", "update", "Escalations", *project, "--timeout", "40", "--new-name", "Escalation desk")
    assert updated.exit_code == 0, updated.output
    listed = run(env, "destinations", *project).stdout.splitlines()
    assert "  Escalation desk  invite sip:escalations@pbx.acme.test  [database]" in listed
    renamed = client.get("/v1/acme/frontdesk/handoff_destinations/Escalation desk", headers={"x-api-key": CONFIG_KEY})
    assert (renamed.get_json()["timeout"], renamed.get_json()["reason"]) == (40, "escalation")

    removed = run(env, "destinations", "remove", "Escalation desk", *project)
    assert removed.exit_code == 0, removed.output
    assert "Escalation desk" not in run(env, "destinations", *project).stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["add", "Front desk", "--route", "+14155550111"], "duplicate_destination: "),
        (["add", "Nowhere", "--method", "invite"], "invalid_destination: "),
        (["add", "Bad header", "--route", "+14155550111", "--sip-header", "Caller=1"], "invalid_destination: "),
        (["add", "No equals", "--route", "+14155550111", "--sip-header", "X-Caller"], "--sip-header needs X-NAME=VALUE"),
        (["update", "Front desk", "--timeout", "30"], "managed_by_config: "),
        (["remove", "Nobody"], "destination_not_found: "),
    ],
)
def test_a_refused_destination_change_says_why_and_changes_nothing(env, args, message):
    before = run(env, "destinations").stdout
    result = run(env, "destinations", *args, "--account", "acme", "--project", "frontdesk")
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert run(env, "destinations").stdout == before


def test_simulate_call_prints_the_twiml_of_a_live_gateway(env, app, session):
    with serve(app) as base_url:
        result = run(env, "simulate-call", "--to", "+14155550199", "--from", "+14155551234",
                     "--url", f"{base_url}/voice/call")
    assert result.exit_code == 0, result.output
    root = twiml_root(result.stdout)
    assert root.find("Say").text == "Let me transfer you to someone who can help."
    assert root.find("Dial/Number").text == "+14155550100"
    posted, status = result.stderr.splitlines()[:2]
    assert posted == f"POST {base_url}/voice/call"
    assert status.startswith("200 for CallSid CA")
    call_sid = status.split()[3]
    session.expire_all()
    recorded = store.conversation_by_call_sid(session, call_sid)
    assert (recorded.from_number, recorded.state) == ("+14155551234", "handoff_initiated")


@responses.activate
def test_simulate_call_without_url_says_it_posts_to_the_public_url_first(env):
    responses.add(responses.POST, "https://gateway.example.com/voice/call", body="<Response/>", status=200)
    result = run({**env, "GATEWAY_PUBLIC_URL": "https://gateway.example.com"},
                 "simulate-call", "--to", "+14155550199", "--from", "+14155551234")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == "POST https://gateway.example.com/voice/call"
    assert [call.request.url for call in responses.calls] == ["https://gateway.example.com/voice/call"]


def test_simulate_call_with_the_wrong_token_shows_the_403(env, app):
    with serve(app) as base_url:
        result = run({**env, "TWILIO_AUTH_TOKEN": "another-token"}, "simulate-call", "--to", "+14155550199",
                     "--from", "+14155551234", "--url", f"{base_url}/voice/call")
    assert result.exit_code == 1
    assert "403: the signature did not verify" in result.stderr


def test_simulate_call_without_a_token(env):
    result = run({**env, "TWILIO_AUTH_TOKEN": ""}, "simulate-call", "--to", "+14155550199", "--from", "+1415")
    assert result.exit_code == 1
    assert "TWILIO_AUTH_TOKEN is not set" in result.stderr


def test_simulate_call_to_nothing_says_it_could_not_reach_it(env, app):
    with serve(app) as base_url:
        pass  # the port is free again: nothing listens there now
    result = run(env, "simulate-call", "--to", "+14155550199", "--from", "+14155551234", "--url", f"{base_url}/voice/call")
    assert result.exit_code == 1
    assert f"could not reach {base_url}/voice/call" in result.stderr


UNREACHABLE_SQLITE = "sqlite:////nonexistent-dir/sub/gateway.db"
DATABASE_COMMANDS = [
    ["db", "upgrade"],
    ["init-db"],
    ["destinations"],
    ["destinations", "add", "Sales", "--account", "acme", "--project", "frontdesk", "--route", "+14155550111"],
    ["destinations", "update", "Sales", "--account", "acme", "--project", "frontdesk", "--timeout", "30"],
    ["destinations", "remove", "Sales", "--account", "acme", "--project", "frontdesk"],
    ["api-key", "create", "--account", "acme", "--project", "frontdesk"],
    ["events", "list"],
    ["replay-spool"],
]


def failure(env, *args):
    """As an operator runs it: an uncaught exception would show as result.exception, not SystemExit."""
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"traceback: {result.exception!r}"
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=" ".join)
def test_a_database_that_cannot_be_opened_is_one_line(config_path, tmp_path, args):
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": UNREACHABLE_SQLITE,
           "GATEWAY_SPOOL_DIR": str(tmp_path / "spool")}
    stderr = failure(env, *args)
    assert "unable to open database file" in stderr
    assert "sqlalche.me" not in stderr


def test_an_unreachable_postgresql_is_named_without_its_password(config_path):
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": "postgresql://ops:s3cret-pw@127.0.0.1:1/gateway"}
    stderr = failure(env, "destinations")
    assert stderr.startswith("cannot use the database at postgresql+psycopg://ops:***@127.0.0.1:1/gateway: ")
    assert "s3cret-pw" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_database_url_that_is_not_one_says_how_to_write_it(config_path):
    env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": "gateway.db"}
    assert "GATEWAY_DATABASE_URL is not a database URL" in failure(env, "db", "upgrade")


def test_db_upgrade_of_a_locked_sqlite_file_is_one_line(config_path, tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        env = {"GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": f"sqlite:///{path}",
               "GATEWAY_DATABASE_BUSY_TIMEOUT": "0.2"}
        assert "database is locked" in failure(env, "db", "upgrade")
    finally:
        holder.close()


def test_deliver_once_exits_when_the_database_is_unreachable(config_path):
    """A cron or CI job runs `deliver --once`; it must end, not wait for the database like the worker."""
    env = {**os.environ, "GATEWAY_CONFIG": str(config_path), "GATEWAY_DATABASE_URL": UNREACHABLE_SQLITE}
    try:
        finished = subprocess.run(
            [sys.executable, "-c", "from gateway.cli import main; main()", "deliver", "--once"],
            cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("`gateway deliver --once` was still running after 30 s")
    assert finished.returncode == 1
    assert "cannot use the database at sqlite:////nonexistent-dir/sub/gateway.db: unable to open database file" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_deliver_once_prunes_events_older_than_gateway_events_retention_days(make_app, env):
    def deliver_once(days: str) -> None:
        subprocess.run(
            [sys.executable, "-c", "from gateway.cli import main; main()", "deliver", "--once"],
            cwd=Path(__file__).resolve().parent.parent, env={**os.environ, **env, "GATEWAY_EVENTS_RETENTION_DAYS": days},
            capture_output=True, text=True, timeout=60, check=True,
        )

    def journal() -> list[str]:
        with app.extensions["gateway"].engine.connect() as connection:
            return list(connection.execute(text("SELECT event_id FROM events ORDER BY seq")).scalars())

    app = make_app()
    call_with_fallback(app.test_client(), "CA" + "c7" * 16)
    deliver_once("30")
    ended = journal()[-1]
    with app.extensions["gateway"].engine.begin() as connection:  # three days pass
        connection.execute(text("UPDATE events SET created_at = :old"), {"old": datetime.now(timezone.utc) - timedelta(days=3)})
    call_with_fallback(app.test_client(), "CA" + "c8" * 16)
    deliver_once("30")
    assert len(journal()) == 10
    deliver_once("2")
    assert len(journal()) == 9 and ended not in journal(), "the old call's end is pruned (its history is kept for the publisher's rescan)"


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("GATEWAY_PUBLIC_URL", "gateway.example.com", "GATEWAY_PUBLIC_URL: must start with https:// (or http://)"),
        ("GATEWAY_TRUSTED_PROXIES", "one", "GATEWAY_TRUSTED_PROXIES: Input should be a valid integer"),
        ("GATEWAY_EVENTS_RETENTION_DAYS", "1", "GATEWAY_EVENTS_RETENTION_DAYS: must be 2 or more (days)"),
    ],
)
def test_a_bad_setting_names_the_variable_not_a_traceback(config_path, variable, value, message):
    stderr = failure({"GATEWAY_CONFIG": str(config_path), variable: value}, "numbers")
    assert stderr.startswith(message)
    assert len(stderr.strip().splitlines()) == 1


def test_the_app_with_a_bad_setting_stops_with_the_line_gunicorn_prints(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "gateway.example.com")
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "11")
    with pytest.raises(SystemExit) as stopped:
        create_app()
    assert stopped.value.code == (
        "GATEWAY_PUBLIC_URL: must start with https:// (or http://), like https://gateway.example.com\n"
        "GATEWAY_TRUSTED_PROXIES: Input should be less than or equal to 10"
    )


@pytest.mark.parametrize(
    "label,problem",
    [("x" * 101, "at most 100 characters, not 101"), ("night\x00shift", "no control characters"),
     ("night\tshift", "no control characters")],
    ids=["101-chars", "nul", "tab"],
)
def test_api_key_label_the_database_cannot_store_is_refused_first(env, label, problem):
    result = CliRunner().invoke(
        main, ["api-key", "create", "--account", "acme", "--project", "frontdesk", "--label", label], env=env
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--label'" in result.stderr and problem in result.stderr
    assert "hgw_" not in result.stdout


def test_api_key_label_of_100_characters_is_stored(env):
    result = run(env, "api-key", "create", "--account", "acme", "--project", "frontdesk", "--label", "é" * 100)
    assert result.exit_code == 0
    assert result.stdout.startswith("hgw_")
