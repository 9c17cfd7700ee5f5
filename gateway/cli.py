"""The `gateway` command for operators: check the config, create the database, make API keys."""
from __future__ import annotations

import secrets
import signal
import sys
import threading
import unicodedata
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Iterator

import click
import requests
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlmodel import Session
from twilio.request_validator import RequestValidator
from werkzeug.security import generate_password_hash

from gateway.events import deliver, deliveries
from gateway.handoffs import catalog
from gateway.storage import project_store, schema
from gateway.storage.models import API_KEY_LABEL_MAX
from gateway.voice import call_records
from gateway.config.file import ConfigError, GatewayConfig, ProjectConfig, hash_api_key, load_config
from gateway.errors import GatewayError
from gateway.settings import Settings, SettingsError, load_settings
from gateway.voice.spool import Spool
from gateway.storage.store import make_engine
from gateway.web.logcontext import configure_logging
from gateway.web.signature import simulated_call_form

DEFAULT_SIMULATE_URL = "http://127.0.0.1:8000/voice/call"
MIN_PASSWORD_LENGTH = 8


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


def _config(path: str | None) -> GatewayConfig:
    try:
        return load_config(Path(path) if path else _settings().config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


@click.group(help="Operate the Handoff Gateway. Settings come from the environment and .env (see Settings in the README).")
def main() -> None:
    pass


@main.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None) -> None:
    """Check the TOML config (default: $GATEWAY_CONFIG) and summarise what it routes."""
    click.echo(_config(path).summary())


@main.group("db")
def database() -> None:
    """Create and upgrade the database schema (Alembic migrations; see docs/migrations.md)."""


@database.command("upgrade")
def upgrade_database() -> None:
    """Create the database ($GATEWAY_DATABASE_URL) or bring it to this release's schema.

    A database made before migrations is adopted, its rows kept. Safe to run from several
    instances at once: one migrates, the others wait and find nothing left to do.
    """
    with _engine() as engine:
        try:
            revision = schema.upgrade(engine)
        except schema.UpgradeRefused as refused:
            raise click.ClickException(str(refused)) from refused
    click.echo(f"database at revision {revision}: {engine.url.render_as_string(hide_password=True)}")


@database.command("revision")
@click.option("-m", "--message", required=True, help="what the revision changes, e.g. 'add the events table'")
def new_revision(message: str) -> None:
    """For developers: write the next migration from what the models add (review it, then commit).

    Exits 1, writing nothing, when the models match the last revision.
    """
    try:
        written = schema.new_revision(message)
    except schema.NothingToRevise as unchanged:
        raise click.ClickException(str(unchanged)) from unchanged
    click.echo(f"wrote {written}")


@main.command("init-db")
def init_database() -> None:
    """The same as `gateway db upgrade`."""
    click.get_current_context().invoke(upgrade_database)


@main.group("api-key")
def api_key() -> None:
    """Manage API keys for the /v1 API."""


def _storable_label(_context: click.Context, _parameter: click.Parameter, label: str | None) -> str | None:
    """Checked here, as the column is VARCHAR and PostgreSQL takes no NUL: not a DataError later."""
    if label is None:
        return None
    if len(label) > API_KEY_LABEL_MAX:
        raise click.BadParameter(f"at most {API_KEY_LABEL_MAX} characters, not {len(label)}")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in label):
        raise click.BadParameter("use printable characters only (no control characters)")
    return label


@api_key.command("create")
@click.option("--account", required=True, help="account_id, prefixed (ws-acme) or slug (acme)")
@click.option("--project", required=True, help="project_id, prefixed (PROJECT-x) or slug (x)")
@click.option("--label", default=None, callback=_storable_label,
              help=f"a note to recognise the key by (up to {API_KEY_LABEL_MAX} characters)")
def create_api_key(account: str, project: str, label: str | None) -> None:
    """Make a key for one project, print it once, and store only its sha256."""
    project_config = _project(_config(None), account, project)
    key = "hgw_" + secrets.token_urlsafe(32)
    with _database() as session:
        project_store.add_api_key(session, project_config.key, hash_api_key(key), label)
        session.commit()
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


