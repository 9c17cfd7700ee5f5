"""The `gateway` command for operators: check the config, create the database, make API keys."""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click
from sqlmodel import Session

from gateway import failopen
from gateway.config import ConfigError, GatewayConfig, hash_api_key, load_config
from gateway.models import ApiKey
from gateway.settings import Settings
from gateway.spool import Spool
from gateway.store import init_db, make_engine


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


@main.command("replay-spool")
def replay_spool() -> None:
    """Write what the voice webhooks spooled during a database outage ($GATEWAY_SPOOL_DIR)."""
    settings = _settings()
    spool = Spool(settings.spool_dir)
    engine = make_engine(settings.database_url, busy_timeout=settings.database_busy_timeout)
    try:
        init_db(engine)
        applied = failopen.replay(spool, engine)
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
