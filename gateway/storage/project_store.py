"""Persistence for what operators keep per project in the database: destinations made through
the API, console or CLI, and API keys. No HTTP, no rules: gateway/handoffs/catalog.py decides what may be
written. Like every storage function, these stage; the caller commits (docs/architecture.md).
"""
from __future__ import annotations

from sqlmodel import Session, select

from gateway.config.destinations import name_key
from gateway.storage.models import ApiKey, StoredDestination, utcnow
from gateway.storage.store import insert_ignoring_conflict


def stored_destinations(session: Session, project_key: str) -> list[StoredDestination]:
    return list(
        session.exec(
            select(StoredDestination).where(StoredDestination.project_key == project_key).order_by(StoredDestination.name)
        )
    )


def stored_destination(session: Session, project_key: str, name: str) -> StoredDestination | None:
    return session.exec(
        select(StoredDestination).where(
            StoredDestination.project_key == project_key, StoredDestination.name_key == name_key(name)
        )
    ).first()


def add_destination(session: Session, project_key: str, name: str, body: dict) -> bool:
    """Stage a new row; False, staging nothing, when the (project, name) key is taken already
    (a concurrent write won the race: the unique key decides, nothing raises)."""
    now = utcnow()
    values = dict(project_key=project_key, name=name, name_key=name_key(name), body=body, created_at=now, updated_at=now)
    return bool(insert_ignoring_conflict(session, StoredDestination.__table__, values))


def change_destination(session: Session, row: StoredDestination, name: str, body: dict) -> None:
    row.name, row.name_key, row.body, row.updated_at = name, name_key(name), body, utcnow()
    session.add(row)


def remove_destination(session: Session, row: StoredDestination) -> None:
    session.delete(row)


def add_api_key(session: Session, project_key: str, key_sha256: str, label: str | None) -> None:
    session.add(ApiKey(project_key=project_key, key_sha256=key_sha256, label=label))


def api_key_by_hash(session: Session, key_sha256: str) -> ApiKey | None:
    return session.exec(select(ApiKey).where(ApiKey.key_sha256 == key_sha256)).first()
