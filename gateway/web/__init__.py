"""The HTTP edge: thin blueprints per audience over the core modules."""
from __future__ import annotations

from flask import current_app, g
from sqlmodel import Session

from gateway.runtime import Gateway


def current_gateway() -> Gateway:
    return current_app.extensions["gateway"]


def db() -> Session:
    """One session per request, closed at teardown (see `close_db`); the tables exist by then."""
    if "db_session" not in g:
        gateway = current_gateway()
        gateway.ensure_schema()
        g.db_session = Session(gateway.engine, expire_on_commit=False)
    return g.db_session


def close_db(_error: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
