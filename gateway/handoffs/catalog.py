"""A project's destinations: the config file's (read-only) and those made through the API or console.

Names are unique across both, compared NFKC-normalised and without regard to case. Every write goes through `Destination`'s validation and
`check_destination`, the same rules the config file obeys. Writes are staged in the caller's
session (gateway/storage/project_store.py holds the SQL); the caller commits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlmodel import Session

from gateway.storage import project_store
from gateway.config.file import ProjectConfig
from gateway.config.destinations import Destination, check_destination, name_key
from gateway.errors import GatewayError, invalid_input
from gateway.storage.models import StoredDestination

Source = Literal["config", "database"]


@dataclass(frozen=True)
class Entry:
    destination: Destination
    source: Source


def list_destinations(session: Session, project: ProjectConfig) -> list[Entry]:
    """The file's destinations first, in file order, then the stored ones by name."""
    entries = [Entry(d, "config") for d in project.destinations]
    rows = project_store.stored_destinations(session, project.key)
    entries.extend(Entry(Destination.model_validate(row.body), "database") for row in rows)
    return entries


def _configured(project: ProjectConfig, name: str) -> Destination | None:
    """The file's destination of that name, whatever its case or Unicode form."""
    key = name_key(name)
    return next((d for d in project.destinations if name_key(d.name) == key), None)


def shadowed(project: ProjectConfig, entry: Entry) -> bool:
    """A stored destination whose name the file has taken since: unused, as `find` answers the file's."""
    return entry.source == "database" and _configured(project, entry.destination.name) is not None


def find(session: Session, project: ProjectConfig, name: str) -> Entry | None:
    """By name without regard to case or Unicode form, as names are unique."""
    configured = _configured(project, name)
    if configured is not None:
        return Entry(configured, "config")
    row = project_store.stored_destination(session, project.key, name)
    return Entry(Destination.model_validate(row.body), "database") if row else None


def validate(body: dict, project: ProjectConfig) -> Destination:
    """Parse and check a destination from API/console input, or raise a 400 GatewayError."""
    try:
        destination = Destination.model_validate(body)
    except ValidationError as error:
        raise invalid_input(error, Destination, "invalid_destination") from None
    problem = check_destination(destination, sip_domain=project.sip_domain)
    if problem:
        field, message = problem
        raise GatewayError(400, "invalid_destination", f"{field}: {message}", field)
    return destination


def create(session: Session, project: ProjectConfig, body: dict) -> Destination:
    """Stage a new stored destination; the caller commits."""
    destination = validate(body, project)
    if (taken := find(session, project, destination.name)) is not None:
        raise _duplicate(taken.destination.name)
    if not project_store.add_destination(session, project.key, destination.name, destination.model_dump(mode="json")):
        raise _duplicate(destination.name)  # a concurrent create of the same name won the race
    return destination


def update(session: Session, project: ProjectConfig, name: str, changes: dict) -> Destination:
    """Stage a partial change (PATCH); renaming is allowed when the new name is free."""
    row = _writable(session, project, name)
    destination = validate({**row.body, **changes}, project)
    if name_key(destination.name) != row.name_key and (taken := find(session, project, destination.name)) is not None:
        raise _duplicate(taken.destination.name)
    project_store.change_destination(session, row, destination.name, destination.model_dump(mode="json"))
    return destination


def delete(session: Session, project: ProjectConfig, name: str, *, shadowed_too: bool = False) -> None:
    """Remove a stored destination; a name the config file holds is 409 `managed_by_config` (SPEC §5).

    `shadowed_too` (the operator's CLI) removes a stored destination whose name the file has taken
    since: the file's entry shadows it (`find` answers the file's), and removing the stored one is
    the only way to end the clash without taking the file entry out again.
    """
    stored = project_store.stored_destination(session, project.key, name) if shadowed_too else None
    project_store.remove_destination(session, stored or _writable(session, project, name))


def _writable(session: Session, project: ProjectConfig, name: str) -> StoredDestination:
    configured = _configured(project, name)
    if configured is not None:
        raise GatewayError(
            409,
            "managed_by_config",
            f"{configured.name!r} comes from the config file ({project.key}); change it there.",
        )
    row = project_store.stored_destination(session, project.key, name)
    if row is None:
        raise GatewayError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    return row


def _duplicate(name: str) -> GatewayError:
    return GatewayError(409, "duplicate_destination", f"A destination named {name!r} already exists.", "name")