@main.group("destinations", invoke_without_command=True)
@click.option("--account", default=None, help="only this account (ws-acme or acme)")
@click.option("--project", default=None, help="only this project (PROJECT-x or x); needs --account")
@click.pass_context
def destinations(context: click.Context, account: str | None, project: str | None) -> None:
    """List handoff destinations, from the config file and the database; or add, update, remove."""
    if context.invoked_subcommand is not None:
        return
    config = _config(None)
    if project:
        projects = [_project(config, account, project)]
    elif account:
        projects = [p for p in config.projects if account in (p.account_id, p.account_slug)]
        if not projects:
            click.echo(f"no account {account} in {config.path}", err=True)
            sys.exit(1)
    else:
        projects = config.projects
    with _database() as session:
        for project_config in projects:
            click.echo(project_config.key)
            for entry in catalog.list_destinations(session, project_config):
                destination = entry.destination
                source = f"config {config.path}" if entry.source == "config" else "database"
                if catalog.shadowed(project_config, entry):
                    source += "; unused, the config file's takes this name: `destinations remove` removes this one"
                route = f" {destination.route}" if destination.route else ""
                click.echo(f"  {destination.name}  {destination.method}{route}  [{source}]")


def _destination_options(command, *, method_help: str):
    """The destination's fields as options (SPEC §2); each one left out is left as it is.

    `method_help`: add applies refer when --method is left out, update keeps the method.
    """
    options = [
        click.option("--account", required=True, help="the account (ws-acme or acme)"),
        click.option("--project", required=True, help="the project (PROJECT-x or x)"),
        click.option("--description", default=None),
        click.option("--method", type=click.Choice(["refer", "invite", "bye"]), default=None, help=method_help),
        click.option("--route", default=None, help="E.164 number, +1…;ext=…, sip:/sips: URI or bare extension"),
        click.option("--timeout", type=int, default=None, help="seconds to ring (5-600)"),
        click.option("--utterance", default=None, help="said to the caller before the transfer"),
        click.option("--reason", default=None, help="the default reason recorded for this destination"),
        click.option("--sip-header", "sip_headers", multiple=True, metavar="X-NAME=VALUE",
                     help="repeatable; values may hold $variables; replaces all headers when given"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _destination_body(sip_headers: tuple[str, ...], **fields) -> dict:
    body = {name: value for name, value in fields.items() if value is not None}
    if sip_headers:
        pairs = [header.partition("=") for header in sip_headers]
        malformed = [header for header, (_name, equals, _value) in zip(sip_headers, pairs) if not equals]
        if malformed:
            click.echo(f"--sip-header needs X-NAME=VALUE, not {malformed[0]!r}", err=True)
            sys.exit(2)
        body["sip_headers"] = {name.strip(): value for name, _equals, value in pairs}
    return body


@destinations.command("add")
@click.argument("name")
@partial(_destination_options, method_help="default: refer")
def add_destination(name: str, account: str, project: str, sip_headers: tuple[str, ...], **fields) -> None:
    """Add a destination NAME to a project (stored in the database, as the API and console do)."""
    project_config = _project(_config(None), account, project)
    with _database() as session, _catalog_errors():
        added = catalog.create(session, project_config, {"name": name, **_destination_body(sip_headers, **fields)})
        session.commit()
    click.echo(f"added {added.name} to {project_config.key}")


@destinations.command("update")
@click.argument("name")
@click.option("--new-name", default=None, help="rename it")
@partial(_destination_options, method_help="left as it is when not given")
def update_destination(
    name: str, new_name: str | None, account: str, project: str, sip_headers: tuple[str, ...], **fields
) -> None:
    """Change the given fields of the database destination NAME."""
    project_config = _project(_config(None), account, project)
    changes = _destination_body(sip_headers, name=new_name, **fields)
    with _database() as session, _catalog_errors():
        updated = catalog.update(session, project_config, name, changes)
        session.commit()
    click.echo(f"updated {updated.name} in {project_config.key}")


@destinations.command("remove")
@click.argument("name")
@click.option("--account", required=True, help="the account (ws-acme or acme)")
@click.option("--project", required=True, help="the project (PROJECT-x or x)")
def remove_destination(name: str, account: str, project: str) -> None:
    """Remove the database destination NAME (the config file's are changed in the file)."""
    project_config = _project(_config(None), account, project)
    with _database() as session, _catalog_errors():
        catalog.delete(session, project_config, name, shadowed_too=True)
        session.commit()
    click.echo(f"removed {name} from {project_config.key}")


def _project(config: GatewayConfig, account: str | None, project: str | None) -> ProjectConfig:
    if not (account and project):
        click.echo("give both --account and --project", err=True)
        sys.exit(2)
    chosen = config.find_project(account, project)
    if chosen is None:
        click.echo(f"no project {account}/{project} in {config.path}", err=True)
        sys.exit(1)
    return chosen


@contextmanager
def _database() -> Iterator[Session]:
    """A session on $GATEWAY_DATABASE_URL, its tables made if it is empty; exits 1 if it is behind."""
    with _engine() as engine:
        schema.check(engine)
        with Session(engine) as session:
            yield session


@contextmanager
def _engine() -> Iterator[Engine]:
    """An engine on $GATEWAY_DATABASE_URL for one command; a database it cannot use exits 1 with one line.

    An operator with a wrong URL, a database that is down or a lock held too long needs what to
    fix, not SQLAlchemy's traceback.
    """
    settings = _settings()
    with _database_errors(settings.database_url):
        engine = make_engine(settings.database_url, busy_timeout=settings.database_busy_timeout)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def _database_errors(database_url: str) -> Iterator[None]:
    try:
        yield
    except schema.DatabaseBehind as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    except ArgumentError:
        click.echo(
            "GATEWAY_DATABASE_URL is not a database URL; write it like "
            "postgresql://user:password@host/dbname or sqlite:///gateway.db",
            err=True,
        )
        sys.exit(1)
    except call_records.UNAVAILABLE as error:
        shown = make_url(database_url).render_as_string(hide_password=True)
        click.echo(f"cannot use the database at {shown}: {_first_line(error)}", err=True)
        sys.exit(1)


def _first_line(error: SQLAlchemyError) -> str:
    """The driver's own message when there is one, without SQLAlchemy's wrapping and links."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return (str(cause).strip() or type(cause).__name__).splitlines()[0]


@contextmanager
def _catalog_errors() -> Iterator[None]:
    """A refused change exits 1 with the same code and sentence the API would answer."""
    try:
        yield
    except GatewayError as error:
        click.echo(f"{error.code}: {error.message}", err=True)
        sys.exit(1)


@main.command("simulate-call")
@click.option("--to", "to_number", required=True, help="the called Twilio number, E.164 (+14155550199)")
@click.option("--from", "from_number", required=True, help="the caller's number, E.164")
@click.option(
    "--url",
    default=None,
    help=f"the gateway's /voice/call as Twilio would call it  [default: $GATEWAY_PUBLIC_URL/voice/call, or {DEFAULT_SIMULATE_URL}]",
)
def simulate_call(to_number: str, from_number: str, url: str | None) -> None:
    """Send a /voice/call signed with TWILIO_AUTH_TOKEN to a running gateway and print the TwiML.

    The gateway treats it as a real call: it records a conversation with a new CallSid.
    """
    settings = _settings()
    url = url or (f"{settings.public_url}/voice/call" if settings.public_url else DEFAULT_SIMULATE_URL)
    if settings.auth_token is None:
        click.echo("TWILIO_AUTH_TOKEN is not set: it is needed to sign the request", err=True)
        sys.exit(1)
    params = simulated_call_form(account_sid=settings.twilio_account_sid, from_number=from_number, to_number=to_number)
    signature = RequestValidator(settings.auth_token).compute_signature(url, params)
    click.echo(f"POST {url}", err=True)  # GATEWAY_PUBLIC_URL may name production: say so before the call
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
    with _engine() as engine:
        try:
            schema.check(engine)
            applied = call_records.replay(spool, engine, config=config)
        except call_records.UNAVAILABLE as error:
            click.echo(f"the database is still unavailable; nothing more replayed: {_first_line(error)}", err=True)
            sys.exit(1)
    if applied is None:
        click.echo("another gateway process is replaying the spool right now", err=True)
        sys.exit(1)
    left = len(spool.records())
    click.echo(f"replayed {applied} record(s) from {spool.path}; {left} left")


# --- Handoff events: the delivery worker and its deliveries (docs/events.md) ----------------


@main.command("deliver")
@click.option("--once", is_flag=True, help="one pass (publish, queue, prune old events, send what is due), then exit; exits 1 if the database cannot be used")
@click.option(
    "--first-retry",
    type=click.FloatRange(0.01, 3600),
    default=deliver.BACKOFF_BASE,
    show_default=True,
    help="seconds the first retry waits; each later one waits about twice as long",
)
def deliver_events(once: bool, first_retry: float) -> None:
    """Push handoff events to the config's event_webhooks until stopped (the Procfile's worker)."""
    settings, config = _settings(), _config(None)
    try:
        signing = deliver.signers(config)
    except deliver.SecretMissing as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    configure_logging(settings.auth_token)  # JSON lines, as the web processes write
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"delivering events to {len(signing)} subscription(s); stop with Ctrl-C or SIGTERM", err=True)
    with _engine() as engine:
        retention = timedelta(days=settings.events_retention_days)
        worker = deliver.Deliverer(engine, config, signing, backoff_base=first_retry, retention=retention)
        if once:  # a cron or CI job: a database it cannot use ends it with status 1
            schema.check(engine)
            worker.run_once()
            return
        while not stop.is_set():  # the database may be down at start: wait for it
            try:
                schema.check(engine)  # the web process migrates; the worker waits for head
                break
            except SQLAlchemyError as error:
                click.echo(f"database unavailable, retrying: {_first_line(error)}", err=True)
                stop.wait(deliver.DATABASE_RETRY_SECONDS)
        worker.run(stop)


@main.group("events")
def events_group() -> None:
    """See event deliveries, send one again, or make a signing secret."""


@events_group.command("list")
@click.option("--account", default=None, help="with --project: only this project (ws-acme or acme)")
@click.option("--project", default=None, help="with --account: only this project (PROJECT-x or x)")
@click.option("--status", type=click.Choice(deliveries.STATUSES), default=None, help="only deliveries in this state")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def list_deliveries(account: str | None, project: str | None, status: str | None, limit: int) -> None:
    """Recent deliveries, newest first: status, attempts, next retry and last error."""
    project_key = _project(_config(None), account, project).key if (account or project) else None
    with _database() as session:
        rows = deliveries.recent(session, project_key=project_key, status=status, limit=limit)
    for row in rows:
        when = f"next try {row.next_attempt_at:%Y-%m-%d %H:%M:%S}Z" if row.status == deliveries.PENDING else ""
        error = f"  last error: {row.last_error}" if row.last_error else ""
        click.echo(
            f"{row.id}  {row.status:<9} {row.event_type:<19} {row.event_id}  attempts {row.attempts}  "
            f"{row.url}  {when}{error}".rstrip()
        )
    if not rows:
        click.echo("no deliveries yet", err=True)


@events_group.command("redeliver")
@click.argument("delivery_id", type=int)
def redeliver_event(delivery_id: int) -> None:
    """Send a delivery again (same event id and body) as soon as `gateway deliver` is free."""
    with _database() as session:
        delivery = deliveries.redeliver(session, delivery_id)
    if delivery is None:
        click.echo(f"no delivery {delivery_id}; `gateway events list` shows their ids", err=True)
        sys.exit(1)
    click.echo(f"delivery {delivery_id} queued again")


@events_group.command("new-secret")
def new_secret() -> None:
    """Print a fresh signing secret (whsec_...) to put in the variable a subscription's secret_env names."""
    click.echo(deliver.new_secret())
