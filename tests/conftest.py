"""Fixtures: an app per test with its own settings, config and database (SQLite and PostgreSQL)."""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from gateway import create_app
from gateway.settings import Settings
from tests.openapi_conformance import Conformance
from tests.support import ACCOUNT_SID, AUTH_TOKEN, CONFIG_TOML

POSTGRES_ENV = "GATEWAY_TEST_DATABASE_URL"

#: The `twilio_api` fixture (Twilio REST and assistant mocks) for the SMS and chat tests, and the
#: console's `console_app` and signed-in `operator`.
pytest_plugins = ["tests.messaging_support", "tests.console_support"]


def _psycopg(url: str) -> str:
    return Settings(_env_file=None, database_url=url).database_url


@pytest.fixture(scope="session")
def postgres_database():
    """A database of this run's own, created here and dropped at the end, so runs never mix."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    admin_url = make_url(_psycopg(url))
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path, postgres_database):
    """Every test that touches storage runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    if postgres_database is None:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL runs are skipped")
    yield postgres_database
    engine = create_engine(postgres_database)
    SQLModel.metadata.create_all(engine)  # a test whose app never started made no tables
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG_TOML)
    return path


@pytest.fixture
def make_settings(database_url, config_path, tmp_path):
    """Settings for a test app; keyword arguments override single fields."""

    def build(**overrides) -> Settings:
        values = dict(
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            database_url=database_url,
            config_path=config_path,
            public_url=None,
            trusted_proxies=0,
            console_password_hash=None,
            secret_key="test-secret-key",
            spool_dir=tmp_path / "spool",
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def make_app(make_settings):
    """Build test apps; every /v1 response they give is checked against their /openapi.json."""
    apps = []

    def build(**overrides):
        app = create_app(make_settings(**overrides))
        app.testing = True
        conformance = Conformance()
        app.after_request(conformance.check)
        conformance.load(app.test_client().get("/openapi.json").get_json())
        apps.append((app, conformance))
        return app

    yield build
    problems = [problem for _app, conformance in apps for problem in conformance.problems]
    for app, _conformance in apps:
        app.extensions["gateway"].engine.dispose()
    assert not problems, "responses that /openapi.json does not describe:\n" + "\n".join(problems)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def session(app):
    """A session on the test app's database, for asserting on the rows users would see."""
    with Session(app.extensions["gateway"].engine, expire_on_commit=False) as session:
        yield session
