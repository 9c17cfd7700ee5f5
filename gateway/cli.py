"""The `gateway` command for operators: check the config, create the database, make API keys."""
from __future__ import annotations

import secrets
import sys
import uuid
from pathlib import Path

import click
import requests
from sqlmodel import Session
from twilio.request_validator import RequestValidator
from werkzeug.security import generate_password_hash

from gateway import catalog, failopen
from gateway.config import ConfigError, GatewayConfig, hash_api_key, load_config
from gateway.models import ApiKey
from gateway.settings import Settings
from gateway.spool import Spool
from gateway.store import init_db, make_engine

DEFAULT_SIMULATE_URL = "http://127.0.0.1:8000/voice/call"
MIN_PASSWORD_LENGTH = 8


def _settings() -> Settings:
    return Settings()


def _config(path: str | None) -> GatewayConfig:
    try:
        return load_config(Path(path) if path else _settings().config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


@click.group(help="Operate the Handoff Gateway. Settings come from the environment (see README).")
def main() -> None:
    pass


@main.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None) -> None:
    """Check the TOML config (default: $GATEWAY_CONFIG) and summarise what it routes."""
    click.echo(_config(path).summary())


@main.command("init-db")
def init_database() -> None:
    """Create the database tables ($GATEWAY_DATABASE_URL); existing tables are left alone."""
    settings = _settings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    engine.dispose()
    click.echo(f"database ready: {engine.url.render_as_string(hide_password=True)}")


@main.group("api-key")
def api_key() -> None:
    """Manage API keys for the /v1 API."""


@api_key.command("create")
@click.option("--account", required=True, help="account_id, prefixed (ws-acme) or slug (acme)")
@click.option("--project", required=True, help="project_id, prefixed (PROJECT-x) or slug (x)")
@click.option("--label", default=None, help="a note to recognise the key by")
def create_api_key(account: str, project: str, label: str | None) -> None:
    """Make a key for one project, print it once, and store only its sha256."""
    settings = _settings()
    project_config = _config(None).find_project(account, project)
    if project_config is None:
        click.echo(f"no project {account}/{project} in {settings.config_path}", err=True)
        sys.exit(1)
    key = "hgw_" + secrets.token_urlsafe(32)
    engine = make_engine(settings.database_url)
    init_db(engine)
    with Session(engine) as session:
        session.add(ApiKey(project_key=project_config.key, key_sha256=hash_api_key(key), label=label))
        session.commit()
    engine.dispose()
    click.echo(key)
    click.echo(f"Stored for {project_config.key}. This key is shown only once.", err=True)


@main.command("hash-password")
def hash_password() -> None:
    """Ask for the console password and print its hash for GATEWAY_CONSOLE_PASSWORD_HASH."""
    password = click.prompt("Console password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        click.echo(f"use at least {MIN_PASSWORD_LENGTH} characters", err=True)
        sys.exit(1)
    click.echo(generate_password_hash(password))
    click.echo(
        "Set it as GATEWAY_CONSOLE_PASSWORD_HASH in .env, or in single quotes in a shell "
        "(the hash holds $ signs).",
        err=True,
    )


@main.command("numbers")
@click.option("--config", "path", default=None, help="the TOML file (default: $GATEWAY_CONFIG)")
def list_numbers(path: str | None) -> None:
    """List every configured number, where its calls go, and its SMS sender."""
    for project in _config(path).projects:
        click.echo(project.key)
        for number in project.numbers:
            target = f"assistant {number.assistant_url}" if number.assistant_url else number.destination
            fallback = f"  then {', '.join(number.fallback)}" if number.fallback else ""
            sms = number.messaging_service_sid or "the number itself"
            click.echo(
                f"  {number.number}  -> {target}{fallback}  "
                f"(SMS from {sms}; 10DLC {number.a2p_10dlc or 'unknown'})"
            )


@main.command("destinations")
@click.option("--account", default=None, help="only this account (ws-acme or acme)")
@click.option("--project", default=None, help="only this project (PROJECT-x or x); needs --account")
def list_destinations(account: str | None, project: str | None) -> None:
    """List handoff destinations, from the config file and the database."""
    settings = _settings()
    config = _config(None)
    projects = config.projects
    if account or project:
        if not (account and project):
            click.echo("give both --account and --project", err=True)
            sys.exit(2)
        chosen = config.find_project(account, project)
        if chosen is None:
            click.echo(f"no project {account}/{project} in {config.path}", err=True)
            sys.exit(1)
        projects = [chosen]
    engine = make_engine(settings.database_url)
    init_db(engine)
    with Session(engine) as session:
        for project_config in projects:
            click.echo(project_config.key)
            for entry in catalog.list_destinations(session, project_config):
                destination = entry.destination
                source = f"config {config.path}" if entry.source == "config" else "database"
                route = f" {destination.route}" if destination.route else ""
                click.echo(f"  {destination.name}  {destination.method}{route}  [{source}]")
    engine.dispose()


@main.command("simulate-call")
@click.option("--to", "to_number", required=True, help="the called Twilio number, E.164 (+14155550199)")
@click.option("--from", "from_number", required=True, help="the caller's number, E.164")
@click.option(
    "--url",
    default=DEFAULT_SIMULATE_URL,
    show_default=True,
    help="the gateway's /voice/call as Twilio would call it (its GATEWAY_PUBLIC_URL, if set)",
)
def simulate_call(to_number: str, from_number: str, url: str) -> None:
    """Send a /voice/call signed with TWILIO_AUTH_TOKEN to a running gateway and print the TwiML.

    The gateway treats it as a real call: it records a conversation with a new CallSid.
    """
    settings = _settings()
    if settings.auth_token is None:
        click.echo("TWILIO_AUTH_TOKEN is not set: it is needed to sign the request", err=True)
        sys.exit(1)
    params = {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": settings.twilio_account_sid or "AC" + "0" * 32,
        "From": from_number,
        "To": to_number,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    signature = RequestValidator(settings.auth_token).compute_signature(url, params)
    try:
        response = requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)
    except requests.RequestException as error:
        click.echo(f"could not reach {url}: {error}", err=True)
        sys.exit(1)
    click.echo(f"{response.status_code} for CallSid {params['CallSid']}", err=True)
    click.echo(response.text.rstrip("\n"))
    if response.status_code != 200:
        if response.status_code == 403:
            click.echo(
                "403: the signature did not verify; use the same TWILIO_AUTH_TOKEN as the gateway "
                "and the URL it believes it is called at (its GATEWAY_PUBLIC_URL)",
                err=True,
            )
        sys.exit(1)


@main.command("replay-spool")
def replay_spool() -> None:
    """Write what the voice webhooks spooled during a database outage ($GATEWAY_SPOOL_DIR)."""
    settings = _settings()
    config = _config(None)
    spool = Spool(settings.spool_dir)
    engine = make_engine(settings.database_url, busy_timeout=settings.database_busy_timeout)
    try:
        init_db(engine)
        applied = failopen.replay(spool, engine, config=config)
    except failopen.UNAVAILABLE as error:
        click.echo(f"the database is still unavailable; nothing more replayed: {error}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()
    if applied is None:
        click.echo("another gateway process is replaying the spool right now", err=True)
        sys.exit(1)
    left = len(spool.records())
    click.echo(f"replayed {applied} record(s) from {spool.path}; {left} left")
