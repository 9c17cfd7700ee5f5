"""A project's destinations: the config file's (read-only) and those made through the API or console.

Names are unique across both, compared NFKC-normalised and without regard to case. Every write goes through `Destination`'s validation and
`check_destination`, the same rules the config file obeys.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from gateway.config import ProjectConfig
from gateway.destinations import Destination, check_destination, name_key
from gateway.models import StoredDestination, utcnow

Source = Literal["config", "database"]


@dataclass(frozen=True)
class Entry:
    destination: Destination
    source: Source


class CatalogError(Exception):
    """A refused write: `code` is the API error code, `field` the form field to show it beside."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _stored(session: Session, project: ProjectConfig, name: str) -> StoredDestination | None:
    return session.exec(
        select(StoredDestination).where(
            StoredDestination.project_key == project.key, StoredDestination.name_key == name_key(name)
        )
    ).first()


def _configured(project: ProjectConfig, name: str) -> Destination | None:
    """The file's destination of that name, whatever its case or Unicode form."""
    key = name_key(name)
    return next((d for d in project.destinations if name_key(d.name) == key), None)


def list_destinations(session: Session, project: ProjectConfig) -> list[Entry]:
    """The file's destinations first, in file order, then the stored ones by name."""
    entries = [Entry(d, "config") for d in project.destinations]
    rows = session.exec(
        select(StoredDestination)
        .where(StoredDestination.project_key == project.key)
        .order_by(StoredDestination.name)
    )
    entries.extend(Entry(Destination.model_validate(row.body), "database") for row in rows)
    return entries


def find(session: Session, project: ProjectConfig, name: str) -> Entry | None:
    """By name without regard to case or Unicode form, as names are unique."""
    configured = _configured(project, name)
    if configured is not None:
        return Entry(configured, "config")
    row = _stored(session, project, name)
    return Entry(Destination.model_validate(row.body), "database") if row else None


def validate(body: dict, project: ProjectConfig) -> Destination:
    """Parse and check a destination from API/console input, or raise a 400 CatalogError."""
    try:
        destination = Destination.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise CatalogError(400, "invalid_destination", f"{field}: {message}", field) from None
    problem = check_destination(destination, sip_domain=project.sip_domain)
    if problem:
        field, message = problem
        raise CatalogError(400, "invalid_destination", f"{field}: {message}", field)
    return destination


def create(session: Session, project: ProjectConfig, body: dict) -> Destination:
    destination = validate(body, project)
    if (taken := find(session, project, destination.name)) is not None:
        raise _duplicate(taken.destination.name)
    session.add(
        StoredDestination(
            project_key=project.key,
            name=destination.name,
            name_key=name_key(destination.name),
            body=destination.model_dump(mode="json"),
        )
    )
    _commit_unless_taken(session, destination.name)
    return destination


def update(session: Session, project: ProjectConfig, name: str, changes: dict) -> Destination:
    """Apply a partial change (PATCH); renaming is allowed when the new name is free."""
    row = _writable(session, project, name)
    destination = validate({**row.body, **changes}, project)
    renamed_to = name_key(destination.name)
    if renamed_to != row.name_key and (taken := find(session, project, destination.name)) is not None:
        raise _duplicate(taken.destination.name)
    row.name = destination.name
    row.name_key = renamed_to
    row.body = destination.model_dump(mode="json")
    row.updated_at = utcnow()
    session.add(row)
    _commit_unless_taken(session, destination.name)
    return destination


def delete(session: Session, project: ProjectConfig, name: str) -> None:
    session.delete(_writable(session, project, name))
    session.commit()


def _commit_unless_taken(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError:  # a concurrent write of the same name won the race
        session.rollback()
        raise _duplicate(name) from None


def _writable(session: Session, project: ProjectConfig, name: str) -> StoredDestination:
    configured = _configured(project, name)
    if configured is not None:
        raise CatalogError(
            409,
            "managed_by_config",
            f"{configured.name!r} comes from the config file ({project.key}); change it there.",
        )
    row = _stored(session, project, name)
    if row is None:
        raise CatalogError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    return row


def _duplicate(name: str) -> CatalogError:
    return CatalogError(409, "duplicate_destination", f"A destination named {name!r} already exists.", "name")
